"""The sandboxed expression layer: value templates, CEL expressions, JSONPath, conditions.

Pure: no I/O, no clock, no randomness.  Used by the engine (to resolve step input, outputs,
guards and choices) and by the validator (:func:`check`, :func:`check_condition`).

A *scope* is a mapping of names to JSON data: ``context`` (the run's document, ``$`` in a
JSONPath), ``variables`` / ``vars`` (aliases of ``context``), ``input``, ``steps``, ``run``
and, where they apply, ``item``, ``index`` and ``result``.  The scope may be lazy: only the
names an expression references are looked up.

* **Paths** ``"$.a.b[0]"`` read the context; simple paths take a hand-written fast path,
  anything else (wildcards, filters, slices, ``..``) goes to jsonpath-ng.  A path that can
  match several values (a wildcard, a filter, ...) gives the list of matches.
* **Templates**: ``"{{ expr }}"`` alone gives the expression's value with its JSON type;
  ``"Dear {{ input.name }}"`` splices values into the text.
* **Expressions** are CEL (cel-python).  A plain name path such as ``input.customer.tier``
  or ``steps.a.output.items[0]`` is looked up directly (missing gives ``None``).
* **Conditions** are a CEL string or a structured ``{field, operator, value}`` / ``all`` /
  ``any`` / ``not`` condition.

Security: CEL cannot reach Python objects; the fast paths only index dicts and lists.  Names
of the form ``__name__`` are refused everywhere.  ``timestamp("now")`` (which would read the
clock) is refused.  Sizes are bounded, see the ``MAX_*`` constants.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import math
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import celpy
import celpy.celtypes as ct
import lark
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext.filter import Expression as _JPFilterExpression
from jsonpath_ng.ext.parser import parse as _jsonpath_parse
from jsonpath_ng.ext.string import Sub as _JPSub
from jsonpath_ng.jsonpath import Child as _JPChild
from jsonpath_ng.jsonpath import Fields as _JPFields
from jsonpath_ng.jsonpath import Index as _JPIndex
from jsonpath_ng.jsonpath import JSONPath as _JSONPath
from jsonpath_ng.jsonpath import Root as _JPRoot
from jsonpath_ng.jsonpath import This as _JPThis
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

from legato.dsl.model import AllOf, AnyOf, FieldCondition, Not, Operator
from legato.errors import ExpressionError

__all__ = [
    "MAX_EXPRESSION_LENGTH",
    "MAX_MACRO_DEPTH",
    "MAX_NESTING",
    "MAX_RESULT_SIZE",
    "MAX_TEMPLATE_LENGTH",
    "SCOPE_NAMES",
    "check",
    "check_condition",
    "evaluate",
    "is_expression",
    "read_path",
    "resolve",
    "test",
    "write_path",
]

# ---- limits --------------------------------------------------------------------------------

MAX_EXPRESSION_LENGTH: Final = 4096
"""Characters in one expression, condition or path."""
MAX_TEMPLATE_LENGTH: Final = 64 * 1024
"""Characters in one template string (text with ``{{ }}`` parts)."""
MAX_MACRO_DEPTH: Final = 2
"""How deeply CEL comprehension macros (``map``, ``filter``, ``all``, ...) may nest."""
MAX_NESTING: Final = 200
"""Depth of a CEL syntax tree (parentheses, long ``&&`` chains); keeps evaluation off the
Python recursion limit."""
MAX_RESULT_SIZE: Final = 1024 * 1024
"""Bytes of a result (or a spliced template string) when serialized as JSON."""

_CACHE_SIZE: Final = 1024

SCOPE_NAMES: Final = frozenset(
    {"context", "variables", "vars", "input", "steps", "run", "item", "index", "result"}
)
"""Names a field path may start with; any other first segment is a key of the context."""

_CONTEXT_ALIASES: Final = frozenset({"variables", "vars"})
_COMPREHENSIONS: Final = frozenset({"map", "filter", "all", "exists", "exists_one"})
# celpy extensions that also iterate: ``reduce(r, i, init, expr)`` binds two names.
_REDUCE: Final = "reduce"
_CEL_KEYWORDS: Final = frozenset(
    {
        "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
        "function", "if", "import", "let", "loop", "package", "namespace", "return", "var",
        "void", "while",
    }
)  # fmt: skip

_CEL_HINT: Final = (
    "CEL syntax: `input.amount > 100 && input.tier == 'gold'`, `!flag`, `x in ['a', 'b']`, "
    "`size(items) > 0`, `cond ? a : b`"
)
_PATH_HINT: Final = "write a JSONPath like `$.customer.tier`, `$.items[0].id` or `$.items[*].id`"


def _show(text: str, width: int = 120) -> str:
    """``text`` in backticks, shortened for a message."""
    one_line = text.replace("\n", " ")
    if len(one_line) > width:
        one_line = one_line[: width - 1] + "…"
    return f"`{one_line}`"


def _error(message: str, text: str, **details: Any) -> ExpressionError:
    return ExpressionError(message, details={"expression": text[:1000], **details})


def _dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _dunder_error(text: str, name: str) -> ExpressionError:
    return _error(
        f"expression {_show(text)} uses the name `{name}`: names of the form `__name__` "
        "are not allowed (expressions have no access to Python internals). Hint: rename the "
        "field so it does not both start and end with `__`",
        text,
    )


def _too_long(kind: str, text: str, limit: int, limit_name: str) -> ExpressionError:
    return _error(
        f"{kind} {_show(text, 60)} is {len(text)} characters long; the limit is {limit} "
        f"({limit_name}). Hint: move the logic into a step or split it up",
        text,
        limit=limit_name,
    )


# ---- public: recognising and resolving value templates --------------------------------------


def is_expression(value: Any) -> bool:
    """Whether ``value`` is a path (``$``, ``$.a``, ``$[0]``) or a template (has ``{{``)."""
    return isinstance(value, str) and (_is_path(value) or "{{" in value)


def _is_path(text: str) -> bool:
    return text == "$" or text.startswith(("$.", "$["))


def resolve(value: Any, scope: Mapping[str, Any]) -> Any:
    """Resolve a value template: paths and ``{{ }}`` strings anywhere in dicts and lists.

    Returns new containers; dict keys are never evaluated; other values are returned as is.
    """
    if isinstance(value, str):
        if _is_path(value):
            return _limit(read_path(_context(scope), value), value, copy=True)
        if "{{" in value:
            return _resolve_template(value, scope)
        return value
    if isinstance(value, Mapping):
        return {key: resolve(item, scope) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [resolve(item, scope) for item in value]
    return value


def _resolve_template(template: str, scope: Mapping[str, Any]) -> Any:
    parts = _split_template(template)
    exprs = [text for is_expr, text in parts if is_expr]
    if len(exprs) == 1 and all(text.isspace() for is_expr, text in parts if not is_expr):
        return evaluate(exprs[0], scope)
    chunks = [_to_text(evaluate(text, scope)) if is_expr else text for is_expr, text in parts]
    result = "".join(chunks)
    if _text_size(result) > MAX_RESULT_SIZE:
        raise _error(
            f"template {_show(template, 60)} produces {_text_size(result)} bytes of text; the "
            f"limit is {MAX_RESULT_SIZE} bytes (MAX_RESULT_SIZE). Hint: pass large data as a "
            "value (`{{ expr }}` alone) or a path instead of text",
            template,
            limit="MAX_RESULT_SIZE",
        )
    return result


def _to_text(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _split_template(template: str) -> tuple[tuple[bool, str], ...]:
    """Split ``"a {{ x }} b"`` into ``((False, "a "), (True, "x"), (False, " b"))``.

    A ``}}`` inside a quoted string or closing a map literal does not end the expression.
    Templates up to MAX_EXPRESSION_LENGTH characters are cached; longer ones are not.
    """
    if len(template) <= MAX_EXPRESSION_LENGTH:
        return _split_template_cached(template)
    return _split_template_text(template)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _split_template_cached(template: str) -> tuple[tuple[bool, str], ...]:
    return _split_template_text(template)


def _split_template_text(template: str) -> tuple[tuple[bool, str], ...]:
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise _too_long("template", template, MAX_TEMPLATE_LENGTH, "MAX_TEMPLATE_LENGTH")
    parts: list[tuple[bool, str]] = []
    pos, n = 0, len(template)
    while pos < n:
        start = template.find("{{", pos)
        if start < 0:
            parts.append((False, template[pos:]))
            break
        if start > pos:
            parts.append((False, template[pos:start]))
        end = _expression_end(template, start + 2)
        if end < 0:
            raise _error(
                f"template {_show(template)} has a `{{{{` at position {start} without a "
                "closing `}}`. Hint: close the expression with `}}` (and check its quotes)",
                template,
            )
        inner = template[start + 2 : end].strip()
        if not inner:
            raise _error(
                f"template {_show(template)} has an empty `{{{{ }}}}` at position {start}. "
                "Hint: put an expression inside, like `{{ input.name }}`",
                template,
            )
        parts.append((True, inner))
        pos = end + 2
    return tuple(parts)


def _expression_end(text: str, i: int) -> int:
    """Index of the ``}}`` closing the expression that starts at ``i``, or -1."""
    n = len(text)
    depth = 0
    quote = ""
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = ""
                continue
            i += 1
            continue
        if c in "'\"":
            quote = c * 3 if text.startswith(c * 3, i) else c
            i += len(quote)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return i if text.startswith("}}", i) else -1
            depth -= 1
        i += 1
    return -1


# ---- public: evaluating one expression ------------------------------------------------------


def evaluate(expr: str, scope: Mapping[str, Any]) -> Any:
    """Evaluate one expression (the text inside ``{{ }}``, or a condition string).

    A plain name path (``input.customer.tier``, ``items[0]``) is looked up directly (missing
    gives ``None``); a ``$`` path reads the context; anything else is CEL.  Returns plain JSON
    values.  Raises :class:`ExpressionError` for syntax errors, limits and evaluation errors.
    """
    if not isinstance(expr, str):
        raise _error(
            f"an expression must be a string, not {type(expr).__name__}: {expr!r:.80}", repr(expr)
        )
    if len(expr) > MAX_EXPRESSION_LENGTH:
        raise _too_long("expression", expr, MAX_EXPRESSION_LENGTH, "MAX_EXPRESSION_LENGTH")
    text = expr.strip()
    if not text:
        raise _error("an expression is empty. Hint: write one, like `input.name`", expr)
    if _is_path(text):
        return _limit(read_path(_context(scope), text), text, copy=True)
    if text.startswith("{{"):
        return _resolve_template(text, scope)
    segments = _name_path(text)
    if segments is not None:
        return _limit(_lookup(scope, segments), text, copy=True)
    return _run_cel(_compile(text), scope)


def _context(scope: Mapping[str, Any]) -> Any:
    found, value = _root(scope, "context")
    return value if found else {}


def _root(scope: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """Look ``name`` up in the scope (one access); ``variables``/``vars`` fall back to the
    context, and to ``{}`` when there is no context either."""
    try:
        return True, scope[name]
    except KeyError:
        pass
    if name in _CONTEXT_ALIASES:
        try:
            return True, scope["context"]
        except KeyError:
            return True, {}
    return False, None


# A name path: ``name(.name|[digits])*``; CEL keywords and ``$`` are left to the other paths.
_NAME_PATH_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*")
_NAME_PATH_PART_RE: Final = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")

Segment = str | int


@functools.lru_cache(maxsize=4 * _CACHE_SIZE)
def _name_path(text: str) -> tuple[Segment, ...] | None:
    """The segments of a plain name path, or None if ``text`` is something else."""
    if not _NAME_PATH_RE.fullmatch(text):
        return None
    segments: list[Segment] = []
    for m in _NAME_PATH_PART_RE.finditer(text):
        name, index = m.group(1), m.group(2)
        if name is not None:
            if name in _CEL_KEYWORDS:
                return None  # `true`, `null`, `a.in`: CEL's business
            if _dunder(name):
                raise _dunder_error(text, name)
            segments.append(name)
        else:
            segments.append(int(index))
    return tuple(segments)


def _lookup(scope: Mapping[str, Any], segments: Sequence[Segment]) -> Any:
    root = segments[0]
    assert isinstance(root, str)
    found, value = _root(scope, root)
    if not found:
        return None
    return _walk(value, segments[1:])


def _walk(value: Any, segments: Sequence[Segment]) -> Any:
    """Index dicts by key and lists by position; anything else (or missing) gives None."""
    for seg in segments:
        if isinstance(seg, str):
            if not isinstance(value, Mapping):
                return None
            value = value.get(seg)
        else:
            if not isinstance(value, list | tuple) or not -len(value) <= seg < len(value):
                return None
            value = value[seg]
        if value is None:
            return None
    return value


# ---- CEL ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Program:
    text: str
    runner: celpy.Runner
    # The scope names the expression reads, each with the keys it selects from it
    # (``variables.a.b`` selects ``a``), or None when the expression uses the whole value.
    names: tuple[tuple[str, frozenset[str] | None], ...]


_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2})"
)


def _cel_timestamp(value: Any) -> ct.TimestampType:
    """``timestamp()`` without pendulum's relative forms (``"now"`` reads the clock)."""
    if isinstance(value, ct.TimestampType):
        return value
    if isinstance(value, str):
        if not _RFC3339.fullmatch(value):
            raise ValueError(
                f"timestamp {str(value)!r} is not RFC 3339, like '2024-01-31T09:30:00Z'"
            )
        parsed = datetime.datetime.fromisoformat(value.upper())
        return ct.TimestampType(parsed)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            moment = datetime.datetime.fromtimestamp(int(value), datetime.UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"timestamp({int(value)}) is out of range") from None
        return ct.TimestampType(moment)
    raise TypeError(f"timestamp() takes a string, not {type(value).__name__}")


_FUNCTIONS: Final[dict[str, Callable[..., Any]]] = {"timestamp": _cel_timestamp}


@functools.cache
def _environment() -> celpy.Environment:
    limit = sys.getrecursionlimit()
    env = celpy.Environment()  # sets the recursion limit to 2500; never lower it
    sys.setrecursionlimit(max(limit, sys.getrecursionlimit()))
    # The protobuf well-known type names cost time on every evaluation; JSON needs none.
    env.annotations.clear()
    return env


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile(text: str) -> _Program:
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise _too_long("expression", text, MAX_EXPRESSION_LENGTH, "MAX_EXPRESSION_LENGTH")
    env = _environment()
    try:
        ast = env.compile(text)
    except CELParseError as exc:
        raise _syntax_error(text, exc) from None
    except RecursionError:
        raise _nesting_error(text) from None
    names = _analyse(text, ast)
    return _Program(text, env.program(ast, functions=_FUNCTIONS), names)


def _syntax_error(text: str, exc: CELParseError) -> ExpressionError:
    cause = exc.__context__
    what = "invalid syntax"
    if isinstance(cause, UnexpectedToken):
        token = cause.token
        if token.type == "$END":
            what = "unexpected end of expression"
        elif token.type == "RESERVED":
            what = f"`{token}` is a reserved word"
        else:
            what = f"unexpected `{token}`"
    elif isinstance(cause, UnexpectedCharacters):
        what = f"unexpected character `{cause.char}`"
    where = ""
    if exc.line is not None and exc.column is not None:
        where = (
            f" at line {exc.line}, column {exc.column}"
            if "\n" in text
            else (f" at column {exc.column}")
        )
    return _error(
        f"expression {_show(text)} has a syntax error{where}: {what}. Hint: {_CEL_HINT}",
        text,
        line=exc.line,
        column=exc.column,
    )


def _nesting_error(text: str) -> ExpressionError:
    return _error(
        f"expression {_show(text, 60)} is nested too deeply; the limit is a syntax tree "
        f"{MAX_NESTING} levels deep (MAX_NESTING). Hint: use fewer parentheses, or "
        "`x in [...]` instead of long `||` chains",
        text,
        limit="MAX_NESTING",
    )


def _bare_ident(tree: Any) -> str | None:
    """The identifier a macro binds (``x`` in ``items.map(x, ...)``), as celpy reads it."""
    if not isinstance(tree, lark.Tree):
        return None
    idents = list(tree.find_data("ident"))
    if len(idents) != 1:
        return None
    token = idents[0].children[0]
    return str(token) if isinstance(token, lark.Token) else None


def _selected_ident(tree: Any) -> str | None:
    """``name`` when ``tree`` is just the identifier ``name`` (``member > primary > ident``)."""
    for data in ("member", "primary", "ident"):
        if not isinstance(tree, lark.Tree) or tree.data != data or len(tree.children) != 1:
            return None
        tree = tree.children[0]
    return str(tree) if isinstance(tree, lark.Token) else None


def _analyse(text: str, ast: lark.Tree[Any]) -> tuple[tuple[str, frozenset[str] | None], ...]:
    """Check the parsed expression statically and return its free identifiers, each with
    the keys selected from it (None: the whole value is used).

    Refuses ``__name__`` identifiers, comprehension macros nested more than
    ``MAX_MACRO_DEPTH`` deep and syntax trees deeper than ``MAX_NESTING``.
    """
    free: dict[str, set[str] | None] = {}
    # (node, names bound by enclosing macros, macro depth, tree depth)
    stack: list[tuple[Any, frozenset[str], int, int]] = [(ast, frozenset(), 0, 1)]
    while stack:
        node, bound, macros, depth = stack.pop()
        if isinstance(node, lark.Token):
            if node.type == "IDENT" and _dunder(str(node)):
                raise _dunder_error(text, str(node))
            continue
        if not isinstance(node, lark.Tree):
            continue
        if depth > MAX_NESTING:
            raise _nesting_error(text)
        data = node.data
        if data in ("ident", "dot_ident"):
            name = str(node.children[0])
            if _dunder(name):
                raise _dunder_error(text, name)
            if name not in bound:
                free[name] = None
            continue
        if data == "member_dot":
            target, prop = node.children
            selected = _selected_ident(target)
            if selected is not None and selected not in bound:
                for ident in (selected, str(prop)):
                    if _dunder(ident):
                        raise _dunder_error(text, ident)
                keys = free.setdefault(selected, set())
                if keys is not None:
                    keys.add(str(prop))
                continue
        if data == "member_dot_arg" and len(node.children) == 3:
            receiver, method, args = node.children
            method_name = str(method)
            arg_list = list(args.children) if isinstance(args, lark.Tree) else []
            if method_name in _COMPREHENSIONS or method_name == _REDUCE:
                level = macros + 1
                if level > MAX_MACRO_DEPTH:
                    raise _error(
                        f"expression {_show(text)} nests comprehension macros (`map`, "
                        f"`filter`, `all`, `exists`, `exists_one`) {level} deep; the limit "
                        f"is {MAX_MACRO_DEPTH} (MAX_MACRO_DEPTH). Hint: compute the inner "
                        "part in an earlier step",
                        text,
                        limit="MAX_MACRO_DEPTH",
                    )
                stack.append((receiver, bound, macros, depth + 1))
                stack.append((method, bound, macros, depth + 1))
                if method_name == _REDUCE and len(arg_list) == 4:
                    names = {_bare_ident(arg_list[0]), _bare_ident(arg_list[1])}
                    stack.append((arg_list[2], bound, macros, depth + 2))
                    inner = bound | {n for n in names if n}
                    stack.append((arg_list[3], inner, level, depth + 2))
                    for var in arg_list[:2]:
                        stack.append((var, inner, level, depth + 2))
                elif len(arg_list) == 2:
                    var = _bare_ident(arg_list[0])
                    inner = bound | {var} if var else bound
                    stack.append((arg_list[0], inner, level, depth + 2))
                    stack.append((arg_list[1], inner, level, depth + 2))
                else:
                    for arg in arg_list:
                        stack.append((arg, bound, level, depth + 2))
                continue
        for child in node.children:
            stack.append((child, bound, macros, depth + 1))
    return tuple((name, None if keys is None else frozenset(keys)) for name, keys in free.items())


def _run_cel(program: _Program, scope: Mapping[str, Any]) -> Any:
    text = program.text
    activation: dict[str, Any] = {}
    for name, keys in program.names:
        found, value = _root(scope, name)
        if not found:
            continue
        if keys is not None and isinstance(value, Mapping):
            # Only `name.key` selections: convert just those keys, not the whole document.
            value = {key: value[key] for key in keys if key in value}
        activation[name] = _to_cel(value, name, text)
    try:
        result = program.runner.evaluate(activation)
    except CELEvalError as exc:
        raise _error(
            f"expression {_show(text)} failed: {_describe(exc)}", text, cause=_describe(exc)
        ) from None
    except RecursionError:
        raise _nesting_error(text) from None
    except Exception as exc:  # celpy lets some Python errors through
        cause = _clean(f"{type(exc).__name__}: {exc}")
        raise _error(f"expression {_show(text)} failed: {cause}", text, cause=cause) from None
    return _from_cel(result, text)


def _to_cel(value: Any, name: str, text: str) -> Any:
    try:
        return json_to_cel(value)
    except (ValueError, TypeError):
        pass  # a Mapping that is not a dict (a lazy view), or not JSON at all
    except RecursionError:
        raise _nesting_error(text) from None
    try:
        return json_to_cel(_plain(value))
    except (ValueError, TypeError) as exc:
        raise _error(
            f"expression {_show(text)} cannot use `{name}`: it holds data that is not JSON ({exc})",
            text,
        ) from None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


_OPERATORS: Final = {
    "addition_add": "+", "addition_sub": "-", "multiplication_mul": "*",
    "multiplication_div": "/", "multiplication_mod": "%", "relation_lt": "<",
    "relation_le": "<=", "relation_gt": ">", "relation_ge": ">=", "relation_eq": "==",
    "relation_ne": "!=", "relation_in": "in", "unary_not": "!", "unary_neg": "-",
}  # fmt: skip
_CEL_TYPE_NAMES: Final = {
    "BoolType": "bool", "IntType": "int", "UintType": "uint", "DoubleType": "double",
    "StringType": "string", "BytesType": "bytes", "ListType": "list", "MapType": "map",
    "TimestampType": "timestamp", "DurationType": "duration", "NoneType": "null",
    "TypeType": "type", "MessageType": "map",
}  # fmt: skip


def _clean(message: str) -> str:
    """Make a celpy message readable: no activation dump, CEL type names, bounded length."""
    message = re.sub(r"\s*\(in activation .*", "", message, flags=re.S)
    message = re.sub(
        r"<class '(?:celpy\.celtypes\.)?(\w+)'>",
        lambda m: _CEL_TYPE_NAMES.get(m.group(1), m.group(1)),
        message,
    )
    message = re.sub(r"\b(?:Int|Uint|Double|Bool)Type\(([^()]*)\)", r"\1", message)
    message = re.sub(r"\bStringType\(('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\)", r"\1", message)
    if len(message) > 300:
        message = message[:299] + "…"
    return message


def _describe(exc: CELEvalError) -> str:
    """A short cause for a CEL evaluation error."""
    args = exc.args
    head = str(args[0]) if args else "evaluation error"
    kind = args[1] if len(args) > 1 else None
    extra = args[2] if len(args) > 2 else None
    if kind is ZeroDivisionError:
        return "divide by zero"
    m = re.match(r"undeclared reference to '?(\w+)'?", head)
    if m:
        return f"unknown name `{m.group(1)}`"
    m = re.match(r"no such member in mapping: '(.*)'$", head)
    if m:
        return f"no such key `{m.group(1)}`"
    if head == "no such key" and extra:
        return _clean(f"no such key `{extra[0]}`")
    if kind is IndexError:
        return "index out of range"
    m = re.match(
        r"found no matching overload for Token\('RULE', '(\w+)'\) applied to '(.*)'$", head
    )
    if m:
        op = _OPERATORS.get(m.group(1), m.group(1))
        return _clean(f"no operator `{op}` for {m.group(2)}")
    if head == "return error for overflow":
        if extra == ("overflow",):
            return "integer overflow"
        return _clean(f"invalid value: {extra[0] if extra else head}")
    if head == "no such overload" and extra:
        return _clean(f"no such overload: {extra[0]}")
    return _clean(head)


def _from_cel(value: Any, text: str) -> Any:
    """Convert a CEL result to plain JSON values, refusing results over MAX_RESULT_SIZE."""
    budget = [MAX_RESULT_SIZE]
    try:
        out = _convert(value, text, budget)
    except RecursionError:
        raise _nesting_error(text) from None
    return _limit(out, text, copy=False)


def _charge(budget: list[int], cost: int, text: str) -> None:
    budget[0] -= cost
    if budget[0] < 0:
        raise _result_too_large(text, None)


def _convert(value: Any, text: str, budget: list[int]) -> Any:
    if value is None:
        _charge(budget, 4, text)
        return None
    if isinstance(value, CELEvalError):
        cause = _describe(value)
        raise _error(f"expression {_show(text)} failed: {cause}", text, cause=cause)
    if isinstance(value, ct.BoolType | bool):
        _charge(budget, 4, text)
        return bool(value)
    if isinstance(value, int):
        _charge(budget, 1, text)
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):  # JSON has no NaN or infinity: it could not be kept
            raise _error(
                f"expression {_show(text)} gave {float(value)}, which is not a JSON number; "
                "guard the division or the conversion so it gives a finite number",
                text,
                cause="not a finite number",
            )
        _charge(budget, 1, text)
        return float(value)
    if isinstance(value, str):
        _charge(budget, len(value) + 2, text)
        return str(value)
    if isinstance(value, ct.TimestampType | ct.DurationType):
        out = str(value)
        _charge(budget, len(out) + 2, text)
        return out
    if isinstance(value, bytes):
        encoded = base64.b64encode(value).decode("ascii")
        _charge(budget, len(encoded) + 2, text)
        return encoded
    if isinstance(value, Mapping):
        _charge(budget, 2, text)
        result: dict[str, Any] = {}
        for key, item in value.items():
            result[_map_key(key, text)] = _convert(item, text, budget)
            _charge(budget, 2, text)
        return result
    if isinstance(value, list | tuple):
        _charge(budget, 2, text)
        items = []
        for item in value:
            items.append(_convert(item, text, budget))
            _charge(budget, 1, text)
        return items
    kind = _CEL_TYPE_NAMES.get(getattr(type(value), "__name__", ""), type(value).__name__)
    if isinstance(value, type):
        kind = "type"
    raise _error(
        f"expression {_show(text)} gives a value of CEL type `{kind}`, which is not JSON. "
        "Hint: convert it, for example with string(...)",
        text,
    )


def _map_key(key: Any, text: str) -> str:
    if isinstance(key, ct.BoolType | bool):
        return "true" if key else "false"
    if isinstance(key, str | int):
        return str(key)
    raise _error(f"expression {_show(text)} gives a map with a key that is not JSON", text)


# ---- result size ----------------------------------------------------------------------------


def _text_size(text: str) -> int:
    if len(text) * 4 <= MAX_RESULT_SIZE:
        return len(text)  # a lower bound that is enough to decide
    return len(text.encode("utf-8", "surrogatepass"))


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _result_too_large(text: str, size: int | None) -> ExpressionError:
    got = f"{size} bytes" if size is not None else "more than that"
    return _error(
        f"expression {_show(text, 60)} gives a result of {got} when serialized; the limit "
        f"is {MAX_RESULT_SIZE} bytes (MAX_RESULT_SIZE). Hint: select the part you need, or "
        "keep large data out of the run's context",
        text,
        limit="MAX_RESULT_SIZE",
    )


def _limit(value: Any, text: str, *, copy: bool) -> Any:
    """Refuse results over MAX_RESULT_SIZE; with ``copy`` return containers as new ones (so
    the caller never holds a reference into the scope)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        size = _text_size(value) + 2
        if size > MAX_RESULT_SIZE:
            raise _result_too_large(text, size)
        return value
    try:
        dumped = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise _error(f"expression {_show(text)} gives data that is not JSON: {exc}", text) from None
    except RecursionError:
        raise _nesting_error(text) from None
    size = _text_size(dumped)
    if size > MAX_RESULT_SIZE:
        raise _result_too_large(text, size)
    return json.loads(dumped) if copy else value


# ---- JSONPath -------------------------------------------------------------------------------

_SIMPLE_PATH_RE: Final = re.compile(
    r"\$(?:\.[A-Za-z_][A-Za-z0-9_\-]*|\[\d+\]|\['[^'\\\]]*'\]|\[\"[^\"\\\]]*\"\])*"
)
_SIMPLE_PART_RE: Final = re.compile(
    r"\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(\d+)\]|\['([^'\\\]]*)'\]|\[\"([^\"\\\]]*)\"\]"
)


@functools.lru_cache(maxsize=4 * _CACHE_SIZE)
def _simple_path(path: str) -> tuple[Segment, ...] | None:
    """The segments of ``$.a.b[0]['c d']``, or None for anything more complex."""
    if not _SIMPLE_PATH_RE.fullmatch(path):
        return None
    segments: list[Segment] = []
    for m in _SIMPLE_PART_RE.finditer(path, 1):
        name, index, single, double = m.groups()
        if index is not None:
            segments.append(int(index))
        else:
            segments.append(next(s for s in (name, single, double) if s is not None))
    return tuple(segments)


@dataclass(frozen=True, slots=True)
class _ParsedPath:
    path: _JSONPath
    definite: bool  # matches at most one value


_DEFINITE_NODES: Final = (_JPRoot, _JPThis, _JPChild)


def _path_nodes(node: _JSONPath) -> Iterator[_JSONPath]:
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, _JSONPath):
            yield item
            stack.extend(vars(item).values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse_path(path: str) -> _ParsedPath:
    if len(path) > MAX_EXPRESSION_LENGTH:
        raise _too_long("path", path, MAX_EXPRESSION_LENGTH, "MAX_EXPRESSION_LENGTH")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parsed = _jsonpath_parse(path)
    except (JsonPathParserError, JsonPathLexerError, ValueError, TypeError) as exc:
        raise _error(
            f"path {_show(path)} is not valid JSONPath: {_clean(str(exc))}. Hint: {_PATH_HINT}",
            path,
        ) from None
    except RecursionError:
        raise _nesting_error(path) from None
    for warning in caught:
        if issubclass(warning.category, DeprecationWarning):
            raise _error(
                f"path {_show(path)} uses deprecated JSONPath syntax: {warning.message}. "
                f"Hint: {_PATH_HINT}",
                path,
            )
    definite = True
    for node in _path_nodes(parsed):
        if isinstance(node, _JPSub) or (
            isinstance(node, _JPFilterExpression) and getattr(node, "op", None) == "=~"
        ):
            raise _error(
                f"path {_show(path)} uses a regular expression (`=~` or `sub()`), which is not "
                "allowed in paths (its run time is unbounded). Hint: use a CEL expression "
                "with `matches()`, for example `{{ items.filter(i, i.name.matches('^a')) }}`",
                path,
            )
        if isinstance(node, _DEFINITE_NODES):
            continue
        if isinstance(node, _JPFields) and len(node.fields) == 1 and node.fields[0] != "*":
            continue
        if isinstance(node, _JPIndex) and len(node.indices) == 1:
            continue
        definite = False
    return _ParsedPath(parsed, definite)


def _path_segments_or_parse(path: str) -> tuple[Segment, ...] | _ParsedPath:
    if not isinstance(path, str) or not path.startswith("$"):
        raise _error(
            f"{_show(str(path))} is not a path: a path starts with `$`. Hint: {_PATH_HINT}",
            str(path),
        )
    if len(path) > MAX_EXPRESSION_LENGTH:
        raise _too_long("path", path, MAX_EXPRESSION_LENGTH, "MAX_EXPRESSION_LENGTH")
    segments = _simple_path(path)
    if segments is not None:
        for seg in segments:
            if isinstance(seg, str) and _dunder(seg):
                raise _dunder_error(path, seg)
        return segments
    return _parse_path(path)


def read_path(doc: Any, path: str) -> Any:
    """Read a JSONPath from ``doc``: the value (``None`` if missing) for a path that names one
    place, the list of matches for one with wildcards, filters, slices or ``..``.

    The value is not copied.
    """
    parsed = _path_segments_or_parse(path)
    if not isinstance(parsed, _ParsedPath):
        return _walk(doc, parsed)
    try:
        matches = parsed.path.find(doc)
    except RecursionError:
        raise _nesting_error(path) from None
    except Exception as exc:  # jsonpath-ng arithmetic and filters on odd data
        raise _error(f"path {_show(path)} failed: {_clean(str(exc))}", path) from None
    if parsed.definite:
        return matches[0].value if matches else None
    return [match.value for match in matches]


def write_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Write ``value`` at ``path`` in ``doc``, creating intermediate objects.

    ``$`` with a dict replaces the document's contents.  Only simple paths
    (``$.a.b``, ``$.items[0]``, ``$['a b']``) can be written; list positions must exist.
    """
    parsed = _path_segments_or_parse(path)
    if isinstance(parsed, _ParsedPath):
        raise _error(
            f"cannot write to {_show(path)}: only simple paths like `$.a.b` or `$.items[0]` "
            "can be written, not wildcards, filters, slices or `..`",
            path,
        )
    if not isinstance(doc, dict):
        raise _error(f"cannot write to {_show(path)}: the document is not an object", path)
    if not parsed:
        if not isinstance(value, Mapping):
            raise _error(
                f"cannot write {type(value).__name__} to `$`: the whole document must be an "
                "object. Hint: write to a field instead, like `$.result`",
                path,
            )
        replacement = dict(value)
        doc.clear()
        doc.update(replacement)
        return
    target: Any = doc
    for i, seg in enumerate(parsed):
        last = i == len(parsed) - 1
        where = _format_segments(parsed[:i])
        if isinstance(seg, str):
            if not isinstance(target, dict):
                raise _error(
                    f"cannot write to {_show(path)}: {_show(where)} is "
                    f"{_json_kind(target)}, not an object",
                    path,
                )
            if last:
                target[seg] = value
                return
            nxt = target.get(seg)
            if nxt is None:
                nxt = target[seg] = {}
            target = nxt
        else:
            if not isinstance(target, list):
                raise _error(
                    f"cannot write to {_show(path)}: {_show(where)} is "
                    f"{_json_kind(target)}, not a list",
                    path,
                )
            if seg >= len(target):
                raise _error(
                    f"cannot write to {_show(path)}: {_show(where)} has {len(target)} "
                    f"item(s), so there is no [{seg}]",
                    path,
                )
            if last:
                target[seg] = value
                return
            target = target[seg]


def _format_segments(segments: Sequence[Segment]) -> str:
    out = "$"
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", seg):
            out += f".{seg}"
        else:
            out += f"['{seg}']"
    return out


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


# ---- conditions -----------------------------------------------------------------------------


def test(condition: Any, scope: Mapping[str, Any]) -> bool:
    """Whether ``condition`` holds: a CEL string (must give true or false), a structured
    condition (:class:`FieldCondition`, :class:`AllOf`, :class:`AnyOf`, :class:`Not`) or the
    equivalent plain dict."""
    if isinstance(condition, bool):
        return condition
    if isinstance(condition, str):
        result = evaluate(condition, scope)
        if not isinstance(result, bool):
            raise _error(
                f"condition {_show(condition)} must be true or false, but it gave "
                f"{_json_kind(result)} ({_to_text(result)[:60]!r}). Hint: compare it, for "
                "example `x == 'yes'`, `size(x) > 0` or `has(input.x)`",
                condition,
            )
        return result
    if isinstance(condition, FieldCondition):
        return _test_field(condition.field, condition.operator, condition.value, scope)
    if isinstance(condition, AllOf):
        return all(test(c, scope) for c in condition.all)
    if isinstance(condition, AnyOf):
        return any(test(c, scope) for c in condition.any)
    if isinstance(condition, Not):
        return not test(condition.not_, scope)
    if isinstance(condition, Mapping):
        problems = _dict_condition_problems(condition)
        if problems:
            raise _error(problems[0], _short_repr(condition))
        if "field" in condition:
            return _test_field(
                condition["field"],
                _operator(condition.get("operator", Operator.EQUALS)),
                condition.get("value"),
                scope,
            )
        if "all" in condition:
            return all(test(c, scope) for c in condition["all"])
        if "any" in condition:
            return any(test(c, scope) for c in condition["any"])
        return not test(condition["not"], scope)
    raise _error(
        f"unsupported condition {_short_repr(condition)}. Hint: use a CEL string, "
        "`{field, operator, value}`, `{all: [...]}`, `{any: [...]}` or `{not: ...}`",
        _short_repr(condition),
    )


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:119] + "…"


def _operator(value: Any) -> Operator:
    if isinstance(value, Operator):
        return value
    try:
        return Operator(value)
    except ValueError:
        raise _error(_unknown_operator(value), str(value)) from None


def _unknown_operator(value: Any) -> str:
    known = ", ".join(op.value for op in Operator)
    return f"unknown operator {_show(str(value))}. Hint: use one of: {known}"


_FIELD_KEYS: Final = frozenset({"field", "operator", "value"})


def _dict_condition_problems(condition: Mapping[Any, Any]) -> list[str]:
    keys = set(condition)
    shown = _short_repr(dict(condition))
    if "field" in keys:
        extra = keys - _FIELD_KEYS
        if extra:
            return [
                f"condition {shown} has unknown key(s) {sorted(map(str, extra))}. Hint: a "
                "field condition has only `field`, `operator` and `value`"
            ]
        return []
    for key in ("all", "any"):
        if key in keys:
            if len(keys) > 1:
                return [f"condition {shown} mixes `{key}` with other keys. Hint: nest them"]
            if not isinstance(condition[key], list | tuple):
                return [
                    f"condition {shown}: `{key}` must be a list. Hint: `{{{key}: [cond, ...]}}`"
                ]
            return []
    if "not" in keys:
        if len(keys) > 1:
            return [f"condition {shown} mixes `not` with other keys. Hint: nest them"]
        return []
    return [
        f"condition {shown} is not a condition. Hint: use `{{field, operator, value}}`, "
        "`{all: [...]}`, `{any: [...]}` or `{not: ...}`"
    ]


# A field path: ``key(.key)*`` where a key may be followed by ``[n]`` indexes.
_FIELD_PART_RE: Final = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")


@functools.lru_cache(maxsize=4 * _CACHE_SIZE)
def _field_segments(field: str) -> tuple[Segment, ...]:
    if not field.strip():
        raise _error(
            "a condition's `field` is empty. Hint: name a field, like `customer.tier`", field
        )
    if len(field) > MAX_EXPRESSION_LENGTH:
        raise _too_long("field", field, MAX_EXPRESSION_LENGTH, "MAX_EXPRESSION_LENGTH")
    segments: list[Segment] = []
    for part in field.strip().split("."):
        m = _FIELD_PART_RE.fullmatch(part)
        if not m:
            raise _error(
                f"field {_show(field)} is not a valid path. Hint: write it like `email`, "
                "`customer.tier`, `items[0].id` or `$.customer.tier`",
                field,
            )
        name = m.group(1)
        if _dunder(name):
            raise _dunder_error(field, name)
        segments.append(name)
        segments.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return tuple(segments)


def _field_value(field: Any, scope: Mapping[str, Any]) -> Any:
    if not isinstance(field, str):
        raise _error(f"a condition's `field` must be a string, not {field!r:.60}", repr(field))
    text = field.strip()
    if _is_path(text):
        return read_path(_context(scope), text)
    if "{{" in text:
        return resolve(text, scope)
    segments = _field_segments(text)
    root = segments[0]
    assert isinstance(root, str)
    if root in SCOPE_NAMES or root in scope:
        return _lookup(scope, segments)
    return _walk(_context(scope), segments)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (1 == 1.0), booleans only equal booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return False


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, list | tuple):
        return any(_json_equal(x, item) for x in container)
    if isinstance(container, Mapping):
        return isinstance(item, str) and item in container
    return False


def _order(a: Any, b: Any) -> int | None:
    """-1, 0 or 1 for two numbers or two strings; None if they cannot be compared."""
    if _is_number(a) and _is_number(b):
        if (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
            return None
    elif not (isinstance(a, str) and isinstance(b, str)):
        return None
    return int((a > b) - (a < b))


def _test_field(field: Any, operator: Operator, value: Any, scope: Mapping[str, Any]) -> bool:
    actual = _field_value(field, scope)
    expected = resolve(value, scope)
    op = Operator(operator)
    if op is Operator.EQUALS:
        return _json_equal(actual, expected)
    if op is Operator.NOT_EQUALS:
        return not _json_equal(actual, expected)
    if op is Operator.CONTAINS:
        return _contains(actual, expected)
    if op is Operator.NOT_CONTAINS:
        return not _contains(actual, expected)
    if op is Operator.IN:
        return _contains(expected, actual)
    if op is Operator.NOT_IN:
        return not _contains(expected, actual)
    if op is Operator.STARTS_WITH:
        return isinstance(actual, str) and isinstance(expected, str) and actual.startswith(expected)
    if op is Operator.ENDS_WITH:
        return isinstance(actual, str) and isinstance(expected, str) and actual.endswith(expected)
    if op is Operator.EXISTS:
        return actual is not None
    if op is Operator.NOT_EXISTS:
        return actual is None
    if op is Operator.IS_TRUE:
        return actual is True
    if op is Operator.IS_FALSE:
        return actual is False
    order = _order(actual, expected)
    if order is None:
        return False
    if op is Operator.GREATER_THAN:
        return order > 0
    if op is Operator.GREATER_THAN_OR_EQUAL:
        return order >= 0
    if op is Operator.LESS_THAN:
        return order < 0
    if op is Operator.LESS_THAN_OR_EQUAL:
        return order <= 0
    raise _error(_unknown_operator(operator), str(operator))  # pragma: no cover


# ---- static checks (for the validator) ------------------------------------------------------


def check(value: Any) -> list[str]:
    """Parse and compile every path and expression in a value template (recursively).

    Returns human-readable problems, each naming the text, what is wrong and a hint; an empty
    list means the template is fine.  Dict keys are not checked (they are never evaluated).
    """
    problems: list[str] = []
    _check_value(value, "", problems)
    return problems


def _check_value(value: Any, where: str, problems: list[str]) -> None:
    if isinstance(value, str):
        prefix = f"at {where}: " if where else ""
        problems.extend(prefix + p for p in _check_string(value))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_value(item, f"{where}.{key}" if where else str(key), problems)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", problems)


def _check_string(text: str) -> list[str]:
    try:
        if _is_path(text):
            _path_segments_or_parse(text)
        elif "{{" in text:
            problems = []
            for is_expr, inner in _split_template(text):
                if is_expr:
                    problems.extend(_check_expression(inner))
            return problems
    except ExpressionError as exc:
        return [exc.message]
    return []


def _check_expression(text: str) -> list[str]:
    try:
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise _too_long("expression", text, MAX_EXPRESSION_LENGTH, "MAX_EXPRESSION_LENGTH")
        stripped = text.strip()
        if not stripped:
            return ["an expression is empty. Hint: write one, like `input.name`"]
        if _is_path(stripped):
            _path_segments_or_parse(stripped)
        elif stripped.startswith("{{"):
            return _check_string(stripped)
        elif _name_path(stripped) is None:
            _compile(stripped)
    except ExpressionError as exc:
        return [exc.message]
    return []


def check_condition(condition: Any) -> list[str]:
    """Check a condition statically: CEL strings compile, structured conditions have a
    non-empty field and a known operator, and their values are valid templates."""
    problems: list[str] = []
    _check_condition(condition, problems)
    return problems


def _check_condition(condition: Any, problems: list[str]) -> None:
    if isinstance(condition, bool):
        return
    if isinstance(condition, str):
        problems.extend(_check_expression(condition))
        return
    if isinstance(condition, FieldCondition):
        _check_field_condition(condition.field, condition.operator, condition.value, problems)
        return
    if isinstance(condition, AllOf | AnyOf):
        items = condition.all if isinstance(condition, AllOf) else condition.any
        for item in items:
            _check_condition(item, problems)
        return
    if isinstance(condition, Not):
        _check_condition(condition.not_, problems)
        return
    if isinstance(condition, Mapping):
        found = _dict_condition_problems(condition)
        if found:
            problems.extend(found)
            return
        if "field" in condition:
            _check_field_condition(
                condition["field"],
                condition.get("operator", Operator.EQUALS),
                condition.get("value"),
                problems,
            )
        elif "all" in condition or "any" in condition:
            for item in condition.get("all", condition.get("any", ())):
                _check_condition(item, problems)
        else:
            _check_condition(condition["not"], problems)
        return
    problems.append(
        f"unsupported condition {_short_repr(condition)}. Hint: use a CEL string, "
        "`{field, operator, value}`, `{all: [...]}`, `{any: [...]}` or `{not: ...}`"
    )


def _check_field_condition(field: Any, operator: Any, value: Any, problems: list[str]) -> None:
    if not isinstance(field, str) or not field.strip():
        problems.append(
            f"a condition's `field` must be a non-empty string, not {field!r:.60}. "
            "Hint: name a field, like `customer.tier`"
        )
    else:
        text = field.strip()
        try:
            if _is_path(text):
                _path_segments_or_parse(text)
            elif "{{" in text:
                problems.extend(_check_string(text))
            else:
                _field_segments(text)
        except ExpressionError as exc:
            problems.append(exc.message)
    if not isinstance(operator, Operator):
        try:
            Operator(operator)
        except ValueError:
            problems.append(_unknown_operator(operator))
    problems.extend(check(value))
