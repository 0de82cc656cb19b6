"""Where Legato's time goes per step: ``python -m bench profile``.

Runs Legato embedded on SQLite through W1 (200 runs x 10 no-op steps, 10 rounds) under

- py-spy (``--tool py-spy``, the default), sampling the thread that holds the GIL,
  whichever it is (the event loop or the store's SQLite thread): CPU spent in Python,
  not time spent waiting for the GIL; SQLite's C code and fsync run without the GIL and
  are not sampled. Summarised here as the top functions by own ("self") time and by
  inclusive time, in microseconds per step, start-up imports left out; and
- pyinstrument (the event-loop thread only; ``--tool pyinstrument``), as a call tree.

Outputs go to ``bench/results/profile-*.txt``.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    short = path
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            short = path.split(marker, 1)[1]
            break
    return f"{name} ({short})"


def summarise(raw: Path, steps: int, rate: int, top: int = 25, unit: str = "step") -> str:
    self_samples: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
        frames = [f for f in frames if not f.startswith(("thread", "process"))]
        if not frames or any(f.startswith("_find_and_load ") for f in frames):
            continue  # importing modules at start-up, not the work per step
        total += count
        threads[thread] += count
        self_samples[_frame_name(frames[-1])] += count
        for name in {_frame_name(f) for f in frames}:
            incl[name] += count

    def us_per_step(samples: int) -> float:
        return samples / rate / steps * 1e6

    lines = [
        f"{total} samples at {rate} Hz over {steps} {unit}s: "
        f"{us_per_step(total):.0f} µs of CPU-active samples per {unit}",
        "",
        f"By thread (µs per {unit}):",
    ]
    for thread, n in threads.most_common():
        lines.append(f"  {us_per_step(n):8.0f}  {thread}")
    lines += ["", f"Top {top} by own time (µs per {unit}, % of samples):"]
    for name, n in self_samples.most_common(top):
        lines.append(f"  {us_per_step(n):8.1f}  {100 * n / total:5.1f}%  {name}")
    lines += ["", f"Top {top} by inclusive time (µs per {unit}, % of samples):"]
    for name, n in incl.most_common(top):
        lines.append(f"  {us_per_step(n):8.1f}  {100 * n / total:5.1f}%  {name}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench profile")
    p.add_argument("--tool", choices=("py-spy", "pyinstrument"), default="py-spy")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument(
        "--workload",
        choices=("w1", "w2", "w4"),
        default="w1",
        help="w2: RUNS runs of STEPS steps one at a time; "
        "w4: RUNS timers of STEPS seconds (e.g. --workload w4 --runs 2000 --steps 2)",
    )
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), BENCH_PROFILE_WORKLOAD=args.workload)
    target = [
        sys.executable,
        "-m",
        "bench.profile_target",
        str(args.runs),
        str(args.steps),
        str(args.rounds),
    ]
    # every W1 round also runs one warm-up run of `steps` steps; W4 counts runs
    if args.workload == "w4":
        steps = args.runs * args.rounds
    elif args.workload == "w2":
        steps = (args.runs + 1) * args.steps * args.rounds
    else:
        steps = (args.runs + 1) * args.steps * args.rounds
    if args.tool == "pyinstrument":
        out = args.out / f"profile-{args.workload}-pyinstrument.txt"
        subprocess.run([*target, str(out)], cwd=ROOT, env=env, check=True)
        print(out.read_text(encoding="utf-8"))
        print(f"written: {out}", file=sys.stderr)
        return 0
    spy = py_spy()
    if spy is None:
        print("py-spy is not installed: pip install -e .[bench]", file=sys.stderr)
        return 1
    raw = args.out / f"profile-{args.workload}-py-spy.raw.tmp"  # raw stacks: large, not kept in git
    subprocess.run(
        [
            spy,
            "record",
            "--format",
            "raw",
            "--threads",
            # only the thread holding the GIL: CPU time, not time spent waiting for it
            # (SQLite's own C code and fsync run without the GIL and are not sampled)
            "--gil",
            "--nonblocking",
            "--rate",
            str(args.rate),
            "--output",
            str(raw),
            "--",
            *target,
        ],
        cwd=ROOT,
        env=env,
        check=True,
    )
    text = summarise(raw, steps, args.rate, unit="run" if args.workload == "w4" else "step")
    summary = args.out / f"profile-{args.workload}-py-spy.txt"
    summary.write_text(text, encoding="utf-8")
    print(text)
    print(f"written: {summary} (raw stacks: {raw})", file=sys.stderr)
    return 0
