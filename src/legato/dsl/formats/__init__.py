"""Readers that normalise each accepted format to the canonical model.

Each reader is ``read(doc, *, default_name=None) -> Reading``: a dict that
:class:`legato.dsl.model.Definition` accepts, a map from canonical JSON pointers back to
the source document, and the findings the reader saw. See ``docs/reference/formats.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from legato.dsl.formats import canonical, ordered, states, steps
from legato.dsl.formats._common import Reading

Reader = Callable[..., Reading]

READERS: dict[str, Callable[..., Reading]] = {
    canonical.FORMAT_NAME: canonical.read,
    states.FORMAT_NAME: states.read,
    steps.FORMAT_NAME: steps.read,
    ordered.FORMAT_NAME: ordered.read,
}

FORMATS: tuple[str, ...] = tuple(READERS)


def read(fmt: str, doc: Mapping[str, Any], *, default_name: str | None = None) -> Reading:
    """Read ``doc`` in format ``fmt`` (one of :data:`FORMATS`)."""
    return READERS[fmt](doc, default_name=default_name)


__all__ = ["FORMATS", "READERS", "Reader", "Reading", "read"]
