"""The per-run hash chain over the event log (architecture invariant 6).

Pure functions, no I/O.  Each event's hash covers the previous event's hash, its own
run id, sequence number, type, timestamp and payload exactly as stored (the JSON text
and the ISO-8601 text), so verifying needs no re-serialisation and any edit of a
stored column, a deletion or a reordering breaks the chain from that event on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import NamedTuple

GENESIS = "0" * 64
"""The ``prev_hash`` of a run's first event."""


def event_hash(
    prev_hash: str, run_id: str, seq: int, type: str, at_iso: str, payload_json: str
) -> str:
    """SHA-256 (hex) over an unambiguous encoding of the event's stored columns.

    The fields are encoded as a JSON array, so no choice of field contents can make two
    different events encode to the same bytes.
    """
    encoded = json.dumps(
        [prev_hash, run_id, seq, type, at_iso, payload_json],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


class ChainRow(NamedTuple):
    """An event's stored columns, as :func:`verify` reads them."""

    run_id: str
    seq: int
    type: str
    at: str
    payload: str
    prev_hash: str
    hash: str


def verify(rows: Iterable[ChainRow]) -> int | None:
    """Check one run's events, given in ``seq`` order.

    Returns the sequence number of the first event where the chain breaks: whose
    ``prev_hash`` is not the previous event's hash (``GENESIS`` for event 1), whose
    ``hash`` does not match its contents, or that is missing (a gap in the numbering).
    Returns ``None`` when the chain is intact.
    """
    expected_seq = 1
    prev = GENESIS
    for row in rows:
        if row.seq != expected_seq:
            return expected_seq
        if row.prev_hash != prev:
            return row.seq
        if row.hash != event_hash(prev, row.run_id, row.seq, row.type, row.at, row.payload):
            return row.seq
        prev = row.hash
        expected_seq += 1
    return None
