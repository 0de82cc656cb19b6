"""``legato worker``, ``legato signal``, ``legato cancel``, ``legato pause`` and
``legato resume``: separate processes that share one SQLite file."""

from __future__ import annotations

import json
import signal
import time

from tests.e2e.conftest import (
    APPROVAL,
    BOOKING,
    REQUEST_APPROVAL,
    SLOW,
    Cli,
    InProcess,
    finish,
    one_json_object,
    query,
    steps_by_id,
    wait_for_event,
    wait_for_run_end,
)


def test_a_signal_from_another_process_wakes_a_run_the_worker_finishes(
    cli: Cli, legato: InProcess, background: list
) -> None:
    flow = cli.write("approval.yaml", APPROVAL)
    started = cli("run", str(flow), "--detach")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    worker = cli.popen("worker", "--until-idle")
    background.append(worker)

    sent = cli("signal", run_id, "approved", "--data", '{"by": "bob"}')

    assert sent.returncode == 0, sent.stderr
    assert f"signal 'approved' delivered to run {run_id}" in sent.stdout
    # the worker runs the step after the wait, and exits once nothing is unfinished
    code, _out, err = finish(worker)
    assert code == 0, err
    result = one_json_object(legato("show", run_id, "--json").stdout)
    assert result["status"] == "completed"
    assert result["output"] == {"approved_by": "bob"}
    steps = steps_by_id(result)
    assert steps["ask"]["output"] == {"by": "bob"}
    assert (steps["record"]["status"], steps["record"]["attempts"]) == ("completed", 1)
    history = json.loads(legato("history", run_id, "--json").stdout)
    received = [e for e in history if e["type"] == "SignalReceived"]
    assert [(e["payload"]["name"], e["payload"]["data"]) for e in received] == [
        ("approved", {"by": "bob"})
    ]


def test_a_signal_wakes_a_run_that_legato_run_is_following(cli: Cli, background: list) -> None:
    flow = cli.write("request_approval.yaml", REQUEST_APPROVAL)
    runner = cli.popen("run", str(flow), "--json", "--timeout", "60")
    background.append(runner)
    run_id = wait_for_event(cli.db, "TimerStarted")  # `request` done; waiting for approval

    sent = cli("signal", run_id, "approved", "--data", '{"by": "bob"}')
    assert sent.returncode == 0, sent.stderr

    # `legato run` (this run's worker) runs the step after the wait, then the run ends
    assert wait_for_run_end(cli.db, run_id, "record") == "completed"
    code, stdout, stderr = finish(runner)
    assert code == 0, stderr
    result = one_json_object(stdout)
    assert (result["status"], result["output"]) == ("completed", {"approved_by": "bob"})


def test_the_worker_resumes_a_run_whose_process_was_killed(
    cli: Cli, legato: InProcess, background: list
) -> None:
    flow = cli.write("slow.yaml", SLOW)
    # short leases, so the killed process's claim on its step lapses quickly
    fast = {"LEGATO_LEASE_SECONDS": "1"}
    runner = cli.popen("run", str(flow), env=fast)
    background.append(runner)
    run_id = wait_for_event(cli.db, "StepScheduled")  # the step is running in `runner`

    runner.send_signal(signal.SIGKILL)
    runner.communicate()
    assert query(cli.db, "SELECT status FROM runs WHERE id = ?", run_id) == [("running",)]

    worker = cli("worker", "--until-idle", env=fast)

    assert worker.returncode == 0, worker.stderr
    result = one_json_object(legato("show", run_id, "--json").stdout)
    assert result["status"] == "completed"
    assert result["output"] == {"finished": True}
    assert steps_by_id(result)["work"]["status"] == "completed"
    # and the run's history is still one intact chain
    assert legato("verify", run_id).returncode == 0


def test_worker_until_idle_exits_at_once_when_nothing_is_unfinished(cli: Cli) -> None:
    started = time.monotonic()
    proc = cli("worker", "--until-idle", timeout=15)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10


def test_cancel_stops_a_waiting_run_and_its_compensation_runs(cli: Cli, legato: InProcess) -> None:
    flow = cli.write("booking.yaml", BOOKING)
    # book, then give up waiting for the confirmation: the run goes on without us
    first = cli("run", str(flow), "--json", "--timeout", "0.5")
    assert first.returncode == 1, first.stderr
    waiting = one_json_object(first.stdout)
    run_id = waiting["run_id"]
    assert steps_by_id(waiting)["confirm"]["status"] == "waiting"

    cancelled = cli("cancel", run_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert run_id in cancelled.stdout
    # undoing the booking is work for a worker
    worker = cli("worker", "--until-idle")
    assert worker.returncode == 0, worker.stderr
    result = one_json_object(legato("show", run_id, "--json").stdout)
    assert result["status"] == "cancelled"
    steps = steps_by_id(result)
    assert steps["book"]["compensation"]["status"] == "completed"
    assert steps["confirm"]["status"] == "cancelled"
    # cancelling again changes nothing
    again = legato("cancel", run_id)
    assert again.returncode == 0
    assert "cancelled" in again.stdout


def test_pause_holds_the_step_a_signal_makes_ready_until_resume(
    cli: Cli, legato: InProcess, background: list
) -> None:
    flow = cli.write("approval.yaml", APPROVAL)
    started = cli("run", str(flow), "--detach")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    worker = cli.popen("worker", "--until-idle")
    background.append(worker)

    paused = cli("pause", run_id, "--reason", "month-end freeze")
    assert paused.returncode == 0, paused.stderr
    assert f"run {run_id}: paused" in paused.stdout
    again = legato("pause", run_id)
    assert again.returncode == 1
    assert "already paused; resume it to go on" in again.stderr
    sent = cli("signal", run_id, "approved", "--data", '{"by": "bob"}')
    assert sent.returncode == 0, sent.stderr

    # the signal is recorded, the step after the wait is not scheduled, nothing is to do
    shown = one_json_object(legato("show", run_id, "--json").stdout)
    assert (shown["status"], shown["paused"]) == ("running", True)
    assert steps_by_id(shown)["record"]["status"] == "ready"
    history = json.loads(legato("history", run_id, "--json").stdout)
    types = [(e["type"], e["payload"].get("path")) for e in history]
    assert ("StepScheduled", "record") not in types
    suspended = [e["payload"] for e in history if e["type"] == "RunSuspended"]
    assert suspended == [{"reason": "month-end freeze"}]
    assert (
        query(cli.db, "SELECT key FROM due_work WHERE run_id = ? AND kind = 'step'", run_id) == []
    )
    assert worker.poll() is None  # a paused run is unfinished: the worker stays

    resumed = legato("resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert one_json_object(resumed.stdout) == {
        "run_id": run_id,
        "status": "running",
        "paused": False,
    }
    # the worker runs the step after the wait, and exits once nothing is unfinished
    assert wait_for_run_end(cli.db, run_id, "record") == "completed"
    code, _out, err = finish(worker)
    assert code == 0, err
    result = one_json_object(legato("show", run_id, "--json").stdout)
    assert (result["status"], result["paused"]) == ("completed", False)
    assert result["output"] == {"approved_by": "bob"}
    ended = legato("resume", run_id)
    assert ended.returncode == 1
    assert "already ended (completed)" in ended.stderr
