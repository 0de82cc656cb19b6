"""Temporal workflows for the benchmark shapes (imported into Temporal's sandbox).

Activities are called by name ("noop", "mark") so this module imports nothing but the
SDK's workflow API; the activities live in :mod:`bench.engines.temporal_engine`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

TIMEOUT = timedelta(minutes=10)


@workflow.defn(name="BenchSeq")
class SeqWorkflow:
    @workflow.run
    async def run(self, steps: int) -> None:
        for _ in range(steps):
            await workflow.execute_activity("noop", start_to_close_timeout=TIMEOUT)


@workflow.defn(name="BenchFan")
class FanWorkflow:
    @workflow.run
    async def run(self, branches: int) -> None:
        await asyncio.gather(
            *(
                workflow.execute_activity("noop", start_to_close_timeout=TIMEOUT)
                for _ in range(branches)
            )
        )


@workflow.defn(name="BenchTimer")
class TimerWorkflow:
    @workflow.run
    async def run(self, seconds: float) -> float:
        await workflow.sleep(seconds)  # a durable server-side timer
        return await workflow.execute_activity(
            "mark", start_to_close_timeout=TIMEOUT, result_type=float
        )


@workflow.defn(name="BenchTrigger")
class TriggerWorkflow:
    @workflow.run
    async def run(self) -> float:
        return await workflow.execute_activity(
            "mark", start_to_close_timeout=TIMEOUT, result_type=float
        )


WORKFLOWS = [SeqWorkflow, FanWorkflow, TimerWorkflow, TriggerWorkflow]
