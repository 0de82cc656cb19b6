"""The five workloads, written once against :class:`bench.engines.base.BenchEngine`.

Each returns a flat dict of metrics (times in ms, rates per second). Sizes come from
:data:`FULL` or :data:`SMOKE`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.engines.base import BenchEngine, Finished
from bench.stats import median, percentile

FULL: dict[str, dict[str, Any]] = {
    "w1": {"runs": 200, "steps": 10},
    "w2": {"steps": 10, "reps": 20},
    "w3": {"runs": 50, "branches": 20},
    "w4": {"runs": 10_000, "seconds": 2.0},
    "w5": {"samples": 50},
}

SMOKE: dict[str, dict[str, Any]] = {
    "w1": {"runs": 5, "steps": 3},
    "w2": {"steps": 3, "reps": 3},
    "w3": {"runs": 2, "branches": 3},
    "w4": {"runs": 20, "seconds": 0.5},
    "w5": {"samples": 3},
}

W5_GAP_S = 0.5
"""Upper bound of the random pause before each W5 event (two worker poll intervals)."""
W5_SEED = 5

TITLES = {
    "w1": "W1 sequential",
    "w2": "W2 latency",
    "w3": "W3 fan-out",
    "w4": "W4 timers",
    "w5": "W5 trigger",
}


class WorkloadError(Exception):
    pass


def _check(results: list[Finished], what: str) -> None:
    bad = [r for r in results if not r.ok]
    if bad:
        raise WorkloadError(f"{what}: {len(bad)} of {len(results)} runs failed: {bad[0].error}")


async def _bounded(limit: int | None, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    if limit is None:
        return list(await asyncio.gather(*(job() for job in jobs)))
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


async def _concurrent_runs(
    engine: BenchEngine, shape: str, arg: float, runs: int, steps_per_run: int
) -> dict[str, Any]:
    """Start ``runs`` runs at once and wait for all: throughput and run latency."""
    await engine.prepare(shape, arg)
    warm = await engine.wait(await engine.start(shape, arg))  # deploy, caches, connections
    _check([warm], "warm-up run")

    async def one() -> tuple[float, Finished]:
        t_call = time.time()
        handle = await engine.start(shape, arg)
        return t_call, await engine.wait(handle)

    cpu0 = engine.cpu_seconds()
    t0 = time.time()
    pairs = await asyncio.gather(*(one() for _ in range(runs)))
    cpu = _cpu_delta(cpu0, engine.cpu_seconds())
    _check([f for _, f in pairs], f"{shape} runs")
    end = max(f.done_at for _, f in pairs)
    wall = max(end - t0, 1e-9)
    latencies = [(f.done_at - t_call) * 1000 for t_call, f in pairs]
    return {
        "runs": runs,
        "steps": runs * steps_per_run,
        "wall_s": wall,
        "steps_per_s": runs * steps_per_run / wall,
        "runs_per_s": runs / wall,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "cpu_s": cpu,
    }


def _cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 3) for k, v in after.items()}


async def w1_sequential(engine: BenchEngine, runs: int, steps: int) -> dict[str, Any]:
    """W1: ``runs`` concurrent runs of ``steps`` sequential no-op steps."""
    return await _concurrent_runs(engine, "seq", steps, runs, steps)


async def w2_latency(engine: BenchEngine, steps: int, reps: int) -> dict[str, Any]:
    """W2: one run of ``steps`` steps at a time, ``reps`` times: its latency."""
    await engine.prepare("seq", steps)
    _check([await engine.wait(await engine.start("seq", steps))], "warm-up run")
    samples: list[float] = []
    for _ in range(reps):
        t_call = time.time()
        finished = await engine.wait(await engine.start("seq", steps))
        _check([finished], "latency run")
        samples.append((finished.done_at - t_call) * 1000)
    return {
        "reps": reps,
        "median_ms": median(samples),
        "min_ms": min(samples),
        "p99_ms": percentile(samples, 99),
        "per_step_ms": median(samples) / steps,
    }


async def w3_fanout(engine: BenchEngine, runs: int, branches: int) -> dict[str, Any]:
    """W3: ``runs`` concurrent runs, each ``branches`` parallel no-op steps and a join."""
    return await _concurrent_runs(engine, "fan", branches, runs, branches)


async def w4_timers(engine: BenchEngine, runs: int, seconds: float) -> dict[str, Any]:
    """W4: ``runs`` runs each waiting ``seconds`` on a durable timer, then one step.

    Lateness = when the step after the timer started (the engine's record) minus (when
    the run's start was called + ``seconds``): what a user sees, including any delay in
    arming the timer under load. Every timer must fire."""
    await engine.prepare("timer", seconds)

    async def start_one() -> tuple[float, Any]:
        t_call = time.time()
        return t_call, await engine.start("timer", seconds)

    cpu0 = engine.cpu_seconds()
    t0 = time.time()
    started = await _bounded(engine.start_concurrency, [start_one for _ in range(runs)])
    started_s = time.time() - t0
    calls = [t_call for t_call, _ in started]
    finished: list[Finished] = await _bounded(
        engine.max_waiters, [(lambda h=h: engine.wait(h)) for _, h in started]
    )
    _check(finished, "timer runs")
    missing = [f for f in finished if f.mark is None]
    if missing:
        raise WorkloadError(f"{len(missing)} of {runs} timers did not fire")
    lateness = [
        ((f.mark or 0.0) - (t_call + seconds)) * 1000
        for t_call, f in zip(calls, finished, strict=True)
    ]
    rss = engine.peak_rss_mb()
    cpu = _cpu_delta(cpu0, engine.cpu_seconds())
    return {
        "runs": runs,
        "fired": runs - len(missing),
        "start_s": started_s,
        "wall_s": max(f.done_at for f in finished) - t0,
        "lateness_p50_ms": percentile(lateness, 50),
        "lateness_p99_ms": percentile(lateness, 99),
        "lateness_max_ms": max(lateness),
        "peak_rss_mb": sum(rss.values()),
        "peak_rss_detail_mb": rss,
        "cpu_s": cpu,
    }


async def w5_trigger(engine: BenchEngine, samples: int) -> dict[str, Any]:
    """W5: from an event accepted by the engine's API to its first step started.

    One event at a time; before each, a random pause (uniform in ``[0, W5_GAP_S)``, from a
    fixed seed) so that events arrive at any moment of a polling worker's cycle, as real
    events do, instead of right after the previous run ended (which would put every
    sample at the same point of the cycle)."""
    await engine.prepare("trigger", 1)
    warm = await engine.wait(await engine.trigger(1))  # NotApplicable propagates
    _check([warm], "warm-up trigger")
    gaps = random.Random(W5_SEED)
    out: list[float] = []
    for _ in range(samples):
        await asyncio.sleep(gaps.uniform(0.0, W5_GAP_S))
        t_call = time.time()
        finished = await engine.wait(await engine.trigger(1))
        _check([finished], "trigger run")
        assert finished.mark is not None
        out.append((finished.mark - t_call) * 1000)
    return {
        "samples": samples,
        "p50_ms": percentile(out, 50),
        "p99_ms": percentile(out, 99),
    }


async def run_workload(engine: BenchEngine, workload: str, size: dict[str, Any]) -> dict[str, Any]:
    fn = {
        "w1": w1_sequential,
        "w2": w2_latency,
        "w3": w3_fanout,
        "w4": w4_timers,
        "w5": w5_trigger,
    }[workload]
    return await fn(engine, **size)
