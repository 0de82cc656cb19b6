"""What every benchmarked engine provides, in its own idiom.

The workloads (:mod:`bench.workloads`) are written once against this interface, so each
one runs the same logic on every engine. Four workflow shapes, all with no-op steps:

``seq`` (arg = steps)
    ``arg`` sequential no-op steps.
``fan`` (arg = branches)
    ``arg`` parallel no-op branches and a join.
``timer`` (arg = seconds)
    a durable timer of ``arg`` seconds, then one no-op step (the *mark*).
``trigger`` (arg unused)
    one no-op step (the *mark*), started by an event (see :meth:`BenchEngine.trigger`).

The *mark* is the wall-clock time (``time.time()``) at which the engine started that
step, as the engine itself recorded it.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from typing import Any


class NotApplicable(Exception):
    """This engine cannot run this workload (yet); the message says why."""


@dataclass(slots=True)
class Finished:
    ok: bool
    done_at: float
    """Wall time when the run ended (recorded by the engine where it records it)."""
    mark: float | None = None
    """Wall time when the marked step started (``timer``/``trigger`` shapes)."""
    error: str | None = None


class BenchEngine:
    """One engine under test. Use as ``async with Engine(options) as engine``."""

    name = "?"
    label = "?"
    max_waiters: int | None = None
    """Bound on concurrent ``wait`` calls (None: one per run)."""
    start_concurrency = 64
    """Runs started at once when a workload starts many (W4)."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    async def __aenter__(self) -> BenchEngine:
        await self.setup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.teardown()

    async def setup(self) -> None:
        pass

    async def teardown(self) -> None:
        pass

    async def prepare(self, shape: str, arg: float) -> None:
        """Register/deploy the workflow for ``shape`` before it is timed."""

    async def start(self, shape: str, arg: float) -> Any:
        """Start one run of ``shape`` and return a handle for :meth:`wait`."""
        raise NotImplementedError

    async def wait(self, handle: Any) -> Finished:
        raise NotImplementedError

    async def trigger(self, arg: float) -> Any:
        """Start a ``trigger`` run from an event accepted by the engine's API (W5): send
        the event, return a handle whose :meth:`wait` reports the mark (the first step's
        start). Legato posts a CloudEvent to ``legato serve`` (``legato_api.py``)."""
        raise NotApplicable("n/a")

    def durability(self) -> str:
        """The durability setting the engine runs with, in words."""
        return "?"

    def versions(self) -> dict[str, str]:
        return {}

    def child_pids(self) -> dict[str, int]:
        """Other processes that are part of this engine (servers, workers): name -> pid."""
        return {}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by this process and :meth:`child_pids`."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out = {"harness": usage.ru_utime + usage.ru_stime}
        for what, pid in self.child_pids().items():
            value = proc_cpu_seconds(pid)
            if value is not None:
                out[what] = value
        return out

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak resident memory of this process and of :meth:`child_pids`, in MB."""
        out = {"harness": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        for what, pid in self.child_pids().items():
            value = vm_hwm_mb(pid)
            if value is not None:
                out[what] = value
        return out


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a live process, in MB (Linux)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of a live process, in seconds (Linux)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def pg_backends_cpu_seconds(database: str) -> float:
    """CPU seconds used so far by the live PostgreSQL backends serving ``database``."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("postgres:") and f" {database} " in cmdline:
            total += proc_cpu_seconds(int(entry)) or 0.0
    return total
