"""The format readers and the loader: every accepted format reads into the canonical model,
and problems come back as findings located in the document the user wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from legato.dsl import model
from legato.dsl.findings import Finding
from legato.dsl.loader import LoadResult, detect_format, load_document, load_file, load_text
from legato.errors import DefinitionError, InputError

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
SEED_FILES = (
    "000_employee_onboarding.json",
    "001_user_welcome.json",
    "002_customer_onboarding.json",
    "002_customer_onboarding_api.json",
)
PRD_ACTIONS = {"assign_plan", "create_wallet", "grant_credits", "send_email", "create_entitlement"}


def seed(name: str) -> LoadResult:
    return load_file(SEEDS / name)


def codes(result: LoadResult) -> list[tuple[str, str]]:
    return [(f.code, f.pointer) for f in result.findings]


def only(findings: list[Finding], code: str) -> Finding:
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, findings
    return matching[0]


# ---- the seeds, exactly as written ----------------------------------------------------------


@pytest.mark.parametrize("name", SEED_FILES)
def test_every_seed_loads_without_errors(name: str) -> None:
    result = seed(name)
    assert result.definition is not None
    assert result.ok
    assert not result.errors


def test_seed_000_has_exactly_the_missing_failure_handler_warning() -> None:
    result = seed("000_employee_onboarding.json")
    assert [(f.code, f.severity, f.pointer) for f in result.findings] == [
        ("L102", "warning", "/workflow/states/create_hr_record/on_failure")
    ]
    assert "notify_hr_failure" in result.findings[0].message


def test_states_reader_on_seed_000() -> None:
    result = seed("000_employee_onboarding.json")
    d = result.definition
    assert d is not None
    assert result.format == "states"
    assert (d.name, d.version, d.start_at) == ("employee_onboarding", "1.0.0", "create_hr_record")
    assert d.source_format == "states"
    assert d.input_at_root is True
    assert list(d.states) == ["create_hr_record", "run_background_check", "setup_it_accounts"]

    hr = d.states["create_hr_record"]
    assert isinstance(hr, model.TaskState)
    assert (hr.service, hr.operation, hr.action) == ("hr-workday", "employee.create", None)
    assert hr.input == {
        "firstName": "$.candidate.first_name",
        "lastName": "$.candidate.last_name",
        "email": "$.candidate.email",
        "startDate": "$.offer.start_date",
        "salary": "$.offer.salary",
        "department": "$.offer.department",
    }
    assert hr.output == {
        "$.employee.id": "$.result.employeeId",
        "$.employee.workday_id": "$.result.workdayId",
    }
    assert hr.retry is not None
    assert (hr.retry.max_attempts, hr.retry.backoff_coefficient) == (3, 2.0)
    assert hr.compensation == model.Compensation(
        service="hr-workday",
        operation="employee.delete",
        input={"employeeId": "$.employee.workday_id"},
    )
    assert hr.timeout == 300.0
    assert hr.next == "run_background_check"
    assert hr.catch == (model.Catch(errors=("ALL",), next="notify_hr_failure"),)

    checks = d.states["run_background_check"]
    assert isinstance(checks, model.ParallelState)
    assert checks.join == "all"
    assert checks.next == "setup_it_accounts"
    assert [b.name for b in checks.branches] == ["criminal_check", "employment_verification"]
    criminal = checks.branches[0]
    assert criminal.start_at == "criminal_check"
    assert list(criminal.states) == ["criminal_check"]
    task = criminal.states["criminal_check"]
    assert isinstance(task, model.TaskState)
    assert (task.service, task.operation) == ("background-check-sterling", "criminal.check")
    assert task.async_ is True
    assert task.callback_timeout == 72 * 3600
    employment = checks.branches[1].states["employment_verification"]
    assert isinstance(employment, model.TaskState)
    assert employment.callback_timeout == 48 * 3600

    it = d.states["setup_it_accounts"]
    assert isinstance(it, model.TaskState)
    assert (it.service, it.operation, it.next) == ("it-provisioning", "accounts.provision", None)
    assert it.batch == model.BatchConfig(enabled=True, max_size=50, max_wait=30.0)


def test_steps_reader_on_seed_001() -> None:
    result = seed("001_user_welcome.json")
    d = result.definition
    assert d is not None
    assert result.format == "steps"
    assert d.name == "001_user_welcome"  # no name in the document: the file's stem
    assert d.start_at == "validate_input"
    assert d.input_at_root is True
    assert list(d.states) == ["validate_input", "send_welcome", "send_error", "log_success"]

    check = d.states["validate_input"]
    assert isinstance(check, model.ChoiceState)
    assert check.name == "Validate Input Data"
    assert check.choices == (
        model.ChoiceRule(
            when=model.AllOf(
                all=(model.FieldCondition(field="email", operator="contains", value="@"),)
            ),
            next="send_welcome",
        ),
    )
    assert check.default == "send_error"

    welcome = d.states["send_welcome"]
    assert isinstance(welcome, model.TaskState)
    assert (welcome.action, welcome.name, welcome.next) == (
        "send_email",
        "Send Welcome Email",
        "log_success",
    )
    assert welcome.input == {
        "to": "{{variables.email}}",
        "subject": "Welcome!",
        "body": "Welcome to our platform!",
    }
    error = d.states["send_error"]
    assert isinstance(error, model.TaskState)
    assert error.action == "log_message"
    assert error.input == {
        "message": "Invalid email provided: {{variables.email}}",
        "level": "error",
    }
    assert error.next is None
    assert d.states["log_success"].next is None


def test_ordered_reader_on_seed_002() -> None:
    result = seed("002_customer_onboarding.json")
    d = result.definition
    assert d is not None
    assert result.format == "ordered"
    assert (d.name, d.version, d.start_at, d.enabled) == (
        "Customer Onboarding - Standard",
        "1",
        "step_1",
        True,
    )
    assert d.input_at_root is True
    assert d.trigger == model.Trigger(type="event", event_name="customer.created")
    one, two = d.states["step_1"], d.states["step_2"]
    assert isinstance(one, model.TaskState)
    assert isinstance(two, model.TaskState)
    assert (one.action, one.next) == ("assign_plan", "step_2")
    assert one.input == {"plan_id": "plan_starter", "currency": "USD"}
    assert (two.action, two.next, two.depends_on) == ("create_wallet", None, ("step_1",))
    assert two.input == {"currency": "USD", "conversion_rate": 1.0, "initial_credits": 100}


def test_ordered_reader_on_seed_002_api_body() -> None:
    d = seed("002_customer_onboarding_api.json").definition
    assert d is not None
    assert list(d.states) == ["step_1"]
    assert d.retry == model.RetryPolicy(max_attempts=3, initial_interval=1, backoff_coefficient=2)


def test_seed_002_validates_against_the_prd_actions() -> None:
    for name in ("002_customer_onboarding.json", "002_customer_onboarding_api.json"):
        result = load_file(SEEDS / name, actions=PRD_ACTIONS)
        assert result.findings == []


# ---- format detection -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"workflow": {"name": "w", "states": {}}}, "states"),
        ({"name": "w", "start_at": "a", "states": {}}, "canonical"),
        ({"steps": [{"id": "a", "type": "action"}]}, "steps"),
        ({"steps": [{"id": "a", "type": "send_email", "next_steps": ["b"]}]}, "steps"),
        ({"steps": [{"id": "a", "type": "assign_plan"}]}, "ordered"),
        ({"steps": [{"id": "a", "type": "action", "order": 1}]}, "ordered"),
        ({"trigger": {"type": "manual"}, "steps": [{"id": "a", "type": "wait"}]}, "ordered"),
        ({"format": "ordered", "steps": [{"id": "a", "type": "action"}]}, "ordered"),
    ],
)
def test_detect_format(doc: dict[str, Any], expected: str) -> None:
    assert detect_format(doc) == expected


def test_an_explicit_format_wins() -> None:
    doc = {"steps": [{"id": "a", "type": "action"}]}
    assert detect_format(doc, "ordered") == "ordered"
    assert load_document(doc, format="ordered").format == "ordered"


def test_unknown_format_is_a_finding() -> None:
    result = load_document({"format": "stepz", "steps": []})
    f = only(result.findings, "L002")
    assert f.pointer == "/format"
    assert "`steps`" in f.fix
    with pytest.raises(DefinitionError):
        detect_format({"nothing": 1})


def test_a_document_that_is_not_a_mapping() -> None:
    assert codes(load_text("- a\n- b\n")) == [("L002", "")]
    assert codes(load_text("")) == [("L002", "")]


# ---- states format ----------------------------------------------------------------------------


def states_doc(states: dict[str, Any], **workflow: Any) -> dict[str, Any]:
    return {"workflow": {"name": "w", "version": "1", "states": states, **workflow}}


def test_states_canonical_types_and_joins() -> None:
    doc = states_doc(
        {
            "fan": {
                "type": "parallel",
                "branches": [
                    {"name": "a", "type": "external_task", "service": "s", "operation": "o"},
                    {
                        "name": "b",
                        "start_at": "b1",
                        "states": {
                            "b1": {"type": "task", "action": "x", "on_success": "b2"},
                            "b2": {"type": "succeed"},
                        },
                    },
                ],
                "join": 1,
                "on_complete": "pause",
            },
            "pause": {"type": "wait", "duration": "5m", "on_success": "done"},
            "done": {"type": "succeed"},
        },
        start_at="fan",
    )
    result = load_document(doc)
    assert result.ok, result.findings
    d = result.definition
    assert d is not None
    fan = d.states["fan"]
    assert isinstance(fan, model.ParallelState)
    assert fan.join == model.AtLeast(at_least=1)
    assert fan.branches[1].start_at == "b1"
    assert fan.branches[1].states["b1"].next == "b2"
    assert d.states["pause"].next == "done"
    assert isinstance(d.states["pause"], model.WaitState)


def test_states_retry_backoff_and_delays() -> None:
    doc = states_doc(
        {
            "a": {
                "type": "external_task",
                "service": "s",
                "operation": "o",
                "retry": {
                    "max_attempts": 5,
                    "backoff": "fixed",
                    "initial_delay": "2s",
                    "max_delay": "30s",
                },
            }
        }
    )
    d = load_document(doc).raise_for_errors()
    task = d.states["a"]
    assert isinstance(task, model.TaskState)
    assert task.retry == model.RetryPolicy(
        max_attempts=5, backoff_coefficient=1.0, initial_interval=2, max_interval=30
    )


def test_states_linear_backoff_is_a_warning() -> None:
    doc = states_doc(
        {
            "a": {
                "type": "external_task",
                "service": "s",
                "operation": "o",
                "retry": {"backoff": "linear"},
            }
        }
    )
    result = load_document(doc)
    assert result.ok
    assert codes(result) == [("L006", "/workflow/states/a/retry/backoff")]


def test_states_unknown_fields_and_types() -> None:
    doc = states_doc(
        {
            "a": {"type": "external_task", "service": "s", "operation": "o", "on_sucess": "b"},
            "b": {"type": "paralel", "branches": []},
        }
    )
    result = load_document(doc)
    assert result.definition is None
    typo = only(result.findings, "L003")
    assert typo.pointer == "/workflow/states/a/on_sucess"
    assert "`on_success`" in typo.fix
    kind = only(result.findings, "L004")
    assert kind.pointer == "/workflow/states/b/type"
    assert "`parallel`" in kind.fix


def test_states_on_failure_only_where_failures_are_caught() -> None:
    doc = states_doc(
        {"p": {"type": "parallel", "branches": [], "on_failure": "x"}, "x": {"type": "fail"}}
    )
    f = only(load_document(doc).findings, "L003")
    assert f.pointer == "/workflow/states/p/on_failure"


def test_states_schema_errors_point_into_the_workflow() -> None:
    doc = states_doc(
        {
            "a": {
                "type": "external_task",
                "service": "s",
                "operation": "o",
                "timeout": "5 minutes",
                "input_mapping": "$.x",
                "retry": {"max_delay": "soon"},
            }
        }
    )
    result = load_document(doc)
    assert {f.pointer for f in result.findings} == {
        "/workflow/states/a/timeout",
        "/workflow/states/a/retry/max_delay",
    }
    assert all(f.code == "L001" for f in result.findings)
    assert all("30s" in f.fix for f in result.findings)


# ---- steps format -----------------------------------------------------------------------------


def test_steps_condition_with_config_and_one_next_step_ends_otherwise() -> None:
    doc = {
        "name": "c",
        "steps": [
            {
                "id": "check_status",
                "type": "condition",
                "config": {"field": "user_status", "operator": "equals", "value": "active"},
                "next_steps": ["active_user_flow"],
            },
            {"id": "active_user_flow", "type": "action", "config": {"action": "log_message"}},
        ],
    }
    result = load_document(doc)
    assert result.ok, result.findings
    d = result.definition
    assert d is not None
    check = d.states["check_status"]
    assert isinstance(check, model.ChoiceState)
    assert check.choices[0].when == model.AllOf(
        all=(model.FieldCondition(field="user_status", operator="equals", value="active"),)
    )
    assert check.default == "check_status__end"
    assert isinstance(d.states["check_status__end"], model.SucceedState)


def test_steps_parallel_wait_and_subflow() -> None:
    doc = {
        "name": "p",
        "steps": [
            {
                "id": "parallel_processing",
                "type": "parallel",
                "config": {
                    "parallel_steps": [
                        {"action": "process_data_1"},
                        {"action": "process_data_2", "size": 3},
                    ]
                },
                "next_steps": ["wait_for_approval"],
            },
            {
                "id": "wait_for_approval",
                "type": "wait",
                "config": {"wait_type": "event", "event": "approval_received", "timeout": "2d"},
                "next_steps": ["cool_off"],
            },
            {
                "id": "cool_off",
                "type": "wait",
                "config": {"wait_type": "duration", "duration": "1h"},
                "next_steps": ["execute_subflow"],
            },
            {
                "id": "execute_subflow",
                "type": "subflow",
                "config": {"subflow_id": "data_processing_template_id"},
            },
        ],
    }
    d = load_document(doc).raise_for_errors()
    par = d.states["parallel_processing"]
    assert isinstance(par, model.ParallelState)
    assert [b.name for b in par.branches] == ["parallel_processing_1", "parallel_processing_2"]
    second = par.branches[1].states["parallel_processing_2"]
    assert isinstance(second, model.TaskState)
    assert (second.action, second.input) == ("process_data_2", {"size": 3})
    assert par.next == "wait_for_approval"
    wait = d.states["wait_for_approval"]
    assert isinstance(wait, model.WaitState)
    assert wait.event == model.EventWait(name="approval_received", timeout=172800)
    cool = d.states["cool_off"]
    assert isinstance(cool, model.WaitState)
    assert cool.duration == 3600
    sub = d.states["execute_subflow"]
    assert isinstance(sub, model.SubflowState)
    assert sub.workflow == "data_processing_template_id"


def test_steps_fan_out_without_a_parallel_step_is_an_error() -> None:
    doc = {
        "steps": [
            {"id": "a", "type": "action", "config": {"action": "x"}, "next_steps": ["b", "c"]},
            {"id": "b", "type": "action", "config": {"action": "x"}},
            {"id": "c", "type": "action", "config": {"action": "x"}},
        ]
    }
    result = load_document(doc)
    f = only(result.findings, "L005")
    assert f.pointer == "/steps/0/next_steps"
    assert "parallel" in f.fix
    assert not result.ok


def test_steps_reader_problems_point_at_steps() -> None:
    doc = {
        "steps": [
            {"id": "a", "type": "action", "config": {"action": "x"}, "next_step": ["b"]},
            {"id": "b", "type": "actoin"},
            {"type": "action", "config": {"action": "x"}},
            {"id": "a", "type": "action", "config": {"action": "x"}},
        ]
    }
    result = load_document(doc)
    assert codes(result) == [
        ("L003", "/steps/0/next_step"),
        ("L004", "/steps/1/type"),
        ("L004", "/steps/2/id"),
        ("L004", "/steps/3/id"),
    ]
    assert "`next_steps`" in result.findings[0].fix
    assert "`action`" in result.findings[1].fix


def test_steps_schema_and_validation_errors_point_into_the_steps() -> None:
    doc = {
        "steps": [
            {
                "id": "check",
                "type": "condition",
                "conditions": [{"field": "email", "operator": "containz", "value": "@"}],
                "next_steps": ["send"],
            },
            {
                "id": "send",
                "type": "action",
                "config": {"action": "send_email"},
                "retry": {"max_atempts": 3},
            },
        ]
    }
    result = load_document(doc)
    assert codes(result) == [
        ("L001", "/steps/0/conditions/0/operator"),
        ("L001", "/steps/1/retry/max_atempts"),
    ]
    assert "`contains`" in result.findings[0].fix
    assert "`max_attempts`" in result.findings[1].fix

    doc = {
        "steps": [
            {"id": "a", "type": "action", "config": {"action": "x"}, "next_steps": ["nope"]},
            {"id": "b", "type": "action", "config": {"action": "x", "to": "{{ 1 + }}"}},
        ]
    }
    result = load_document(doc)
    assert ("L101", "/steps/0/next_steps/0") in codes(result)
    assert ("L103", "/steps/1") in codes(result)
    assert ("L116", "/steps/1/config/to") in codes(result)


def test_steps_name_comes_from_the_document_or_the_file(tmp_path: Path) -> None:
    steps = [{"id": "a", "type": "action", "config": {"action": "x"}}]
    assert load_document({"name": "named", "steps": steps}).raise_for_errors().name == "named"
    path = tmp_path / "welcome_flow.yaml"
    path.write_text("steps:\n  - id: a\n    type: action\n    config: {action: x}\n")
    assert load_file(path).raise_for_errors().name == "welcome_flow"


# ---- ordered format ---------------------------------------------------------------------------


def test_ordered_sorts_by_order_then_dependencies() -> None:
    doc = {
        "name": "o",
        "steps": [
            {"id": "c", "order": 3, "type": "t"},
            {"id": "a", "order": 1, "type": "t", "depends_on": ["b"]},
            {"id": "b", "order": 2, "type": "t"},
            {"id": "d", "order": 3, "type": "t"},
        ],
    }
    d = load_document(doc).raise_for_errors()
    order = []
    name: str | None = d.start_at
    while name is not None:
        order.append(name)
        name = d.states[name].next
    assert order == ["b", "a", "c", "d"]


def test_ordered_fields() -> None:
    doc = {
        "name": "o",
        "description": "d",
        "version": 2,
        "trigger": {"type": "scheduled", "schedule": "0 9 * * *"},
        "enabled": False,
        "timeout_seconds": 600,
        "retry_policy": {
            "max_attempts": 5,
            "initial_interval_seconds": 2,
            "max_interval_seconds": 60,
        },
        "steps": [
            {
                "id": "grant",
                "order": 1,
                "type": "grant_credits",
                "name": "Grant credits",
                "config": {"amount": 100},
                "condition": {"field": "customer.tier", "operator": "equals", "value": "gold"},
                "retry_policy": {"max_attempts": 2},
                "timeout_seconds": 30,
            }
        ],
    }
    d = load_document(doc).raise_for_errors()
    assert (d.version, d.description, d.enabled, d.timeout) == ("2", "d", False, 600)
    assert d.retry == model.RetryPolicy(max_attempts=5, initial_interval=2, max_interval=60)
    assert d.trigger == model.Trigger(type="scheduled", schedule="0 9 * * *")
    grant = d.states["grant"]
    assert isinstance(grant, model.TaskState)
    assert (grant.action, grant.name, grant.timeout) == ("grant_credits", "Grant credits", 30)
    assert grant.when == model.FieldCondition(
        field="customer.tier", operator="equals", value="gold"
    )
    assert grant.retry == model.RetryPolicy(max_attempts=2)


def test_ordered_circular_depends_on_names_the_cycle() -> None:
    doc = {
        "name": "o",
        "steps": [
            {"id": "step_1", "order": 1, "type": "t", "depends_on": ["step_2"]},
            {"id": "step_2", "order": 2, "type": "t", "depends_on": ["step_1"]},
        ],
    }
    result = load_document(doc)
    f = only(result.findings, "L105")
    assert "step_1 -> step_2 -> step_1" in f.message
    assert f.pointer == "/steps/0/depends_on"
    assert not result.ok
    with pytest.raises(DefinitionError) as caught:
        result.raise_for_errors()
    assert "step_1 -> step_2 -> step_1" in str(caught.value)


def test_ordered_problems_point_at_the_source() -> None:
    doc = {
        "name": "o",
        "retry_policy": {"max_attempts": 0, "initial_interval": 1},
        "steps": [
            {"id": "a", "type": "t", "depends_on": ["zzz"], "timeout_seconds": -5},
            {"id": "b", "type": "t", "condition": {"field": "x", "operator": "nope"}},
        ],
    }
    result = load_document(doc)
    assert codes(result) == [
        ("L003", "/retry_policy/initial_interval"),
        ("L001", "/retry_policy/max_attempts"),
        ("L001", "/steps/0/timeout_seconds"),
        ("L001", "/steps/1/condition/operator"),
    ]
    assert "`initial_interval_seconds`" in result.findings[0].fix


# ---- canonical format and schema findings -----------------------------------------------------


def test_canonical_round_trip() -> None:
    doc = {
        "name": "c",
        "start_at": "a",
        "states": {
            "a": {"type": "task", "action": "x", "next": "b"},
            "b": {"type": "succeed"},
        },
    }
    result = load_document(doc)
    assert result.ok
    assert result.format == "canonical"
    assert result.definition == model.Definition.model_validate(doc)


@pytest.mark.parametrize(
    ("state", "pointer", "in_fix"),
    [
        ({"type": "task", "action": "x", "nxt": "b"}, "/states/a/nxt", "`next`"),
        ({"type": "tsk", "action": "x"}, "/states/a/type", "`task`"),
        ({"action": "x"}, "/states/a/type", "`task`"),
        ({"type": "choice"}, "/states/a/choices", "`choices`"),
        ({"type": "task", "action": "x", "timeout": "5 mins"}, "/states/a/timeout", "'5m'"),
        (
            {"type": "task", "action": "x", "retry": {"max_attempts": 0}},
            "/states/a/retry/max_attempts",
            "at least 1",
        ),
        (
            {"type": "task", "action": "x", "when": {"field": "f", "operator": "equalz"}},
            "/states/a/when/operator",
            "`equals`",
        ),
        (
            {"type": "task", "action": "x", "when": {"all": [{"field": "f", "op": "x"}]}},
            "/states/a/when/all/0/op",
            "remove it",
        ),
        ({"type": "parallel", "branches": [], "join": "some"}, "/states/a/join", "'any'"),
        ({"type": "wait", "event": {"nme": "x"}}, "/states/a/event/nme", "`name`"),
    ],
)
def test_schema_errors_become_findings(state: dict[str, Any], pointer: str, in_fix: str) -> None:
    result = load_document({"name": "c", "start_at": "a", "states": {"a": state}})
    assert result.definition is None
    assert not result.ok
    assert pointer in [f.pointer for f in result.findings], result.findings
    f = next(f for f in result.findings if f.pointer == pointer)
    assert f.code == "L001"
    assert f.severity == "error"
    assert f.message
    assert in_fix in f.fix, f


def test_a_union_mismatch_is_one_finding() -> None:
    result = load_document(
        {"name": "c", "start_at": "a", "states": {"a": {"type": "task", "action": "x", "when": 5}}}
    )
    assert codes(result) == [("L001", "/states/a/when")]


# ---- text, files and results ------------------------------------------------------------------


def test_yaml_syntax_errors_have_line_and_column() -> None:
    text = "name: w\nstart_at: a\nstates:\n  a: {type: task, action: x\n  b: 1\n"
    result = load_text(text, source="broken.yaml")
    f = only(result.findings, "L000")
    assert f.line is not None
    assert f.line >= 4
    assert f.column is not None
    assert f"line {f.line}" in f.message
    assert result.definition is None
    assert result.source == "broken.yaml"


def test_json_syntax_errors_have_line_and_column() -> None:
    result = load_text('{\n  "name": "w",\n  "states": \n}')
    f = only(result.findings, "L000")
    assert (f.line, f.column) == (4, 1)
    assert "JSON" in f.message


def test_yaml_and_json_read_the_same(tmp_path: Path) -> None:
    doc = json.loads((SEEDS / "001_user_welcome.json").read_text())
    import yaml

    path = tmp_path / "001_user_welcome.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert load_file(path).definition == seed("001_user_welcome.json").definition


def test_load_result_ok_and_raise_for_errors() -> None:
    good = load_document({"name": "c", "start_at": "a", "states": {"a": {"type": "succeed"}}})
    assert good.ok
    assert good.raise_for_errors() is good.definition
    bad = load_document(
        {"name": "c", "start_at": "zz", "states": {"a": {"type": "succeed"}}}, source="flow.yaml"
    )
    assert not bad.ok
    assert bad.definition is not None  # it reads; the validator found errors
    with pytest.raises(DefinitionError) as caught:
        bad.raise_for_errors()
    assert caught.value.source == "flow.yaml"
    assert [f.code for f in caught.value.findings] == ["L101"]
    assert "flow.yaml" in str(caught.value)


def test_load_result_keeps_the_original_document() -> None:
    doc = {"steps": [{"id": "a", "type": "action", "config": {"action": "x"}}]}
    result = load_document(doc)
    assert result.document is doc
    assert result.pointers["/states/a"] == "/steps/0"


def test_load_file_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_file(tmp_path / "missing.yaml")


def test_finding_text() -> None:
    f = Finding(
        code="L101",
        severity="error",
        pointer="/states/a/next",
        message="The next state `b` is not a state here.",
        fix="add it",
    )
    assert str(f) == (
        "/states/a/next: error L101: The next state `b` is not a state here. Fix: add it"
    )


# ---- the format reference runs ----------------------------------------------------------------

FORMATS_DOC = Path(__file__).resolve().parents[2] / "docs" / "reference" / "formats.md"


def test_formats_doc_examples_load_and_read_as_documented() -> None:
    import re

    blocks = re.findall(r"```yaml\n(.*?)```", FORMATS_DOC.read_text(), re.S)
    results = [load_text(block, source="formats.md") for block in blocks]
    for result in results:
        assert result.findings == [], result.findings
    # after the canonical example, each example is followed by what it reads as
    pairs = list(zip(results[1::2], results[2::2], strict=True))
    assert [source.format for source, _ in pairs] == ["states", "steps", "ordered"]
    for source, documented in pairs:
        assert documented.format == "canonical"
        assert source.definition is not None
        assert documented.definition is not None
        assert source.definition.model_dump(exclude={"source_format"}) == (
            documented.definition.model_dump(exclude={"source_format"})
        )


# ---- untrusted input never crashes the loader -------------------------------------------------

_KEYS = [
    "name", "version", "states", "start_at", "workflow", "steps", "id", "type", "config",
    "next_steps", "conditions", "order", "depends_on", "trigger", "retry_policy", "retry",
    "branches", "join", "on_success", "on_failure", "input_mapping", "output_mapping",
    "compensation", "parallel_steps", "wait_type", "event", "subflow_id", "action", "service",
    "operation", "iterator", "choices", "when", "next", "default", "timeout", "duration",
    "until", "field", "operator", "value", "all", "not", "catch", "items", "result_path",
]  # fmt: skip
_TYPES = ["task", "external_task", "parallel", "choice", "wait", "foreach", "subflow",
          "succeed", "action", "condition", "assign_plan"]  # fmt: skip


def _documents() -> Any:
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(_TYPES),
        st.sampled_from(["", "a", "b", "$.a", "{{ 1 + }}", "5m", "all", "$..x"]),
    )  # fmt: skip
    values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)
        ),
        max_leaves=12,
    )
    step = st.fixed_dictionaries(
        {"id": st.sampled_from(["a", "b", "c"]), "type": st.sampled_from(_TYPES)},
        optional={k: values for k in ("config", "next_steps", "order", "depends_on")},
    )
    state = st.fixed_dictionaries(
        {"type": st.sampled_from(_TYPES)},
        optional={k: values for k in ("next", "on_success", "on_failure", "branches", "when")},
    )
    states = st.dictionaries(st.sampled_from(["a", "b", "c"]), state, max_size=3)
    return st.one_of(
        values,
        st.builds(lambda s: {"workflow": {"name": "w", "states": s}}, states),
        st.builds(lambda s: {"name": "c", "start_at": "a", "states": s}, states),
        st.builds(lambda s: {"steps": s}, st.lists(step, max_size=3)),
        st.builds(lambda s: {"trigger": {}, "steps": s}, st.lists(step, max_size=3)),
    )


def test_loading_arbitrary_documents_only_gives_findings() -> None:
    from hypothesis import given, settings

    @settings(max_examples=300, deadline=None)
    @given(_documents())
    def check(doc: Any) -> None:
        result = load_document(doc, actions={"a"}, services={"s": {"o"}}, workflows={"w"})
        assert all(isinstance(str(f), str) for f in result.findings)
        assert result.ok == (result.definition is not None and not result.errors)

    check()


def test_documents_nested_too_deeply_are_a_finding() -> None:
    assert codes(load_text("[" * 5000 + "]" * 5000)) == [("L000", "")]
    state: dict[str, Any] = {"type": "succeed"}
    for i in range(300):
        state = {
            "type": "parallel",
            "branches": [{"name": f"b{i}", "start_at": "s", "states": {"s": state}}],
        }
    result = load_document({"workflow": {"name": "w", "states": {"a": state}}})
    assert not result.ok
    assert result.errors
