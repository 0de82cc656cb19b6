"""``legato run``: progress and result, ``--json``, exit codes, and what an invalid
definition or input says."""

from __future__ import annotations

import json
import re

import pytest
from tests.e2e.conftest import (
    APPROVAL,
    BOOKING,
    FAILING,
    GREET,
    Cli,
    InProcess,
    finish,
    one_json_object,
    steps_by_id,
    wait_for_event,
    wait_for_run_end,
)

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def test_run_shows_each_step_then_the_result(cli: Cli) -> None:
    flow = cli.write("greet.yaml", GREET)

    proc = cli("run", str(flow), "--input", '{"name": "Ada"}')

    assert proc.returncode == 0, proc.stderr
    # the progress table (on stderr, so stdout stays the result) names every step
    for step in ("hello", "nap", "done"):
        assert re.search(rf"│ {step}\s+│ completed", proc.stderr), proc.stderr
    assert "greet" in proc.stderr
    # then the result: the run, its status and its output
    assert re.search(r"run [0-9a-f]{32}: completed", proc.stdout), proc.stdout
    assert '"greeting": "Hello, Ada!"' in proc.stdout
    assert "Traceback" not in proc.stderr


def test_run_json_prints_one_object_with_the_steps(cli: Cli) -> None:
    flow = cli.write("greet.yaml", GREET)
    cli.write("input.json", json.dumps({"name": "Grace"}))

    proc = cli("run", str(flow), "--input", "@input.json", "--json")

    assert proc.returncode == 0, proc.stderr
    result = one_json_object(proc.stdout)
    assert {"run_id", "status", "output", "error", "steps"} <= result.keys()
    assert RUN_ID.match(result["run_id"])
    assert result["status"] == "completed"
    assert result["output"] == {"greeting": "Hello, Grace!"}
    assert result["error"] is None
    steps = steps_by_id(result)
    assert list(steps) == ["hello", "nap", "done"]
    for step in steps.values():
        assert step["status"] == "completed"
        assert {"id", "status", "attempts", "started_at", "finished_at", "output"} <= step.keys()
    assert steps["hello"]["attempts"] == 1
    assert steps["hello"]["output"] == {"greeting": "Hello, Grace!"}


def test_a_failed_run_exits_1_with_its_error(cli: Cli, legato: InProcess) -> None:
    flow = cli.write("failing.yaml", FAILING)

    proc = cli("run", str(flow), "--json")

    assert proc.returncode == 1, proc.stderr
    result = one_json_object(proc.stdout)
    assert result["status"] == "failed"
    assert result["error"]["message"] == "the card was declined"
    step = steps_by_id(result)["boom"]
    assert (step["status"], step["attempts"]) == ("failed", 1)
    assert step["error"]["error_class"] == "PERMANENT"

    human = legato("run", str(flow))
    assert human.returncode == 1
    assert "failed" in human.stdout
    assert "error: the card was declined" in human.stdout


def test_detach_prints_the_run_id_and_returns_at_once(cli: Cli, legato: InProcess) -> None:
    flow = cli.write("approval.yaml", APPROVAL)

    proc = cli("run", str(flow), "--detach", timeout=15)

    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    assert RUN_ID.match(run_id), proc.stdout
    # it did not wait: the run waits for its signal, and nobody has run anything yet
    listed = json.loads(legato("runs", "--json").stdout)
    assert [(r["run_id"], r["status"]) for r in listed] == [(run_id, "running")]


def test_a_run_cancelled_from_another_process_exits_1(cli: Cli, background: list) -> None:
    flow = cli.write("booking.yaml", BOOKING)
    runner = cli.popen("run", str(flow), "--json", "--timeout", "60")
    background.append(runner)
    run_id = wait_for_event(cli.db, "TimerStarted")  # booked; now waiting to be confirmed

    cancelled = cli("cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stderr

    # `legato run` (this run's worker) undoes the booking, then the run ends
    assert wait_for_run_end(cli.db, run_id, "book#compensate") == "cancelled"
    code, stdout, stderr = finish(runner)
    assert code == 1, stderr
    result = one_json_object(stdout)
    assert result["status"] == "cancelled"
    assert steps_by_id(result)["book"]["compensation"]["status"] == "completed"


# ---- invalid definitions and input: exit 2, naming the file, the pointer and the fix ------


UNKNOWN_NEXT = """\
name: broken
start_at: first
states:
  first: {type: task, action: noop, next: secnod}
  second: {type: succeed}
"""

BAD_DURATION = """\
name: broken
start_at: pause
states:
  pause: {type: wait, duration: 5 minutes, next: done}
  done: {type: succeed}
"""

CIRCULAR = json.dumps(
    {
        "name": "circular",
        "steps": [
            {"id": "step_1", "order": 1, "type": "noop", "depends_on": ["step_2"]},
            {"id": "step_2", "order": 2, "type": "noop", "depends_on": ["step_1"]},
        ],
    },
    indent=2,
)


@pytest.mark.parametrize(
    ("file", "text", "pointer", "code"),
    [
        ("unknown_next.yaml", UNKNOWN_NEXT, "/states/first/next", "L101"),
        ("bad_duration.yaml", BAD_DURATION, "/states/pause/duration", "L001"),
        ("circular.json", CIRCULAR, "/steps/0/depends_on", "L105"),
    ],
)
def test_an_invalid_definition_exits_2_naming_file_pointer_and_fix(
    cli: Cli, legato: InProcess, file: str, text: str, pointer: str, code: str
) -> None:
    cli.write(file, text)

    proc = legato("run", file, "--input", "{}")

    assert proc.returncode == 2
    assert proc.stdout == ""
    message = proc.stderr
    assert f"{file}: 1 problem(s)" in message, message
    assert f"{pointer}: error {code}" in message, message
    assert "Fix:" in message
    assert not cli.db.exists(), "nothing should be stored for an invalid definition"


def test_the_invalid_definitions_findings_say_what_to_do(cli: Cli, legato: InProcess) -> None:
    cli.write("unknown_next.yaml", UNKNOWN_NEXT)
    cli.write("circular.json", CIRCULAR)

    unknown = legato("run", "unknown_next.yaml").stderr
    circular = legato("run", "circular.json", "--json").stderr

    # the bad name and the state meant
    assert "`secnod`" in unknown, unknown
    assert "`second`" in unknown, unknown
    # the whole cycle, on one line (error messages are not wrapped at the terminal width)
    assert "step_1 -> step_2 -> step_1" in circular, circular


def test_invalid_json_input_exits_2_naming_where_and_the_fix(cli: Cli, legato: InProcess) -> None:
    flow = cli.write("greet.yaml", GREET)

    inline = legato("run", str(flow), "--input", '{"name": "Ada",}')
    assert inline.returncode == 2
    assert "--input is not valid JSON (line 1, column 16" in inline.stderr, inline.stderr
    assert "Fix:" in inline.stderr

    cli.write("input.json", '{\n  "name": "Ada"\n  "vip": true\n}\n')
    in_file = legato("run", str(flow), "--input", "@input.json", "--json")
    assert in_file.returncode == 2
    assert in_file.stdout == ""
    assert "'input.json' is not valid JSON (line 3, column 3" in in_file.stderr, in_file.stderr
    assert "Fix:" in in_file.stderr
    assert not cli.db.exists()


def test_a_missing_input_file_exits_2_naming_it_and_the_fix(cli: Cli, legato: InProcess) -> None:
    flow = cli.write("greet.yaml", GREET)

    proc = legato("run", str(flow), "--input", "@no_such_input.json")

    assert proc.returncode == 2
    assert "'no_such_input.json' does not exist" in proc.stderr, proc.stderr
    assert "Fix:" in proc.stderr


def test_a_missing_definition_file_exits_2_naming_it_and_the_fix(cli: Cli) -> None:
    proc = cli("run", "no_such_flow.yaml", "--input", "{}")

    assert proc.returncode == 2
    assert "'no_such_flow.yaml' does not exist" in proc.stderr, proc.stderr
    assert "Fix:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not cli.db.exists()


def test_a_run_that_outlasts_timeout_exits_1_and_goes_on(cli: Cli, legato: InProcess) -> None:
    flow = cli.write("approval.yaml", APPROVAL)

    proc = legato("run", str(flow), "--json", "--timeout", "0.3")

    assert proc.returncode == 1
    result = one_json_object(proc.stdout)
    assert result["status"] == "running"
    assert "did not end within 0.3 s" in proc.stderr
    assert "Fix:" in proc.stderr
