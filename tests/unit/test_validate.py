"""The validator's rules, each on a small bad definition, and the service registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from legato.connectors.registry import load_service_capabilities
from legato.dsl.findings import Finding, source_pointer
from legato.dsl.loader import load_file
from legato.dsl.model import Definition
from legato.dsl.validate import RULES, lint, validate
from legato.errors import InputError

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
LINT_RULES_DOC = Path(__file__).resolve().parents[2] / "docs" / "reference" / "lint-rules.md"


def definition(
    states: dict[str, Any], start_at: str = "a", extra: dict[str, Any] | None = None
) -> Definition:
    return Definition.model_validate(
        {"name": "t", "start_at": start_at, "states": states, **(extra or {})}
    )


def task(**fields: Any) -> dict[str, Any]:
    return {"type": "task", "action": "x", **fields}


def found(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.code, f.severity, f.pointer) for f in findings]


def check(states: dict[str, Any], start_at: str = "a", **kwargs: Any) -> list[tuple[str, str, str]]:
    return found(validate(definition(states, start_at), **kwargs))


def test_a_good_definition_has_no_findings() -> None:
    states = {
        "a": task(
            input={"x": "$.input.x", "y": "{{ input.y + 1 }}"},
            next="b",
            output={"$.out.x": "$.result.x"},
            result_path="$.a",
        ),
        "b": {"type": "choice", "choices": [{"when": "input.y > 1", "next": "c"}], "default": "c"},
        "c": {"type": "succeed"},
    }
    assert check(states, actions={"x"}) == []


# ---- transitions and the graph ----------------------------------------------------------------


def test_unknown_targets_are_errors() -> None:
    states = {
        "a": task(next="nope"),
        "b": {"type": "choice", "choices": [{"when": "true", "next": "gone"}], "default": "lost"},
        "c": {"type": "wait", "event": {"name": "e", "timeout": "1h", "timeout_next": "void"}},
    }
    result = check(states)
    assert ("L101", "error", "/states/a/next") in result
    assert ("L101", "error", "/states/b/choices/0/next") in result
    assert ("L101", "error", "/states/b/default") in result
    assert ("L101", "error", "/states/c/event/timeout_next") in result


def test_unknown_start_states_are_errors() -> None:
    assert check({"a": {"type": "succeed"}}, start_at="b")[0] == ("L101", "error", "/start_at")
    states = {
        "p": {
            "type": "parallel",
            "branches": [{"name": "one", "start_at": "nope", "states": {"s": {"type": "succeed"}}}],
        },
    }
    assert ("L101", "error", "/states/p/branches/0/start_at") in check(states, start_at="p")


def test_unknown_target_suggests_a_close_name() -> None:
    findings = validate(definition({"a": task(next="finnish"), "finish": {"type": "succeed"}}))
    assert found(findings) == [
        ("L101", "error", "/states/a/next"),
        ("L103", "warning", "/states/finish"),
    ]
    assert "`finish`" in findings[0].fix


def test_unknown_catch_target_is_a_warning() -> None:
    states = {"a": task(catch=[{"next": "notify"}])}
    [finding] = validate(definition(states))
    assert (finding.code, finding.severity, finding.pointer) == (
        "L102",
        "warning",
        "/states/a/catch/0/next",
    )
    assert "the run fails instead" in finding.message


def test_unreachable_states_are_warnings() -> None:
    states = {"a": task(), "b": task(next="c"), "c": {"type": "succeed"}}
    assert check(states) == [
        ("L103", "warning", "/states/b"),
        ("L103", "warning", "/states/c"),
    ]


def test_reachability_follows_every_kind_of_transition() -> None:
    states = {
        "a": task(next="b", catch=[{"next": "e"}]),
        "b": {"type": "choice", "choices": [{"when": "true", "next": "c"}], "default": "d"},
        "c": {"type": "wait", "event": {"name": "x", "timeout_next": "d"}},
        "d": {"type": "succeed"},
        "e": {"type": "fail"},
    }
    assert check(states) == []


def test_rules_apply_inside_branches_and_iterators() -> None:
    states = {
        "p": {
            "type": "parallel",
            "next": "f",
            "branches": [{"name": "one", "start_at": "s", "states": {"s": task(next="nowhere")}}],
        },
        "f": {
            "type": "foreach",
            "items": "$.items",
            "iterator": {
                "name": "body",
                "start_at": "t",
                "states": {"t": task(input={"v": "{{ item. }}"}), "u": {"type": "succeed"}},
            },
        },
    }
    assert check(states, start_at="p") == [
        ("L101", "error", "/states/p/branches/0/states/s/next"),
        ("L116", "error", "/states/f/iterator/states/t/input/v"),
        ("L103", "warning", "/states/f/iterator/states/u"),
    ]


# ---- depends_on -------------------------------------------------------------------------------


def test_unknown_dependency_is_an_error() -> None:
    states = {"a": task(next="b"), "b": task(depends_on=["a", "zz"])}
    assert check(states) == [("L104", "error", "/states/b/depends_on/1")]


def test_circular_dependencies_name_the_cycle() -> None:
    states = {
        "a": task(next="b", depends_on=["c"]),
        "b": task(next="c", depends_on=["a"]),
        "c": task(depends_on=["b"]),
    }
    [finding] = validate(definition(states))
    assert (finding.code, finding.pointer) == ("L105", "/states/a/depends_on")
    assert "a -> c -> b -> a" in finding.message


def test_a_state_that_depends_on_itself() -> None:
    [finding] = validate(definition({"a": task(depends_on=["a"])}))
    assert finding.code == "L105"
    assert "a -> a" in finding.message


# ---- tasks, actions, services, workflows ------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"type": "task"}, "/states/a"),
        ({"type": "task", "action": "x", "service": "s", "operation": "o"}, "/states/a/action"),
        ({"type": "task", "service": "s"}, "/states/a"),
        ({"type": "task", "operation": "o"}, "/states/a"),
        (task(compensation={"input": {}}), "/states/a/compensation"),
    ],
)
def test_a_task_needs_one_thing_to_run(fields: dict[str, Any], pointer: str) -> None:
    assert check({"a": fields}) == [("L106", "error", pointer)]


def test_unknown_action_when_actions_are_known() -> None:
    [finding] = validate(
        definition({"a": task(action="send_emial")}), actions={"send_email", "log"}
    )
    assert (finding.code, finding.pointer) == ("L107", "/states/a/action")
    assert "`send_email`" in finding.fix
    assert check({"a": task(action="anything")}) == []  # no registry, no check


def test_unknown_service_and_operation() -> None:
    services = {"hr": {"employee.create"}, "any": set()}
    states = {
        "a": {"type": "task", "service": "hr", "operation": "employee.crate", "next": "b"},
        "b": {"type": "task", "service": "it", "operation": "x", "next": "c"},
        "c": {
            "type": "task",
            "service": "any",
            "operation": "whatever",
            "next": "d",
            "compensation": {"service": "hr", "operation": "employee.delete"},
        },
        "d": {"type": "task", "service": "hr", "operation": "employee.create"},
    }
    result = validate(definition(states), services=services)
    assert found(result) == [
        ("L109", "error", "/states/a/operation"),
        ("L108", "error", "/states/b/service"),
        ("L109", "error", "/states/c/compensation/operation"),
    ]
    assert "`employee.create`" in result[0].fix


def test_unknown_subflow_workflow() -> None:
    states = {"a": {"type": "subflow", "workflow": "billing"}}
    assert check(states, workflows={"billing"}) == []
    assert check(states, workflows={"biling_v2"}) == [("L110", "error", "/states/a/workflow")]


# ---- names, waits, parallel, choice -----------------------------------------------------------


def test_state_and_branch_names() -> None:
    states = {
        "bad name": task(next="p"),
        "p": {
            "type": "parallel",
            "branches": [{"name": "2nd", "start_at": "s", "states": {"s": {"type": "succeed"}}}],
        },
    }
    assert check(states, start_at="bad name") == [
        ("L111", "error", "/states/bad name"),
        ("L111", "error", "/states/p/branches/0/name"),
    ]


@pytest.mark.parametrize(
    "wait",
    [
        {"type": "wait"},
        {"type": "wait", "duration": "1m", "event": {"name": "e"}},
        {"type": "wait", "duration": "1m", "until": "2030-01-01T00:00:00Z"},
    ],
)
def test_a_wait_needs_exactly_one_thing_to_wait_for(wait: dict[str, Any]) -> None:
    assert check({"a": wait}) == [("L112", "error", "/states/a")]


def test_until_must_be_an_instant_with_a_zone_or_an_expression() -> None:
    assert check({"a": {"type": "wait", "until": "2030-01-01T09:00:00+01:00"}}) == []
    assert check({"a": {"type": "wait", "until": "$.input.deadline"}}) == []
    assert check({"a": {"type": "wait", "until": "2030-01-01T09:00:00"}}) == [
        ("L119", "error", "/states/a/until")
    ]
    assert check({"a": {"type": "wait", "until": "tomorrow"}}) == [
        ("L119", "error", "/states/a/until")
    ]


def test_parallel_branches_and_join() -> None:
    assert check({"a": {"type": "parallel", "branches": []}}) == [
        ("L113", "error", "/states/a/branches")
    ]
    branch = {"name": "b", "start_at": "s", "states": {"s": {"type": "succeed"}}}
    assert check({"a": {"type": "parallel", "branches": [branch, branch]}}) == [
        ("L113", "error", "/states/a/branches/1/name")
    ]
    assert check({"a": {"type": "parallel", "branches": [branch], "join": {"at_least": 2}}}) == [
        ("L114", "error", "/states/a/join/at_least")
    ]


def test_a_choice_without_default_is_a_warning() -> None:
    states = {
        "a": {"type": "choice", "choices": [{"when": "true", "next": "b"}]},
        "b": {"type": "succeed"},
    }
    assert check(states) == [("L115", "warning", "/states/a")]


# ---- expressions and paths --------------------------------------------------------------------


def test_bad_expressions_are_reported_where_they_are() -> None:
    states = {
        "a": task(
            input={"to": "{{ 1 + }}", "list": ["ok", "$.a["]},
            output={"$.x": "$.result["},
            when="input.amount >",
            compensation={"action": "undo", "input": {"id": "{{ input. }}"}},
            next="b",
        ),
        "b": {
            "type": "choice",
            "choices": [{"when": {"all": [{"field": "", "operator": "equals"}]}, "next": "c"}],
            "default": "c",
        },
        "c": {
            "type": "foreach",
            "items": "$.items[",
            "next": "d",
            "iterator": {"name": "i", "start_at": "s", "states": {"s": {"type": "succeed"}}},
        },
        "d": {"type": "wait", "event": {"name": "e", "correlation": "{{ x + }}"}, "next": "e"},
        "e": {"type": "wait", "until": "{{ 1 + }}"},
    }
    result = validate(definition(states))
    assert found(result) == [
        ("L116", "error", "/states/a/when"),
        ("L116", "error", "/states/a/input/to"),
        ("L116", "error", "/states/a/input/list/1"),
        ("L116", "error", "/states/a/output/$.x"),
        ("L116", "error", "/states/a/compensation/input/id"),
        ("L116", "error", "/states/b/choices/0/when/all/0"),
        ("L116", "error", "/states/c/items"),
        ("L116", "error", "/states/d/event/correlation"),
        ("L116", "error", "/states/e/until"),
    ]
    assert all(f.message and f.fix for f in result)


def test_trigger_conditions_are_checked() -> None:
    d = definition(
        {"a": task()},
        extra={"trigger": {"type": "event", "event_name": "e", "conditions": ["input.x >"]}},
    )
    assert found(validate(d)) == [("L116", "error", "/trigger/conditions/0")]


def test_output_and_result_paths_must_be_simple() -> None:
    states = {
        "a": task(
            output={"$.items[*].id": "$.result", "$.ok['a b'][0]": "$.result", "plain": "$.result"},
            result_path="$..x",
            catch=[{"next": "b", "result_path": "$"}],
        ),
        "b": {"type": "succeed"},
    }
    assert check(states) == [
        ("L117", "error", "/states/a/output/$.items[*].id"),
        ("L117", "error", "/states/a/output/plain"),
        ("L117", "error", "/states/a/result_path"),
        ("L117", "error", "/states/a/catch/0/result_path"),
    ]


# ---- retry ------------------------------------------------------------------------------------


def test_retry_initial_interval_above_maximum_is_a_warning() -> None:
    states = {"a": task(retry={"initial_interval": "2m", "max_interval": "30s"})}
    assert check(states) == [("L118", "warning", "/states/a/retry/initial_interval")]
    d = definition({"a": task()}, extra={"retry": {"initial_interval": 10, "max_interval": 5}})
    assert found(validate(d)) == [("L118", "warning", "/retry/initial_interval")]


# ---- pointers, documentation, lint ------------------------------------------------------------


def test_pointers_translate_to_the_source() -> None:
    pointers = {"/states/a": "/steps/0", "/states/a/next": "/steps/0/next_steps/0"}
    [finding] = validate(definition({"a": task(next="b")}), pointers=pointers)
    assert finding.pointer == "/steps/0/next_steps/0"
    assert source_pointer("/states/a/input/x", pointers) == "/steps/0/input/x"
    assert source_pointer("/states/ab", pointers) == "/states/ab"


def test_every_rule_is_documented() -> None:
    text = LINT_RULES_DOC.read_text()
    for code in [*RULES, "L000", "L001", "L002", "L003", "L004", "L005", "L006"]:
        assert f"| {code} |" in text, code


def test_lint_a_file_or_text(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text("name: f\nstart_at: a\nstates:\n  a: {type: task, action: nope}\n")
    assert [f.code for f in lint(path, actions={"send_email"}).findings] == ["L107"]
    assert [f.code for f in lint(str(path)).findings] == []
    text = "name: f\nstart_at: a\nstates:\n  a: {type: task, action: x, next: b}\n"
    assert [f.code for f in lint(text).findings] == ["L101"]
    with pytest.raises(InputError):
        lint(str(tmp_path / "missing.yaml"))


# ---- the service registry ---------------------------------------------------------------------


def test_seed_000_registry_capabilities() -> None:
    services = load_service_capabilities(SEEDS / "000_services.yaml")
    assert set(services) == {"hr-workday", "background-check-sterling", "payment-stripe"}
    assert "employee.create" in services["hr-workday"]
    assert services["background-check-sterling"] == {
        "criminal.check",
        "employment.verify",
        "education.verify",
        "reference.check",
    }


def test_seed_000_against_its_registry_reports_it_provisioning() -> None:
    services = load_service_capabilities(SEEDS / "000_services.yaml")
    result = load_file(SEEDS / "000_employee_onboarding.json", services=services)
    unknown = [f for f in result.findings if f.code == "L108"]
    assert [(f.pointer, f.severity) for f in unknown] == [
        ("/workflow/states/setup_it_accounts/service", "error")
    ]
    assert "`it-provisioning`" in unknown[0].message
    # the compensation calls an operation the registry does not list either
    assert ("L109", "/workflow/states/create_hr_record/compensation/operation") in [
        (f.code, f.pointer) for f in result.findings
    ]
    assert not result.ok


def test_registry_errors_name_the_file_and_entry(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.yaml"):
        load_service_capabilities(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  - name: a\n    capabilities: [x\n")
    with pytest.raises(InputError, match=r"bad\.yaml.*line"):
        load_service_capabilities(bad)
    nameless = tmp_path / "nameless.yaml"
    nameless.write_text("services:\n  - name: a\n  - type: rest\n")
    with pytest.raises(InputError, match=r"nameless\.yaml: services\[1\] has no `name`"):
        load_service_capabilities(nameless)
    shapeless = tmp_path / "shapeless.yaml"
    shapeless.write_text("- a\n")
    with pytest.raises(InputError, match="services:"):
        load_service_capabilities(shapeless)


def test_registry_keeps_env_references_as_written(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("services:\n  - name: a\n    auth: {token: '${TOKEN}'}\n")
    assert load_service_capabilities(path) == {"a": set()}


def test_a_trigger_lacking_what_its_type_needs_is_an_error() -> None:
    from legato.dsl.model import Definition
    from legato.dsl.validate import validate

    def findings(trigger: dict[str, object]) -> list[tuple[str, str]]:
        d = Definition.model_validate(
            {"name": "t", "start_at": "a", "states": {"a": {"type": "succeed"}}, "trigger": trigger}
        )
        return [(f.code, f.pointer) for f in validate(d)]

    assert findings({"type": "event"}) == [("L120", "/trigger/event_name")]
    assert findings({"type": "scheduled"}) == [("L120", "/trigger/schedule")]
    assert findings({"type": "manual", "secret_env": "X"}) == [("L120", "/trigger/secret_env")]
    assert findings({"type": "event", "event_name": "customer.created"}) == []
    assert findings({"type": "webhook", "secret_env": "HOOK_SECRET"}) == []


def schedule_findings(schedule: object) -> list[Finding]:
    d = definition(
        {"a": {"type": "succeed"}}, extra={"trigger": {"type": "scheduled", "schedule": schedule}}
    )
    return validate(d)


@pytest.mark.parametrize(
    "schedule",
    [
        "*/5 * * * *",
        "0 9 * * 1-5",
        "0 9 * * MON-FRI",
        "  0  0 29 2 *  ",  # leap days fire, every four years
        "@hourly",
        "@DAILY",
        {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", "catch_up": "all"},
        {"cron": "30 2 * * *", "timezone": "America/New_York", "max_catch_up": 1000},
    ],
)
def test_a_valid_schedule_has_no_findings(schedule: object) -> None:
    assert schedule_findings(schedule) == []


@pytest.mark.parametrize(
    ("schedule", "pointer", "words"),
    [
        ("61 * * * *", "/trigger/schedule", "minute field '61'"),
        ("0 24 * * *", "/trigger/schedule", "hour field '24'"),
        ("0 0 * 13 *", "/trigger/schedule", "month field '13'"),
        ("0 9 * * MON-FRU", "/trigger/schedule", "day-of-week field 'MON-FRU'"),
        ("every tuesday", "/trigger/schedule", "it has 2 fields"),
        ("0 * * * * *", "/trigger/schedule", "a seconds field is not accepted"),
        ("0 0 30 2 *", "/trigger/schedule", "never fires"),
        ("@reboot", "/trigger/schedule", "unknown cron macro"),
        ("   ", "/trigger/schedule", "must be a cron expression"),
        (5, "/trigger/schedule", "cron string or an object"),
        ({"cron": "*/0 * * * *"}, "/trigger/schedule/cron", "minute field '*/0'"),
        ({"timezone": "UTC"}, "/trigger/schedule/cron", "must be a cron expression"),
        ({"cron": "0 9 * * *", "catch_up": "some"}, "/trigger/schedule/catch_up", "catch_up"),
        ({"cron": "0 9 * * *", "max_catch_up": 0}, "/trigger/schedule/max_catch_up", "1 to 1000"),
        ({"cron": "0 9 * * *", "every": "5m"}, "/trigger/schedule/every", "unknown key"),
    ],
)
def test_a_bad_cron_schedule_is_an_error_at_its_value(
    schedule: object, pointer: str, words: str
) -> None:
    [finding] = schedule_findings(schedule)
    assert (finding.code, finding.severity, finding.pointer) == ("L121", "error", pointer)
    assert words in finding.message
    assert finding.fix


def test_a_bad_time_zone_is_an_error_with_a_suggestion() -> None:
    [unknown] = schedule_findings({"cron": "0 9 * * *", "timezone": "Mars/Olympus"})
    assert (unknown.code, unknown.pointer) == ("L121", "/trigger/schedule/timezone")
    assert "unknown time zone 'Mars/Olympus'" in unknown.message
    assert "IANA" in unknown.fix
    [cased] = schedule_findings({"cron": "0 9 * * *", "timezone": "europe/berlin"})
    assert "did you mean 'Europe/Berlin'?" in cased.fix
    [typed] = schedule_findings({"cron": "0 9 * * *", "timezone": 1})
    assert typed.pointer == "/trigger/schedule/timezone"
    # every problem of a schedule is reported, not only the first
    both = schedule_findings({"cron": "0 25 * * *", "timezone": "Nowhere/City"})
    assert [f.pointer for f in both] == ["/trigger/schedule/cron", "/trigger/schedule/timezone"]


def test_a_schedule_is_checked_only_on_a_scheduled_trigger() -> None:
    missing = schedule_findings(None)
    assert [(f.code, f.pointer) for f in missing] == [("L120", "/trigger/schedule")]
    d = definition(
        {"a": {"type": "succeed"}},
        extra={"trigger": {"type": "manual", "schedule": "not cron"}},
    )
    assert validate(d) == []


def test_lint_reports_a_bad_cron_at_the_source_pointer() -> None:
    text = (
        "name: nightly\n"
        "trigger: {type: scheduled, schedule: {cron: '0 2 * * *', timezone: Europe/Berln}}\n"
        "steps:\n"
        "  - {id: report, type: log, config: {message: hi}}\n"
    )
    result = lint(text)
    assert [(f.code, f.pointer) for f in result.errors] == [("L121", "/trigger/schedule/timezone")]
    assert "Europe/Berlin" in result.errors[0].fix
