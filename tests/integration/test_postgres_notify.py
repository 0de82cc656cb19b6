"""PostgreSQL: a worker hears about work another process inserted (LISTEN/NOTIFY).

The worker here polls only once a minute, so a run started by another Engine can end
within the test's deadline only if its first step's insertion woke the worker.
"""

from __future__ import annotations

from typing import Any

from legato import Definition, Engine, WorkerOptions

HELLO: dict[str, Any] = {
    "name": "notified",
    "start_at": "one",
    "states": {
        "one": {"type": "task", "action": "noop", "next": "two"},
        "two": {"type": "task", "action": "noop", "end": True},
    },
}


async def test_a_worker_wakes_for_work_another_process_inserted(postgres_db: str) -> None:
    slow_poll = WorkerOptions(poll_interval=60.0)
    async with (
        Engine.open(postgres_db, options=slow_poll) as worker,
        Engine.open(postgres_db, worker=False) as starter,
    ):
        await starter.deploy(Definition.model_validate(HELLO))
        for _ in range(3):  # not just the first: the listener stays connected
            run_id = await starter.start("notified")
            result = await worker.wait(run_id, timeout=20)
            assert result.status == "completed"
