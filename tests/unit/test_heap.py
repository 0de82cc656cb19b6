"""legato.runtime.heap: long-running processes freeze what start-up left alive."""

from __future__ import annotations

import gc

from legato.runtime import heap


def test_settle_collects_then_freezes_what_is_alive() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    gc.unfreeze()
    kept = Cycle()
    Cycle()  # unreachable already: collected, not frozen
    try:
        heap.settle()
        assert gc.get_freeze_count() > 0
        assert any(obj is kept for obj in gc.get_objects()) is False  # frozen: not tracked
    finally:
        gc.unfreeze()
    assert any(obj is kept for obj in gc.get_objects())
