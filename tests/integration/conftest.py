"""Shared fixtures of the integration tests: a real SQLite file per test, an open Engine,
and checks of a run's recorded history."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from legato import Engine, WorkerOptions

# Poll often and heartbeat quickly so short waits and backoffs are honoured promptly.
FAST_OPTIONS = WorkerOptions(poll_interval=0.05, heartbeat_interval=0.5)


@pytest.fixture
def fast_options() -> WorkerOptions:
    """Worker options for tests: the defaults, with a short poll interval."""
    return FAST_OPTIONS


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A SQLite file for this test only."""
    return str(tmp_path / "legato.db")


@pytest.fixture
async def engine(db_path: str, fast_options: WorkerOptions) -> AsyncIterator[Engine]:
    """An Engine with the built-in actions and a worker, on this test's SQLite file."""
    async with Engine.open(db_path, options=fast_options) as eng:
        yield eng


HistoryCheck = Callable[..., Awaitable[list[Any]]]


@pytest.fixture
def check_history() -> HistoryCheck:
    """``await check_history(engine, run_id)``: assert the run's hash chain is intact, no
    attempt is scheduled or recorded twice, and (unless ``all_outcomes=False``: steps
    cancelled while running) every scheduled attempt has its outcome; return the history."""

    async def check(engine: Engine, run_id: str, *, all_outcomes: bool = True) -> list[Any]:
        assert await engine.verify(run_id) == {run_id: None}
        history = await engine.history(run_id)
        assert [e.seq for e in history] == list(range(1, len(history) + 1))
        assert history[0].type == "RunStarted"
        scheduled = [
            (e.payload["path"], e.payload["attempt"]) for e in history if e.type == "StepScheduled"
        ]
        outcomes = [
            (e.payload["path"], e.payload["attempt"])
            for e in history
            if e.type in ("StepCompleted", "StepFailed")
        ]
        assert len(set(scheduled)) == len(scheduled), f"an attempt was scheduled twice: {scheduled}"
        assert len(set(outcomes)) == len(outcomes), f"an outcome was recorded twice: {outcomes}"
        assert set(outcomes) <= set(scheduled), "an outcome without its StepScheduled"
        assert len([e for e in history if e.type == "RunFinished"]) <= 1
        if all_outcomes:
            missing = set(scheduled) - set(outcomes)
            assert not missing, f"attempts without an outcome: {sorted(missing)}"
        return history

    return check
