"""Legato workflow definitions for the four benchmark shapes (canonical format)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

MARK_STEP = "mark"
EVENT_TYPE = "bench.trigger"
"""The CloudEvents ``type`` that starts the ``trigger`` shape (W5)."""


def definition(shape: str, arg: float) -> dict[str, Any]:
    """The canonical definition of ``shape`` (see :mod:`bench.engines.base`)."""
    if shape == "seq":
        steps = int(arg)
        states: dict[str, Any] = {}
        for i in range(1, steps + 1):
            state: dict[str, Any] = {"type": "task", "action": "noop"}
            if i < steps:
                state["next"] = f"s{i + 1}"
            else:
                state["end"] = True
            states[f"s{i}"] = state
        return {"name": f"bench_seq_{steps}", "start_at": "s1", "states": states}
    if shape == "fan":
        branches = [
            {
                "name": f"b{i}",
                "start_at": "step",
                "states": {"step": {"type": "task", "action": "noop", "end": True}},
            }
            for i in range(1, int(arg) + 1)
        ]
        return {
            "name": f"bench_fan_{int(arg)}",
            "start_at": "fan",
            "states": {
                "fan": {"type": "parallel", "branches": branches, "join": "all", "end": True}
            },
        }
    if shape == "timer":
        return {
            "name": f"bench_timer_{int(arg * 1000)}ms",
            "start_at": "wait",
            "states": {
                "wait": {"type": "wait", "duration": float(arg), "next": MARK_STEP},
                MARK_STEP: {"type": "task", "action": "noop", "end": True},
            },
        }
    if shape == "trigger":
        return {
            "name": "bench_trigger",
            "trigger": {"type": "event", "event_name": EVENT_TYPE},
            "start_at": MARK_STEP,
            "states": {MARK_STEP: {"type": "task", "action": "noop", "end": True}},
        }
    raise ValueError(f"unknown shape {shape!r}")


def load(shape: str, arg: float) -> Any:
    from legato.dsl.loader import load_document

    return load_document(definition(shape, arg)).raise_for_errors()


def mark_of(steps: list[dict[str, Any]]) -> float | None:
    """Wall time at which the ``mark`` step started, from a run's step views."""
    for step in steps:
        if step.get("id") == MARK_STEP and step.get("started_at"):
            return datetime.fromisoformat(step["started_at"]).timestamp()
    return None


def sqlite_durability(synchronous: str) -> str:
    return (
        f"SQLite WAL, synchronous={synchronous}: a step is reported done only after its "
        "commit is durable (group commit: one fsync per batch of outcomes)"
        if synchronous == "FULL"
        else f"SQLite WAL, synchronous={synchronous}: a power cut may lose the last commits"
    )
