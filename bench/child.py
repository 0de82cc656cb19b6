"""Run one engine through some workloads in this process; print one JSON result line.

``python -m bench.child '<json spec>'`` with spec keys ``engine``, ``workloads`` (list),
``sizes`` ({workload: size}), ``options`` (engine options). The orchestrator
(:mod:`bench.runner`) starts one child per engine, workload and repetition, so each
measurement has a fresh process (and a fresh database, server and peak-RSS counter).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import time
import traceback
from typing import Any

from bench.engines import ENGINES
from bench.engines.base import BenchEngine, NotApplicable
from bench.workloads import run_workload
from legato.runtime import heap

RESULT_PREFIX = "BENCH-RESULT "
WORKLOAD_TIMEOUT_S = 1200.0


def make_engine(name: str, options: dict[str, Any]) -> BenchEngine:
    module, cls = ENGINES[name]
    engine_cls = getattr(importlib.import_module(module), cls)
    engine: BenchEngine = engine_cls(options)
    return engine


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"engine": spec["engine"], "workloads": {}}
    t0 = time.time()
    engine = make_engine(spec["engine"], spec.get("options") or {})
    out["label"] = engine.label
    try:
        async with engine:
            out["setup_s"] = time.time() - t0
            # Every engine's process is settled alike after its setup, as `legato worker`
            # and `legato serve` settle theirs: imports and setup are frozen out of the
            # cycle collector's walks (legato.runtime.heap).
            heap.settle()
            out["durability"] = engine.durability()
            out["versions"] = engine.versions()
            for workload in spec["workloads"]:
                size = spec["sizes"][workload]
                started = time.time()
                try:
                    metrics = await asyncio.wait_for(
                        run_workload(engine, workload, size), WORKLOAD_TIMEOUT_S
                    )
                    entry: dict[str, Any] = {"status": "ok", "metrics": metrics}
                except NotApplicable as exc:
                    entry = {"status": "n/a", "note": str(exc)}
                except Exception as exc:
                    entry = {
                        "status": "error",
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(),
                    }
                entry["size"] = size
                entry["elapsed_s"] = time.time() - started
                out["workloads"][workload] = entry
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    return out


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.loads(sys.argv[1])
    result = asyncio.run(run(spec))
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
