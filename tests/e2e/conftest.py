"""The ``legato`` command as a user runs it: real processes sharing one SQLite file.

Each test gets its own database in ``tmp_path`` and a clean environment (no ``LEGATO_*``
variables from the caller, a short poll interval). ``cli(...)`` runs the installed
``legato`` script and returns the finished process; ``cli.popen(...)`` starts one in the
background. ``legato(...)`` runs the same command line in this process (typer's
``CliRunner``): for what does not need a process of its own (lint, schema, reading runs,
error messages), since each process pays a second of imports.
The workflows are small and quick: waits of a fraction of a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from legato.cli import app

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "tests" / "fixtures" / "seeds"


def _legato_script() -> Path:
    for candidate in (ROOT / ".venv" / "bin" / "legato", Path(sys.executable).parent / "legato"):
        if candidate.is_file():
            return candidate
    pytest.skip("the legato script is not installed (pip install -e .)")


LEGATO = _legato_script()

# A run that says hello, waits durably for a fifth of a second and ends with an output.
GREET = """\
name: greet
start_at: hello
states:
  hello:
    type: task
    action: set
    input: {greeting: "Hello, {{ input.name }}!"}
    output: {$.greeting: $.result.greeting}
    next: nap
  nap:
    type: wait
    duration: 0.2s
    next: done
  done:
    type: succeed
    output: {greeting: $.greeting}
"""

# A run whose only step fails at once (no retries).
FAILING = """\
name: failing
start_at: boom
states:
  boom:
    type: task
    action: fail
    input: {message: the card was declined}
    retry: {max_attempts: 1}
"""

# A run that waits for signal `approved`, then records who approved in a task (which a
# worker has to execute) and ends with it.
APPROVAL = """\
name: approval
start_at: ask
states:
  ask:
    type: wait
    event: {name: approved, timeout: 1m}
    result_path: $.approval
    next: record
  record:
    type: task
    action: set
    input: {approved_by: $.approval.by}
    output: {$.approved_by: $.result.approved_by}
    next: done
  done:
    type: succeed
    output: {approved_by: $.approved_by}
"""

# The same with a task before the wait, so the process that runs it has seen the run.
REQUEST_APPROVAL = """\
name: request_approval
start_at: request
states:
  request:
    type: task
    action: set
    input: {requested: true}
    next: ask
  ask:
    type: wait
    event: {name: approved, timeout: 1m}
    result_path: $.approval
    next: record
  record:
    type: task
    action: set
    input: {approved_by: $.approval.by}
    output: {$.approved_by: $.result.approved_by}
    next: done
  done:
    type: succeed
    output: {approved_by: $.approved_by}
"""

# A booking with a compensation, then a wait: cancelling it undoes the booking.
BOOKING = """\
name: booking
start_at: book
states:
  book:
    type: task
    action: set
    input: {booking: B-1}
    output: {$.booking: $.result.booking}
    compensation:
      action: log
      input: {message: undo the booking}
    next: confirm
  confirm:
    type: wait
    event: {name: confirmed, timeout: 1m}
    next: done
  done:
    type: succeed
"""

# A step that takes a second: long enough to kill the process running it.
SLOW = """\
name: slow
start_at: work
states:
  work:
    type: task
    action: sleep
    input: {seconds: 1}
    next: done
  done:
    type: succeed
    output: {finished: true}
"""


@dataclass
class Cli:
    """Runs ``legato`` in ``cwd`` against ``db`` (passed as ``--db`` where accepted)."""

    cwd: Path
    db: Path
    env: dict[str, str] = field(default_factory=dict)

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEGATO_")}
        env.update(
            {
                "LEGATO_POLL_INTERVAL": "0.05",
                # A plain 80-column terminal, so wrapping is what a user would see.
                "COLUMNS": "80",
                "NO_COLOR": "1",
            }
        )
        env.pop("FORCE_COLOR", None)
        env.update(self.env)
        env.update(extra or {})
        return env

    def args(self, args: tuple[str, ...], db: bool) -> list[str]:
        return [str(LEGATO), *args, *(["--db", str(self.db)] if db else [])]

    def __call__(
        self,
        *args: str,
        db: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.args(args, db),
            cwd=self.cwd,
            env=self.environ(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(
        self, *args: str, db: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.args(args, db),
            cwd=self.cwd,
            env=self.environ(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def write(self, name: str, text: str) -> Path:
        path = self.cwd / name
        path.write_text(text, encoding="utf-8")
        return path


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(cwd=tmp_path, db=tmp_path / "legato.db")


@dataclass
class Invoked:
    """What an in-process ``legato`` printed, and its exit code (like a finished process)."""

    returncode: int
    stdout: str
    stderr: str


@dataclass
class InProcess:
    """``legato ...`` in this process, in ``cwd``, against ``db`` (``--db`` where accepted)."""

    cwd: Path
    db: Path

    def __call__(self, *args: str, db: bool = True, env: dict[str, str] | None = None) -> Invoked:
        clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("LEGATO_")}
        clean.update({"LEGATO_POLL_INTERVAL": "0.05", "COLUMNS": "80"})
        clean.update(env or {})
        argv = [*args, *(["--db", str(self.db)] if db else [])]
        with contextlib.chdir(self.cwd):
            result = CliRunner().invoke(app, argv, env=clean)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a traceback is a bug: let the test show it
        return Invoked(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def legato(cli: Cli) -> InProcess:
    """In-process ``legato`` on the same directory and database as ``cli``."""
    return InProcess(cwd=cli.cwd, db=cli.db)


def one_json_object(text: str) -> dict[str, Any]:
    """``text`` is exactly one JSON object (surrounding whitespace aside) and nothing else."""
    value = json.loads(text)  # raises on any text before or after the object
    assert isinstance(value, dict), text
    return value


def steps_by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in result["steps"]}


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the database directly, as an operator with ``sqlite3`` would."""
    with sqlite3.connect(db, timeout=10) as conn:
        return list(conn.execute(sql, params))


def wait_for_event(db: Path, event_type: str, *, timeout: float = 15.0) -> str:
    """Wait until some run's log has an event of ``event_type``; return that run's id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                rows = query(db, "SELECT run_id FROM events WHERE type = ?", event_type)
            except sqlite3.OperationalError:  # the schema is still being created
                rows = []
            if rows:
                return str(rows[0][0])
        time.sleep(0.05)
    raise AssertionError(f"no {event_type} event in {db} within {timeout}s")


TERMINAL = ("completed", "failed", "cancelled", "compensation_failed")


def wait_for_run_end(db: Path, run_id: str, step: str, *, timeout: float = 20.0) -> str:
    """Wait until the run has ended and return its status; fail at once if the work of
    ``step`` disappears without an outcome (scheduled, no work row left, nothing recorded).

    A step's outcome and the removal of its work row are one transaction, so reading the
    log and the work table in one read transaction never sees that in a correct run."""
    deadline = time.monotonic() + timeout
    status = "?"
    while time.monotonic() < deadline:
        conn = sqlite3.connect(db, timeout=10, isolation_level=None)
        try:
            conn.execute("BEGIN")
            [(status,)] = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,))
            events = conn.execute(
                "SELECT type, payload FROM events WHERE run_id = ? AND type IN "
                "('StepScheduled', 'StepCompleted', 'StepFailed')",
                (run_id,),
            ).fetchall()
            work = set(
                conn.execute(
                    "SELECT attempt FROM due_work WHERE run_id = ? AND kind = 'step' AND key = ?",
                    (run_id, step),
                ).fetchall()
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        if status in TERMINAL:
            return str(status)
        decoded = [(kind, json.loads(payload)) for kind, payload in events]
        ours = [(kind, p["attempt"]) for kind, p in decoded if p["path"] == step]
        scheduled = {attempt for kind, attempt in ours if kind == "StepScheduled"}
        done = {attempt for kind, attempt in ours if kind != "StepScheduled"}
        lost = scheduled - done - {attempt for (attempt,) in work}
        assert not lost, (
            f"the work of step {step!r} (attempt {sorted(lost)}) was dropped without an "
            f"outcome; the run is stuck {status!r}"
        )
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end within {timeout}s (it is {status!r})")


def finish(proc: subprocess.Popen[str], timeout: float = 20) -> tuple[int, str, str]:
    """Wait for a background ``legato``; kill it (and fail) if it does not end in time."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(
            f"legato did not exit within {timeout}s\nstdout: {stdout}\nstderr: {stderr}"
        ) from None
    return proc.returncode, stdout, stderr


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts in the background; any still running at the end are killed."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
