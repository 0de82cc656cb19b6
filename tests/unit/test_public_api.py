"""`legato.__all__` is the public surface: sorted, complete, and every name importable."""

from __future__ import annotations

import legato


def test_all_is_sorted_and_unique() -> None:
    assert list(legato.__all__) == sorted(set(legato.__all__))


def test_every_public_name_exists() -> None:
    missing = [name for name in legato.__all__ if not hasattr(legato, name)]
    assert missing == []


def test_no_public_name_is_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(legato).items()
        if not name.startswith("_") and not isinstance(value, type(legato))
    }
    assert public - set(legato.__all__) == set()
