"""A cron scheduler in a process of its own, for the several-schedulers tests.

    python scheduler_process.py <store url> <instant> [<instant> ...]

Opens the store (no Engine: runs are created for any worker), prints ``ready``, waits
for a line on stdin, then runs one pass at each instant and prints a JSON summary."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime

from legato.store import SqlStore
from legato.testing import FakeClock
from legato.triggers.cron import Scheduler


async def main(url: str, instants: list[datetime]) -> None:
    store = await SqlStore.open(url)
    try:
        scheduler = Scheduler(store, FakeClock(instants[0]))
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        fired: list[str] = []
        duplicates: list[str] = []
        errors: list[str] = []
        for at in instants:
            result = await scheduler.tick(at)
            fired += [f.run_id for f in result.fired]
            duplicates += [f.run_id for f in result.duplicates]
            errors += [message for _scope, _wf, message in result.errors]
        print(json.dumps({"fired": fired, "duplicates": duplicates, "errors": errors}), flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], [datetime.fromisoformat(a) for a in sys.argv[2:]]))
