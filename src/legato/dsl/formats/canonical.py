"""The canonical format: the model as it is (``name``, ``version``, ``start_at``, ``states``).

Nothing is renamed, so pointers into the canonical dict are pointers into the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from legato.dsl.formats._common import Reading, version_text

FORMAT_NAME = "canonical"


def read(doc: Mapping[str, Any], *, default_name: str | None = None) -> Reading:
    data = {k: v for k, v in doc.items() if k != "format"}
    if "name" not in data and default_name:
        data["name"] = default_name
    if "version" in data and data["version"] is not None:
        data["version"] = version_text(data["version"])
    data.setdefault("source_format", FORMAT_NAME)
    return Reading(data=data)
