"""The event hash chain (store/chain.py): pure functions, no database."""

from __future__ import annotations

import hashlib

import pytest

from legato.store.chain import GENESIS, ChainRow, event_hash, verify

AT = "2024-01-01T00:00:00.000000Z"


def _chain(n: int, run_id: str = "run-1") -> list[ChainRow]:
    rows, prev = [], GENESIS
    for seq in range(1, n + 1):
        payload = f'{{"n":{seq}}}'
        digest = event_hash(prev, run_id, seq, "StepCompleted", AT, payload)
        rows.append(ChainRow(run_id, seq, "StepCompleted", AT, payload, prev, digest))
        prev = digest
    return rows


def test_genesis_is_64_zeros() -> None:
    assert GENESIS == "0" * 64


def test_event_hash_is_pinned_to_its_encoding() -> None:
    # Stored chains must keep verifying: this encoding may never change.
    encoded = (
        '["' + GENESIS + '","run-1",1,"RunStarted","2024-01-01T00:00:00.000000Z",'
        '"{\\"input\\":{\\"x\\":1}}"]'
    ).encode()
    expected = hashlib.sha256(encoded).hexdigest()
    assert event_hash(GENESIS, "run-1", 1, "RunStarted", AT, '{"input":{"x":1}}') == expected
    assert expected == "cf9d3e4faf1f5871d8b4845fda7ed1a89a61447e707e7819cc64250fec0ac8da"


@pytest.mark.parametrize(
    "other",
    [
        ("1" * 64, "run-1", 1, "T", AT, "{}"),
        (GENESIS, "run-2", 1, "T", AT, "{}"),
        (GENESIS, "run-1", 2, "T", AT, "{}"),
        (GENESIS, "run-1", 1, "U", AT, "{}"),
        (GENESIS, "run-1", 1, "T", "2024-01-01T00:00:00.000001Z", "{}"),
        (GENESIS, "run-1", 1, "T", AT, '{"a":1}'),
    ],
)
def test_every_field_is_covered(other: tuple[str, str, int, str, str, str]) -> None:
    assert event_hash(GENESIS, "run-1", 1, "T", AT, "{}") != event_hash(*other)


def test_field_boundaries_are_unambiguous() -> None:
    # Moving characters from one field to the next must change the hash.
    g = GENESIS
    assert event_hash(g, "ab", 1, "c", AT, "{}") != event_hash(g, "a", 1, "bc", AT, "{}")
    assert event_hash(g, "r", 1, "T", AT, '"x"') != event_hash(g, "r", 1, 'T"', AT, "x")


def test_intact_chain_verifies() -> None:
    assert verify(_chain(5)) is None
    assert verify([]) is None


def test_edited_payload_is_found() -> None:
    rows = _chain(5)
    rows[2] = rows[2]._replace(payload='{"n":99}')
    assert verify(rows) == 3


def test_edited_hash_breaks_the_next_link() -> None:
    rows = _chain(5)
    forged = event_hash(rows[1].prev_hash, "run-1", 2, "StepCompleted", AT, '{"n":99}')
    rows[1] = rows[1]._replace(payload='{"n":99}', hash=forged)
    assert verify(rows) == 3  # row 2 is self-consistent; row 3 no longer links to it


def test_wrong_first_prev_hash_is_found() -> None:
    rows = _chain(2)
    rows[0] = rows[0]._replace(prev_hash="f" * 64)
    assert verify(rows) == 1


def test_missing_event_is_found() -> None:
    rows = _chain(5)
    del rows[1]
    assert verify(rows) == 2


def test_event_moved_to_another_run_is_found() -> None:
    rows = _chain(3)
    rows[1] = rows[1]._replace(run_id="run-2")
    assert verify(rows) == 2
