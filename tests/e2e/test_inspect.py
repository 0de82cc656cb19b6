"""``legato runs``, ``show``, ``history`` and ``verify`` on runs that real ``legato run``
processes recorded; tampering with the log directly in SQLite; unknown run ids."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.e2e.conftest import (
    FAILING,
    GREET,
    Cli,
    InProcess,
    finish,
    one_json_object,
    query,
    steps_by_id,
)


@dataclass(frozen=True)
class Recorded:
    db: Path
    completed: str  # run id of a GREET run with input {"name": "Ada"}
    failed: str  # run id of a FAILING run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """One database with a completed and a failed run, recorded by two processes at once."""
    cwd = tmp_path_factory.mktemp("recorded")
    cli = Cli(cwd=cwd, db=cwd / "legato.db")
    greet = cli.write("greet.yaml", GREET)
    failing = cli.write("failing.yaml", FAILING)
    procs: list[subprocess.Popen[str]] = [
        cli.popen("run", str(greet), "--input", '{"name": "Ada"}', "--json"),
        cli.popen("run", str(failing), "--json"),
    ]
    (ok_code, ok_out, ok_err), (bad_code, bad_out, _) = (finish(p) for p in procs)
    assert ok_code == 0, ok_err
    assert bad_code == 1
    return Recorded(cli.db, one_json_object(ok_out)["run_id"], one_json_object(bad_out)["run_id"])


@pytest.fixture
def reader(recorded: Recorded) -> InProcess:
    return InProcess(cwd=recorded.db.parent, db=recorded.db)


def test_runs_lists_every_run_newest_first(recorded: Recorded, reader: InProcess) -> None:
    rows = json.loads(reader("runs", "--json").stdout)
    assert {(r["run_id"], r["workflow"], r["status"]) for r in rows} == {
        (recorded.completed, "greet", "completed"),
        (recorded.failed, "failing", "failed"),
    }
    created = [r["created_at"] for r in rows]
    assert created == sorted(created, reverse=True)
    assert all(r["finished_at"] for r in rows)

    failed_only = json.loads(reader("runs", "--status", "failed", "--json").stdout)
    assert [r["run_id"] for r in failed_only] == [recorded.failed]

    table = reader("runs")
    assert table.returncode == 0
    assert "greet" in table.stdout
    assert "failing" in table.stdout


def test_show_json_has_each_steps_status_attempts_timings_and_output(
    recorded: Recorded, reader: InProcess
) -> None:
    proc = reader("show", recorded.completed, "--json")

    assert proc.returncode == 0
    result = one_json_object(proc.stdout)
    assert result["run_id"] == recorded.completed
    assert (result["status"], result["error"]) == ("completed", None)
    assert result["output"] == {"greeting": "Hello, Ada!"}
    hello = steps_by_id(result)["hello"]
    assert (hello["status"], hello["attempts"]) == ("completed", 1)
    assert hello["output"] == {"greeting": "Hello, Ada!"}
    assert hello["started_at"] <= hello["finished_at"]
    nap = steps_by_id(result)["nap"]
    assert nap["finished_at"] > nap["entered_at"]  # the wait took its 0.2 s


def test_show_a_failed_run_names_the_failed_step_and_its_error(
    recorded: Recorded, reader: InProcess
) -> None:
    human = reader("show", recorded.failed)

    assert human.returncode == 0
    assert "boom" in human.stdout
    assert "failed" in human.stdout
    assert "boom: the card was declined" in human.stdout
    result = one_json_object(reader("show", recorded.failed, "--json").stdout)
    assert result["status"] == "failed"
    assert result["error"]["message"] == "the card was declined"
    boom = steps_by_id(result)["boom"]
    assert boom["error"]["error_class"] == "PERMANENT"


def test_history_is_the_event_log(recorded: Recorded, reader: InProcess) -> None:
    events = json.loads(reader("history", recorded.completed, "--json").stdout)

    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types[0] == "RunStarted"
    assert types[-1] == "RunFinished"
    assert {"StepScheduled", "StepCompleted", "TimerStarted", "TimerFired"} <= set(types)
    assert events[0]["payload"]["input"] == {"name": "Ada"}
    assert all(len(e["hash"]) == 64 for e in events)

    human = reader("history", recorded.completed)
    assert human.returncode == 0
    lines = human.stdout.splitlines()
    assert len(lines) == len(events)
    assert lines[0].split()[0] == "1"
    assert "RunStarted" in lines[0]
    assert "RunFinished" in lines[-1]


def test_verify_finds_an_edited_event_and_names_its_seq(
    recorded: Recorded, cli: Cli, legato: InProcess
) -> None:
    # a copy of the recorded database, so the other tests still see it intact
    with sqlite3.connect(recorded.db) as src, sqlite3.connect(cli.db) as dst:
        src.backup(dst)
    assert legato("verify").returncode == 0
    assert "2 run(s) checked; every chain is intact" in legato("verify").stdout

    # someone rewrites history: the greeting of event 3 (the step's result)
    seq, payload = query(
        cli.db,
        "SELECT seq, payload FROM events WHERE run_id = ? AND type = 'StepCompleted'",
        recorded.completed,
    )[0]
    forged = payload.replace("Hello, Ada!", "Hello, Mallory!")
    assert forged != payload
    with sqlite3.connect(cli.db) as conn:
        conn.execute(
            "UPDATE events SET payload = ? WHERE run_id = ? AND seq = ?",
            (forged, recorded.completed, seq),
        )

    proc = cli("verify", recorded.completed)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"run {recorded.completed}: the chain breaks at event {seq}" in proc.stdout
    every = legato("verify", "--json")
    assert every.returncode == 1
    assert one_json_object(every.stdout) == {"checked": 2, "broken": {recorded.completed: seq}}
    assert legato("verify", recorded.failed).returncode == 0


def test_an_unknown_run_id_is_a_clear_message_and_exit_1(cli: Cli) -> None:
    proc = cli("show", "no-such-run")

    assert proc.returncode == 1
    assert "run 'no-such-run' does not exist" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ("show", "no-such-run", "--json"),
        ("history", "no-such-run"),
        ("verify", "no-such-run"),
        ("cancel", "no-such-run"),
        ("pause", "no-such-run"),
        ("resume", "no-such-run"),
        ("signal", "no-such-run", "approved"),
    ],
)
def test_every_command_names_an_unknown_run(legato: InProcess, args: tuple[str, ...]) -> None:
    proc = legato(*args)

    assert proc.returncode == 1
    assert "'no-such-run'" in proc.stderr
    assert "does not exist" in proc.stderr
    assert proc.stdout == ""
