"""The deterministic core: no I/O, no clock, no randomness, no globals."""

from legato.engine.machine import Program, apply, compile_definition, decide, replay, wanted
from legato.engine.state import RunState, RunStatus, StepStatus

__all__ = [
    "Program",
    "RunState",
    "RunStatus",
    "StepStatus",
    "apply",
    "compile_definition",
    "decide",
    "replay",
    "wanted",
]
