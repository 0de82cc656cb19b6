"""The Markdown report: engine x workload medians, Legato's ratios, durability."""

from __future__ import annotations

import math
from typing import Any

LEGATO = ("legato-sqlite", "legato-pg-1", "legato-pg-2", "legato-pg-4")
PEERS = ("dbos-sqlite", "dbos-pg", "temporal")
# which peers each Legato variant is compared with
PAIRS = {
    "legato-sqlite": ("dbos-sqlite", "dbos-pg", "temporal"),
    "legato-pg-1": ("dbos-pg", "temporal"),
    "legato-pg-2": ("dbos-pg", "temporal"),
    "legato-pg-4": ("dbos-pg", "temporal"),
}

# (column title, workload, metric, higher is better)
COLUMNS: list[tuple[str, str, str, bool]] = [
    ("W1 steps/s", "w1", "steps_per_s", True),
    ("W1 p50 ms", "w1", "p50_ms", False),
    ("W1 p99 ms", "w1", "p99_ms", False),
    ("W2 median ms", "w2", "median_ms", False),
    ("W3 steps/s", "w3", "steps_per_s", True),
    ("W3 p50 ms", "w3", "p50_ms", False),
    ("W3 p99 ms", "w3", "p99_ms", False),
    ("W4 lateness p99 ms", "w4", "lateness_p99_ms", False),
    ("W4 peak RSS MB", "w4", "peak_rss_mb", False),
    ("W5 p50 ms", "w5", "p50_ms", False),
    ("W5 p99 ms", "w5", "p99_ms", False),
]
RATIO_COLUMNS = [
    c
    for c in COLUMNS
    if c[2] in ("steps_per_s", "median_ms", "lateness_p99_ms", "peak_rss_mb") or c[0] == "W5 p50 ms"
]


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(engine: dict[str, Any], workload: str, metric: str) -> str:
    entry = engine.get("workloads", {}).get(workload)
    if entry is None:
        return "-"
    if entry["status"] == "n/a":
        return entry.get("note", "n/a")
    if entry["status"] != "ok":
        return "error"
    return fmt(entry["median"].get(metric))


def value(engine: dict[str, Any] | None, workload: str, metric: str) -> float | None:
    if engine is None:
        return None
    entry = engine.get("workloads", {}).get(workload)
    if not entry or entry["status"] != "ok":
        return None
    v = entry["median"].get(metric)
    return None if v is None or math.isnan(v) else float(v)


def ratio_cell(
    legato: dict[str, Any], peer: dict[str, Any], workload: str, metric: str, higher: bool
) -> str:
    entry = legato.get("workloads", {}).get(workload)
    if entry is not None and entry["status"] == "n/a":
        return "n/a"
    mine, theirs = value(legato, workload, metric), value(peer, workload, metric)
    if mine is None or theirs is None or mine <= 0 or theirs <= 0:
        return "-"
    r = mine / theirs if higher else theirs / mine
    return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def markdown(summary: dict[str, Any]) -> str:
    engines: dict[str, dict[str, Any]] = summary["engines"]
    reps = summary["reps"]
    partial = "" if summary.get("complete", True) else "PARTIAL (the run is not finished). "
    lines = [
        partial + f"Median of {reps} repetition{'s' if reps != 1 else ''}; "
        f"{summary['mode']} sizes: "
        + "; ".join(
            f"{w.upper()} {', '.join(f'{k}={v}' for k, v in size.items())}"
            for w, size in summary["sizes"].items()
        ),
        "",
        "| engine | " + " | ".join(c[0] for c in COLUMNS) + " |",
        "| --- | " + " | ".join("---:" for _ in COLUMNS) + " |",
    ]
    for name, engine in engines.items():
        if engine.get("skipped"):
            lines.append(
                f"| {name} | "
                + " | ".join([f"skipped: {engine['skipped']}"] + ["" for _ in COLUMNS[1:]])
                + " |"
            )
            continue
        lines.append(f"| {name} | " + " | ".join(cell(engine, c[1], c[2]) for c in COLUMNS) + " |")
    ratio_rows = []
    for mine, peers in PAIRS.items():
        if mine not in engines or engines[mine].get("skipped"):
            continue
        for peer in peers:
            if peer not in engines or engines[peer].get("skipped"):
                continue
            ratio_rows.append(
                f"| {mine} vs {peer} | "
                + " | ".join(
                    ratio_cell(engines[mine], engines[peer], c[1], c[2], c[3])
                    for c in RATIO_COLUMNS
                )
                + " |"
            )
    if ratio_rows:
        lines += [
            "",
            "Legato's ratio to each peer (higher = Legato better: throughput is Legato ÷ "
            "peer, times and memory are peer ÷ Legato):",
            "",
            "| pair | " + " | ".join(c[0] for c in RATIO_COLUMNS) + " |",
            "| --- | " + " | ".join("---:" for _ in RATIO_COLUMNS) + " |",
            *ratio_rows,
        ]
    curve = [(n, value(engines.get(f"legato-pg-{n}"), "w1", "steps_per_s")) for n in (1, 2, 4)]
    if any(v is not None for _, v in curve):
        lines += [
            "",
            "Legato on PostgreSQL, W1 steps/s by worker processes: "
            + ", ".join(f"{n} → {fmt(v)}" for n, v in curve),
        ]
    lines += ["", "| engine | durability | versions |", "| --- | --- | --- |"]
    for name, engine in engines.items():
        if engine.get("skipped"):
            continue
        versions = ", ".join(f"{k} {v}" for k, v in (engine.get("versions") or {}).items())
        lines.append(f"| {name} | {engine.get('durability', '?')} | {versions} |")
    errors = [
        f"- {name} {w}: {entry.get('errors')}"
        for name, engine in engines.items()
        for w, entry in engine.get("workloads", {}).items()
        if entry.get("errors")
    ]
    if errors:
        lines += ["", "Errors:", *errors]
    return "\n".join(lines) + "\n"
