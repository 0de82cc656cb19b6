"""The profiled program: Legato embedded on SQLite running W1 (``rounds`` times).

``python -m bench.profile_target RUNS STEPS ROUNDS [pyinstrument-output]``; with
``BENCH_PROFILE_WORKLOAD=w4`` it runs W4 instead (RUNS timers of STEPS seconds), with
``w2`` W2 (RUNS runs of STEPS steps, one at a time).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

# imported before the profiler starts, so that imports are not in the profile
import legato.dsl.loader  # noqa: F401
from bench.engines.legato_embedded import LegatoEmbedded
from bench.workloads import w1_sequential, w2_latency, w4_timers


async def main(runs: int, steps: int, rounds: int) -> None:
    workload = os.environ.get("BENCH_PROFILE_WORKLOAD", "w1")
    async with LegatoEmbedded() as engine:
        for _ in range(rounds):
            t = time.perf_counter()
            if workload == "w2":
                print(await w2_latency(engine, steps, runs), file=sys.stderr)
                continue
            if workload == "w4":
                metrics = await w4_timers(engine, runs, float(steps))
                print(metrics, file=sys.stderr)
                continue
            metrics = await w1_sequential(engine, runs, steps)
            print(
                f"W1 {runs}x{steps}: {metrics['steps_per_s']:.0f} steps/s "
                f"({time.perf_counter() - t:.2f} s)",
                file=sys.stderr,
            )


if __name__ == "__main__":
    runs, steps, rounds = (int(a) for a in sys.argv[1:4])
    html = sys.argv[4] if len(sys.argv) > 4 else None
    if html:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
        asyncio.run(main(runs, steps, rounds))
        profiler.stop()
        with open(html, "w", encoding="utf-8") as fh:
            fh.write(profiler.output_text(unicode=True, color=False, show_all=False))
    else:
        asyncio.run(main(runs, steps, rounds))
