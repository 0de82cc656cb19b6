"""The expression layer: paths, templates, CEL, conditions, limits and the sandbox."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from legato.dsl import expr
from legato.dsl.model import AllOf, AnyOf, FieldCondition, Not, Operator
from legato.errors import ExpressionError

CONTEXT: dict[str, Any] = {
    "email": "ada@example.com",
    "customer": {"tier": "gold", "name": "Ada", "tags": ["vip", "beta"]},
    "items": [{"id": 1, "price": 5.5}, {"id": 2, "price": 20}],
    "threshold": 100,
    "active": True,
    "nothing": None,
    "order-id": "A-1",
    "first name": "Ada",
}


def make_scope(**extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "context": copy.deepcopy(CONTEXT),
        "input": {"amount": 150, "customer": {"tier": "gold"}, "list": [1, 2, 3], "s": "hello"},
        "steps": {"a": {"output": {"id": "x-1", "rows": [{"n": 1}]}, "status": "completed"}},
        "run": {"id": "run-1", "workflow": "wf"},
    }
    scope.update(extra)
    return scope


class RecordingScope(Mapping[str, Any]):
    """A lazy scope that records which names were looked up."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self.accessed: list[str] = []

    def __getitem__(self, key: str) -> Any:
        self.accessed.append(key)
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class LazySteps(Mapping[str, Any]):
    """A Mapping that is not a dict, like the engine's view of the steps."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


# ---- is_expression ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$", True),
        ("$.a", True),
        ("$[0]", True),
        ("{{ x }}", True),
        ("Hi {{ x }}!", True),
        ("$a", False),
        ("price in $", False),
        ("plain", False),
        ("{ x }", False),
        (42, False),
        (None, False),
        ({"a": "{{ x }}"}, False),
    ],
)
def test_is_expression(value: Any, expected: bool) -> None:
    assert expr.is_expression(value) is expected


# ---- read_path / write_path ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.email", "ada@example.com"),
        ("$.customer.tier", "gold"),
        ("$.customer.tags[1]", "beta"),
        ("$.items[0].price", 5.5),
        ("$['first name']", "Ada"),
        ('$["first name"]', "Ada"),
        ("$.order-id", "A-1"),
        ("$.missing", None),
        ("$.missing.deeper", None),
        ("$.email.deeper", None),
        ("$.items[9]", None),
        ("$.customer[0]", None),
        ("$.nothing", None),
        ("$.items[*].id", [1, 2]),
        ("$..id", [1, 2]),
        ("$.items[?(@.price > 10)].id", [2]),
        ("$.items[-1].id", 2),
        ("$.customer.tags[0:1]", ["vip"]),
        ("$.nope[*]", []),
    ],
)
def test_read_path(path: str, expected: Any) -> None:
    assert expr.read_path(CONTEXT, path) == expected


def test_read_path_root_is_the_document() -> None:
    assert expr.read_path(CONTEXT, "$") is CONTEXT


def test_read_path_fast_and_jsonpath_ng_agree() -> None:
    # `$.items[0].price` takes the hand path; the equivalent with spaces goes to jsonpath-ng.
    assert expr.read_path(CONTEXT, "$.items[0].price") == expr.read_path(
        CONTEXT, "$.items[ 0 ].price"
    )


@pytest.mark.parametrize(
    "path", ["$.a[", "$.items[?(@.x =~ 'a.*')]", "email", "", "$.a.`sub(/x/, y)`"]
)
def test_read_path_rejects_bad_paths(path: str) -> None:
    with pytest.raises(ExpressionError):
        expr.read_path(CONTEXT, path)


def test_write_path_creates_intermediate_objects() -> None:
    doc: dict[str, Any] = {}
    expr.write_path(doc, "$.employee.id", "E-1")
    expr.write_path(doc, "$.employee.name", "Ada")
    expr.write_path(doc, "$['a b'].c", 1)
    assert doc == {"employee": {"id": "E-1", "name": "Ada"}, "a b": {"c": 1}}


def test_write_path_replaces_null_intermediate() -> None:
    doc: dict[str, Any] = {"a": None}
    expr.write_path(doc, "$.a.b", 1)
    assert doc == {"a": {"b": 1}}


def test_write_path_into_existing_list() -> None:
    doc: dict[str, Any] = {"items": [{"id": 1}, {"id": 2}]}
    expr.write_path(doc, "$.items[1].id", 3)
    expr.write_path(doc, "$.items[0]", "x")
    assert doc == {"items": ["x", {"id": 3}]}


def test_write_path_root_replaces_contents() -> None:
    doc: dict[str, Any] = {"old": 1}
    same = doc
    expr.write_path(doc, "$", {"new": 2})
    assert same == {"new": 2}
    expr.write_path(doc, "$", doc)  # writing the document onto itself keeps it
    assert doc == {"new": 2}


@pytest.mark.parametrize(
    ("doc", "path", "value"),
    [
        ({"a": "text"}, "$.a.b", 1),
        ({"a": 5}, "$.a.b.c", 1),
        ({"a": [1]}, "$.a.b", 1),
        ({"a": {}}, "$.a[0]", 1),
        ({"a": [1]}, "$.a[3]", 1),
        ({}, "$.a[*].b", 1),
        ({}, "$..b", 1),
        ({}, "$.a[?(@.x > 1)]", 1),
        ({}, "$", [1, 2]),
        ({}, "a.b", 1),
    ],
)
def test_write_path_errors(doc: dict[str, Any], path: str, value: Any) -> None:
    with pytest.raises(ExpressionError):
        expr.write_path(doc, path, value)


# ---- resolve ------------------------------------------------------------------------------


def test_resolve_paths_and_typed_templates() -> None:
    scope = make_scope()
    template = {
        "email": "$.email",
        "amount": "{{ input.amount }}",
        "spaced": "   {{ input.list }}  ",
        "map": "{{ {'tier': input.customer.tier, 'n': 1} }}",
        "flag": "{{ input.amount > 100 }}",
        "null": "{{ null }}",
        "literal": "plain text",
        "number": 7,
        "nested": [{"x": "$.customer.tier"}, "{{ steps.a.output.id }}"],
    }
    assert expr.resolve(template, scope) == {
        "email": "ada@example.com",
        "amount": 150,
        "spaced": [1, 2, 3],
        "map": {"tier": "gold", "n": 1},
        "flag": True,
        "null": None,
        "literal": "plain text",
        "number": 7,
        "nested": [{"x": "gold"}, "x-1"],
    }


def test_resolve_splices_values_into_text() -> None:
    scope = make_scope()
    text = (
        "Dear {{ variables.customer.name }}: {{ input.amount }} {{ 1.5 }} {{ context.nothing }}|"
        "{{ true }} {{ false }} {{ input.list }} {{ input.customer }}"
    )
    assert expr.resolve(text, scope) == ('Dear Ada: 150 1.5 |true false [1,2,3] {"tier":"gold"}')


def test_resolve_closing_braces_inside_strings_and_maps() -> None:
    scope = make_scope()
    assert expr.resolve("{{ '}}' }}", scope) == "}}"
    assert expr.resolve('a {{ "x}}" + "y" }} b', scope) == "a x}}y b"
    assert expr.resolve("{{ {'a': {'b': 1}} }}", scope) == {"a": {"b": 1}}


def test_resolve_quotes_in_the_text_around_expressions() -> None:
    scope = make_scope()
    assert expr.resolve("It's {{ input.s }}, isn't it? {{ \"a'b\" }}", scope) == (
        "It's hello, isn't it? a'b"
    )


def test_resolve_never_evaluates_keys_and_never_mutates() -> None:
    scope = make_scope()
    template = {"{{ input.amount }}": "$.email", "$.x": ["{{ input.s }}"]}
    original = copy.deepcopy(template)
    out = expr.resolve(template, scope)
    assert out == {"{{ input.amount }}": "ada@example.com", "$.x": ["hello"]}
    assert template == original


def test_resolve_returns_copies_not_references_into_the_scope() -> None:
    scope = make_scope()
    for template in ("$.customer", "{{ variables.customer }}", "{{ context.customer }}"):
        value = expr.resolve(template, scope)
        assert value == CONTEXT["customer"]
        value["tier"] = "changed"
        assert scope["context"]["customer"]["tier"] == "gold"


@pytest.mark.parametrize("template", ["{{ x", "a {{ }} b", "{{ input.amount + }}", "{{ 'open }}"])
def test_resolve_bad_templates(template: str) -> None:
    with pytest.raises(ExpressionError):
        expr.resolve(template, make_scope())


# ---- evaluate -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("variables.email", "ada@example.com"),
        ("vars.customer.tier", "gold"),
        ("context.items[1].id", 2),
        ("input.customer.tier", "gold"),
        ("input.list[0]", 1),
        ("steps.a.output.id", "x-1"),
        ("steps.a.status", "completed"),
        ("run.id", "run-1"),
        ("input.missing", None),
        ("input.missing.deeper", None),
        ("input.list[7]", None),
        ("input.s.length", None),
        ("unknown_root.x", None),
        ("$.customer.tier", "gold"),
        ("  input.amount  ", 150),
        ("{{ input.amount }}", 150),
    ],
)
def test_evaluate_name_paths(text: str, expected: Any) -> None:
    assert expr.evaluate(text, make_scope()) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("input.amount * 2 + 1", 301),
        ("input.amount / 4", 37),
        ("double(input.amount) / 4.0", 37.5),
        ("input.s + ' world'", "hello world"),
        ("size(input.list)", 3),
        ("input.list.map(x, x * 10)", [10, 20, 30]),
        ("input.list.filter(x, x > 1)", [2, 3]),
        ("input.list.exists(x, x == 2)", True),
        ("input.list.all(x, x > 0)", True),
        ("input.list.exists_one(x, x > 2)", True),
        ("has(input.customer.tier)", True),
        ("has(input.customer.nope)", False),
        ("input.s.startsWith('he') && input.s.matches('l+o$')", True),
        ("input.amount > 100 ? 'big' : 'small'", "big"),
        ("'gold' in ['gold', 'silver']", True),
        ("{'a': [1, 2], 'b': null}", {"a": [1, 2], "b": None}),
        ("{1: 'one'}", {"1": "one"}),
        ("{true: 'yes'}", {"true": "yes"}),
        ("input.list + [4]", [1, 2, 3, 4]),
        ("timestamp('2024-01-31T09:30:00Z') + duration('90m')", "2024-01-31T11:00:00Z"),
        ("timestamp(0)", "1970-01-01T00:00:00Z"),
        ("duration('1h')", "3600s"),
        ("b'ab'", "YWI="),
        ("1u + 2u", 3),
        ("true", True),
        ("null", None),
        ("variables.threshold < input.amount", True),
    ],
)
def test_evaluate_cel(text: str, expected: Any) -> None:
    result = expr.evaluate(text, make_scope())
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "path",
    [
        "input.amount",
        "input.customer",
        "input.customer.tier",
        "input.list",
        "input.list[2]",
        "steps.a.output",
        "steps.a.output.rows[0].n",
        "variables.items[1].price",
        "vars.active",
        "context.customer.tags",
        "item",
        "item.sku",
        "index",
    ],
)
def test_fast_path_and_cel_agree(path: str) -> None:
    scope = make_scope(item={"sku": "S-1", "qty": 2}, index=3)
    fast = expr.evaluate(path, scope)
    cel = expr.evaluate(f"({path})", scope)  # the parentheses force CEL
    assert fast == cel
    assert type(fast) is type(cel)
    assert json.dumps(fast) == json.dumps(cel)


def test_fast_path_does_not_use_cel(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any) -> Any:
        raise AssertionError("CEL was used")

    monkeypatch.setattr(expr, "_run_cel", boom)
    assert expr.evaluate("steps.a.output.rows[0].n", make_scope()) == 1
    assert expr.evaluate("$.items[0].id", make_scope()) == 1
    with pytest.raises(AssertionError):
        expr.evaluate("input.amount + 1", make_scope())


def test_aliases_fall_back_to_context_or_nothing() -> None:
    assert expr.evaluate("variables.email", {"context": {"email": "x"}}) == "x"
    assert expr.evaluate("vars.email == 'x'", {"context": {"email": "x"}}) is True
    assert expr.evaluate("variables.email", {}) is None
    assert expr.evaluate("$.email", {}) is None
    # a scope that defines the alias itself wins
    assert expr.evaluate("vars.a", {"vars": {"a": 1}, "context": {"a": 2}}) == 1


def test_lazy_scope_only_touches_referenced_names() -> None:
    cases = {
        "input.amount > 100": ["input"],
        "input.customer.tier": ["input"],
        "$.email": ["context"],
        "input.list.exists(x, x > 2)": ["input"],  # the macro's `x` is not looked up
        "input.list.reduce(r, i, 0, r + i) > 1": ["input"],
        "steps.a.status == 'completed'": ["steps"],
        "variables.email": ["variables", "context"],
        "size(run.id) > 0": ["run"],
    }
    for text, names in cases.items():
        scope = RecordingScope(make_scope())
        expr.evaluate(text, scope)
        assert scope.accessed == names, text
    scope = RecordingScope(make_scope())
    expr.resolve({"a": "{{ input.s }}", "b": "Hi {{ run.id }}"}, scope)
    assert sorted(scope.accessed) == ["input", "run"]


def test_cel_converts_only_the_selected_keys() -> None:
    context = RecordingScope(copy.deepcopy(CONTEXT))  # records which keys are read
    scope = {"context": context}
    assert expr.evaluate("variables.customer.tier == 'gold' && !has(vars.missing)", scope)
    assert sorted(set(context.accessed)) == ["customer", "missing"]  # not the others
    # a bare use of the name needs the whole value
    assert expr.evaluate("size(variables) == 8 && variables.email.endsWith('.com')", scope)
    assert expr.evaluate("'email' in variables", scope) is True
    # selecting from something that is not a map still fails as CEL says
    with pytest.raises(ExpressionError, match="does not support field selection"):
        expr.evaluate("item.x == 1", {"item": "text"})


def test_cel_accepts_mappings_that_are_not_dicts() -> None:
    scope = make_scope(steps=LazySteps({"a": {"output": {"id": "x-1"}, "status": "done"}}))
    assert expr.evaluate("steps.a.output.id == 'x-1'", scope) is True
    assert expr.evaluate("steps.a.output.id", scope) == "x-1"
    assert expr.resolve("{{ steps }}", scope) == {"a": {"output": {"id": "x-1"}, "status": "done"}}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("input.amount / 0", "failed: divide by zero"),
        ("input.nope + 1", "no such key `nope`"),
        ("input.amount + 's'", "no operator `+` for (int, string)"),
        ("nobody.x + 1", "unknown name `nobody`"),
        ("int('x')", "failed: invalid value"),
        ("9223372036854775807 + 1", "integer overflow"),
        ("input.list[1 + 5] + 1", "index out of range"),
        ("{'a': 1 / 0}", "divide by zero"),
        ("type(1)", "not JSON"),
    ],
)
def test_evaluation_errors_name_expression_and_cause(text: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        expr.evaluate(text, make_scope())
    assert f"`{text}`" in info.value.message
    assert fragment in info.value.message
    assert info.value.details["expression"] == text


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("input.amount +", "column 14"),
        ("input.amount > > 1", "column 16"),
        ("a ==\n == b", "line 2, column 2"),
        ("input.amount #", "column 14"),
    ],
)
def test_syntax_errors_give_the_position(text: str, where: str) -> None:
    with pytest.raises(ExpressionError) as info:
        expr.evaluate(text, make_scope())
    assert "syntax error" in info.value.message
    assert where in info.value.message


def test_evaluate_rejects_non_strings_and_empty() -> None:
    with pytest.raises(ExpressionError):
        expr.evaluate(42, make_scope())  # type: ignore[arg-type]
    with pytest.raises(ExpressionError):
        expr.evaluate("   ", make_scope())


# ---- the sandbox --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "input.__class__",
        "input.__class__.__mro__",
        "{{ ''.__class__ }}",
        "{{ [].__class__.__base__.__subclasses__() }}",
        "input.__dict__",
        "run.__globals__['os']",
        "input.list.map(__x__, __x__)",
        "getattr(input, 'amount')",
        "open('/etc/passwd')",
        "eval('1')",
        "exec('x = 1')",
        "input.s.__len__()",
        "timestamp('now')",
        "timestamp('today')",
        "timestamp('tomorrow')",
        "timestamp(99999999999999999)",
        "type(input)",
    ],
)
def test_sandbox_escapes_raise(text: str) -> None:
    with pytest.raises(ExpressionError):
        expr.evaluate(text, make_scope())
    with pytest.raises(ExpressionError):
        expr.resolve(text if text.startswith("{{") else f"{{{{ {text} }}}}", make_scope())


def test_sandbox_applies_to_condition_fields_and_paths() -> None:
    with pytest.raises(ExpressionError):
        expr.test({"field": "input.__class__", "operator": "exists"}, make_scope())
    with pytest.raises(ExpressionError):
        expr.read_path({}, "$.__class__")
    assert expr.check_condition({"field": "input.__class__", "operator": "exists"})
    assert expr.check("{{ input.__class__ }}")


def test_single_underscore_names_are_fine() -> None:
    scope = make_scope(result={"__typename": "User", "_id": 7})
    assert expr.evaluate("result.__typename", scope) == "User"
    assert expr.evaluate("result._id + 1", scope) == 8


# ---- limits -------------------------------------------------------------------------------


def test_expression_length_limit() -> None:
    long_expr = " + ".join(["1"] * 2000)
    assert len(long_expr) > expr.MAX_EXPRESSION_LENGTH
    with pytest.raises(ExpressionError) as info:
        expr.evaluate(long_expr, {})
    assert "MAX_EXPRESSION_LENGTH" in info.value.message
    assert str(expr.MAX_EXPRESSION_LENGTH) in info.value.message
    assert expr.check("{{ " + long_expr + " }}")


def test_template_length_limit() -> None:
    template = "x" * expr.MAX_TEMPLATE_LENGTH + "{{ input.s }}"
    with pytest.raises(ExpressionError) as info:
        expr.resolve(template, make_scope())
    assert "MAX_TEMPLATE_LENGTH" in info.value.message
    assert expr.check(template)


def test_macro_nesting_limit() -> None:
    scope = make_scope()
    assert expr.evaluate("input.list.map(x, input.list.filter(y, y > x))", scope) == [
        [2, 3],
        [3],
        [],
    ]
    # chaining does not nest: each macro runs once over its list
    assert expr.evaluate("input.list.map(x, x + 1).filter(y, y > 2).map(z, z)", scope) == [3, 4]
    deep = "input.list.map(x, input.list.map(y, input.list.exists(z, z == x)))"
    with pytest.raises(ExpressionError) as info:
        expr.evaluate(deep, scope)
    assert "MAX_MACRO_DEPTH" in info.value.message
    assert "3 deep" in info.value.message
    assert expr.check_condition(f"size({deep}) > 0")
    inner_receiver = "input.list.all(x, input.list.map(y, y).filter(z, [1].exists(w, w == z)))"
    with pytest.raises(ExpressionError):
        expr.evaluate(inner_receiver, scope)


def test_nesting_limit() -> None:
    deep = "(" * 100 + "1" + ")" * 100
    with pytest.raises(ExpressionError) as info:
        expr.evaluate(deep, {})
    assert "MAX_NESTING" in info.value.message
    assert expr.evaluate("(" * 10 + "1" + ")" * 10, {}) == 1


def test_result_size_limit() -> None:
    big = "x" * (expr.MAX_RESULT_SIZE // 2 + 10)
    scope = make_scope(input={"big": big, "list": [big, big]})
    assert expr.evaluate("input.big", scope) == big
    for text in ("input.big + input.big", "input.list", "{{ input.list }}", "$.list"):
        if text == "$.list":
            scope = make_scope(context={"list": [big, big]})
        with pytest.raises(ExpressionError) as info:
            expr.evaluate(text, scope)
        assert "MAX_RESULT_SIZE" in info.value.message


def test_result_size_limit_stops_early_on_huge_results() -> None:
    scope = make_scope(input={"list": list(range(2000))})
    with pytest.raises(ExpressionError) as info:
        expr.evaluate("input.list.map(x, input.list)", scope)  # 4 million numbers
    assert "MAX_RESULT_SIZE" in info.value.message


def test_spliced_template_size_limit() -> None:
    big = "x" * (expr.MAX_RESULT_SIZE // 2 + 10)
    scope = make_scope(input={"big": big})
    with pytest.raises(ExpressionError) as info:
        expr.resolve("{{ input.big }} and {{ input.big }}", scope)
    assert "MAX_RESULT_SIZE" in info.value.message


# ---- conditions ---------------------------------------------------------------------------

OPERATOR_CASES: list[tuple[str, str, Any, bool]] = [
    ("email", "equals", "ada@example.com", True),
    ("threshold", "equals", 100.0, True),
    ("active", "equals", 1, False),
    ("customer.tags", "equals", ["vip", "beta"], True),
    ("email", "not_equals", "bob@example.com", True),
    ("missing", "not_equals", "x", True),
    ("email", "contains", "@example", True),
    ("customer.tags", "contains", "vip", True),
    ("customer", "contains", "tier", True),
    ("threshold", "contains", 1, False),
    ("email", "not_contains", "@other", True),
    ("customer.tags", "not_contains", "vip", False),
    ("email", "starts_with", "ada@", True),
    ("threshold", "starts_with", "1", False),
    ("email", "ends_with", ".com", True),
    ("threshold", "greater_than", 99, True),
    ("threshold", "greater_than", 100, False),
    ("threshold", "greater_than_or_equal", 100, True),
    ("threshold", "less_than", 100.5, True),
    ("threshold", "less_than_or_equal", 99, False),
    ("customer.tier", "greater_than", "alpha", True),
    ("customer.tier", "less_than", "silver", True),
    ("missing", "greater_than", 1, False),
    ("missing", "less_than", 1, False),
    ("email", "greater_than", 1, False),
    ("active", "greater_than", 0, False),
    ("customer.tier", "in", ["gold", "silver"], True),
    ("customer.tier", "in", "golden", True),
    ("customer.tier", "in", {"gold": 1}, True),
    ("threshold", "in", [100.0], True),
    ("customer.tier", "not_in", ["bronze"], True),
    ("customer.tier", "not_in", ["gold"], False),
    ("email", "exists", None, True),
    ("missing", "exists", None, False),
    ("nothing", "exists", None, False),
    ("missing", "not_exists", None, True),
    ("email", "not_exists", None, False),
    ("active", "is_true", None, True),
    ("email", "is_true", None, False),
    ("active", "is_false", None, False),
    ("missing", "is_false", None, False),
]


@pytest.mark.parametrize(("field", "operator", "value", "expected"), OPERATOR_CASES)
def test_every_operator(field: str, operator: str, value: Any, expected: bool) -> None:
    scope = make_scope()
    as_dict = {"field": field, "operator": operator, "value": value}
    assert expr.test(as_dict, scope) is expected
    model = FieldCondition(field=field, operator=Operator(operator), value=value)
    assert expr.test(model, scope) is expected


def test_operator_table_covers_every_operator() -> None:
    assert {case[1] for case in OPERATOR_CASES} == {op.value for op in Operator}


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("email", "ada@example.com"),
        ("customer.tier", "gold"),
        ("$.customer.tier", "gold"),
        ("items[1].id", 2),
        ("order-id", "A-1"),
        ("input.customer.tier", "gold"),
        ("steps.a.output.id", "x-1"),
        ("item.sku", "S-1"),
        ("order.sku", "S-1"),
        ("variables.email", "ada@example.com"),
        ("context.email", "ada@example.com"),
    ],
)
def test_field_paths(field: str, expected: Any) -> None:
    scope = make_scope(item={"sku": "S-1"}, order={"sku": "S-1"})
    assert expr.test({"field": field, "operator": "equals", "value": expected}, scope) is True


def test_condition_values_are_resolved_first() -> None:
    scope = make_scope()
    assert expr.test(
        {"field": "input.amount", "operator": "greater_than", "value": "$.threshold"}, scope
    )
    assert expr.test(
        {"field": "email", "operator": "ends_with", "value": "{{ 'example' + '.com' }}"}, scope
    )
    assert expr.test(
        {"field": "customer.tier", "operator": "in", "value": ["$.customer.tier"]}, scope
    )


def test_all_any_not_with_models_and_dicts() -> None:
    scope = make_scope()
    yes = FieldCondition(field="email", operator=Operator.CONTAINS, value="@")
    no = {"field": "threshold", "operator": "less_than", "value": 0}
    assert expr.test(AllOf(all=(yes, "input.amount > 100")), scope) is True
    assert (
        expr.test(
            AllOf(all=(yes, FieldCondition(field="missing", operator=Operator.EXISTS))), scope
        )
        is False
    )
    assert expr.test(AnyOf(any=("input.amount < 0", yes)), scope) is True
    assert expr.test(Not(not_=yes), scope) is False
    assert expr.test({"all": [yes, no]}, scope) is False
    assert expr.test({"any": [no, {"not": no}]}, scope) is True
    assert expr.test({"not": {"all": [yes, {"any": [no, "true"]}]}}, scope) is False
    assert expr.test({"all": []}, scope) is True
    assert expr.test({"any": []}, scope) is False


def test_any_and_all_short_circuit() -> None:
    scope = make_scope()
    assert expr.test({"any": ["true", "input.amount / 0 > 1"]}, scope) is True
    assert expr.test({"all": ["false", "input.amount / 0 > 1"]}, scope) is False


def test_cel_conditions() -> None:
    scope = make_scope()
    assert expr.test("input.amount > 100 && input.customer.tier == 'gold'", scope) is True
    assert expr.test("$.active", scope) is True
    assert expr.test("{{ vars.active }}", scope) is True
    assert expr.test(True, scope) is True


@pytest.mark.parametrize("condition", ["input.amount", "input.s", "input.missing", "$.email"])
def test_cel_condition_must_be_boolean(condition: str) -> None:
    with pytest.raises(ExpressionError) as info:
        expr.test(condition, make_scope())
    assert "must be true or false" in info.value.message


@pytest.mark.parametrize(
    "condition",
    [
        {"field": "email", "operator": "resembles", "value": "x"},
        {"field": "email", "op": "equals"},
        {"all": "not a list"},
        {"all": [], "any": []},
        {"something": 1},
        42,
        ["input.amount > 1"],
        {"field": "", "operator": "exists"},
        {"field": "a..b", "operator": "exists"},
    ],
)
def test_bad_conditions_raise(condition: Any) -> None:
    with pytest.raises(ExpressionError):
        expr.test(condition, make_scope())


# ---- check / check_condition ----------------------------------------------------------------


def test_check_accepts_valid_templates() -> None:
    template = {
        "a": "$.customer.tier",
        "b": "$.items[*].id",
        "c": "Hi {{ input.name }}, you owe {{ input.amount * 2 }}",
        "d": ["{{ steps.a.output }}", 1, None, {"e": "{{ item }}"}],
        "{{ not checked }}": "plain",
    }
    assert expr.check(template) == []


def test_check_reports_each_problem_with_location_and_text() -> None:
    problems = expr.check(
        {
            "a": "{{ input.amount + }}",
            "b": ["ok", "$.items["],
            "c": {"d": "Hi {{ name"},
            "e": "{{ }}",
            "f": "$.a[?(@.name =~ '.*')]",
        }
    )
    assert len(problems) == 5
    a, b, c, e, f = problems
    assert a.startswith("at a: ")
    assert "`input.amount +`" in a
    assert "syntax error" in a
    assert "Hint" in a
    assert b.startswith("at b[1]: ")
    assert "`$.items[`" in b
    assert "JSONPath" in b
    assert c.startswith("at c.d: ")
    assert "closing `}}`" in c
    assert e.startswith("at e: ")
    assert "empty" in e
    assert f.startswith("at f: ")
    assert "regular expression" in f


def test_check_condition() -> None:
    assert expr.check_condition("input.amount > 100") == []
    assert (
        expr.check_condition(
            AllOf(all=(FieldCondition(field="email", operator=Operator.EXISTS), "true"))
        )
        == []
    )
    assert (
        expr.check_condition(
            {"any": [{"field": "x", "operator": "in", "value": ["$.a", "{{ input.b }}"]}]}
        )
        == []
    )
    assert expr.check_condition({"not": {"field": "$.a.b", "operator": "exists"}}) == []

    (problem,) = expr.check_condition({"field": "email", "operator": "resembles"})
    assert "`resembles`" in problem
    assert "equals" in problem
    (problem,) = expr.check_condition({"field": "  ", "operator": "exists"})
    assert "field" in problem
    (problem,) = expr.check_condition("input.amount >")
    assert "syntax error" in problem
    (problem,) = expr.check_condition({"field": "x", "operator": "equals", "value": "{{ a + }}"})
    assert "syntax error" in problem
    assert len(expr.check_condition({"all": [{"field": "", "operator": "nope"}, "1 +"]})) == 3
    assert expr.check_condition(Not(not_="input.list.map(a, [1].map(b, [2].map(c, c)))"))
    assert expr.check_condition({"field": "x", "extra": 1})
    assert expr.check_condition(3.5)


@pytest.mark.parametrize("text", ["1.0 / 0.0", 'double("nan")', "[1.5, -1.0 / 0.0]"])
def test_a_result_that_is_not_a_finite_number_is_refused(text: str) -> None:
    # JSON has no NaN or infinity: a run's state could not keep it
    with pytest.raises(ExpressionError, match="not a JSON number"):
        expr.evaluate(text, {})


def test_finite_division_still_works() -> None:
    assert expr.evaluate("3.0 / 2.0", {}) == 1.5
