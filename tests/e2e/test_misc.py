"""``legato --help``, ``legato schema``, settings from ``LEGATO_*`` variables, and the
seed documents run end to end with the user's activities."""

from __future__ import annotations

import json

import pytest
from tests.e2e.conftest import SEEDS, Cli, InProcess, one_json_object, steps_by_id

from legato.cli import app

ISSUE_COMMANDS = (
    "run",
    "lint",
    "runs",
    "show",
    "history",
    "verify",
    "signal",
    "worker",
    "cancel",
    "pause",
    "resume",
    "schema",
)


def test_help_lists_every_command(cli: Cli) -> None:
    proc = cli("--help", db=False)

    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("│ ")}
    registered = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
    assert set(ISSUE_COMMANDS) <= registered
    assert registered <= listed, proc.stdout


def test_no_arguments_shows_the_help(legato: InProcess) -> None:
    proc = legato(db=False)
    assert "Usage" in proc.stdout + proc.stderr
    assert "run" in proc.stdout + proc.stderr


def test_schema_is_the_json_schema_of_the_canonical_format(legato: InProcess) -> None:
    proc = legato("schema", db=False)

    assert proc.returncode == 0
    schema = one_json_object(proc.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert {"name", "start_at", "states"} <= set(schema["required"])
    defs = schema["$defs"]
    state_types = ("Task", "Choice", "Parallel", "Foreach", "Wait", "Subflow", "Succeed", "Fail")
    for kind in state_types:
        assert f"{kind}State" in defs
        assert defs[f"{kind}State"]["properties"]["type"]["const"] == kind.lower()
    states = schema["properties"]["states"]
    assert states["type"] == "object"
    union = states["additionalProperties"]
    refs = {
        option["$ref"].rsplit("/", 1)[-1]
        for option in union.get("oneOf") or union.get("anyOf") or []
    }
    assert refs == {f"{kind}State" for kind in state_types}
    # every reference resolves
    for ref in {m for m in _refs(schema)}:
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in defs


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LEGATO_WORKER_CONCURRENCY", "many"), ("LEGATO_LOG_LEVEL", "chatty")],
)
def test_invalid_settings_are_named_and_exit_2(
    legato: InProcess, variable: str, value: str
) -> None:
    proc = legato("runs", env={variable: value})

    assert proc.returncode == 2
    assert variable in proc.stderr
    assert proc.stdout == ""


def test_seed_002_runs_with_activities_from_legato_activities(cli: Cli) -> None:
    cli.write(
        "billing_activities.py",
        "import legato\n\n"
        "@legato.activity('assign_plan')\n"
        "def assign_plan(plan_id, currency):\n"
        "    return {'plan': plan_id, 'currency': currency}\n\n"
        "@legato.activity('create_wallet')\n"
        "async def create_wallet(currency, conversion_rate, initial_credits):\n"
        "    return {'credits': initial_credits}\n",
    )
    env = {"LEGATO_ACTIVITIES": "billing_activities", "PYTHONPATH": str(cli.cwd)}

    proc = cli(
        "run",
        str(SEEDS / "002_customer_onboarding.json"),
        "--input",
        '{"customer_id": "c-1"}',
        "--json",
        env=env,
    )

    assert proc.returncode == 0, proc.stderr
    result = one_json_object(proc.stdout)
    assert result["status"] == "completed"
    steps = steps_by_id(result)
    assert list(steps) == ["step_1", "step_2"]
    assert steps["step_1"]["output"] == {"plan": "plan_starter", "currency": "USD"}
    assert steps["step_2"]["output"] == {"credits": 100}
    assert steps["step_1"]["finished_at"] <= steps["step_2"]["started_at"]  # depends_on


def test_seed_001_takes_the_invalid_email_branch(legato: InProcess) -> None:
    proc = legato(
        "run", str(SEEDS / "001_user_welcome.json"), "--input", '{"email": "nope"}', "--json"
    )

    assert proc.returncode == 0, proc.stderr
    result = one_json_object(proc.stdout)
    statuses = {s["id"]: s["status"] for s in result["steps"]}
    assert statuses == {
        "validate_input": "completed",
        "send_error": "completed",
        "send_welcome": "skipped",
        "log_success": "skipped",
    }
    assert steps_by_id(result)["send_error"]["output"]["message"] == (
        "Invalid email provided: nope"
    )
    assert json.loads(legato("runs", "--json").stdout)[0]["workflow"] == "001_user_welcome"
