"""What every reader shares: the :class:`Reading` it returns and small helpers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from pydantic import BaseModel

from legato.dsl.findings import Finding, did_you_mean, error, join, one_of, warning

# Reader rule codes (the validator's are L1xx, see legato.dsl.validate).
SYNTAX = "L000"  # the text is not YAML/JSON
SCHEMA = "L001"  # the canonical model rejects the document
FORMAT = "L002"  # the format cannot be told, or the document is not a mapping
FIELD = "L003"  # a field this format does not know, or one in the wrong place
SHAPE = "L004"  # a field of the source format has the wrong shape or a missing part
BRANCHING = "L005"  # several next steps on a step that is not a condition
APPROXIMATION = "L006"  # a source setting the canonical model can only approximate

# Keys that API payloads carry but that are not part of a definition; readers ignore them.
METADATA_KEYS = frozenset(
    {
        "id",
        "tenant_id",
        "environment_id",
        "created_at",
        "updated_at",
        "created_by",
        "updated_by",
        "status",
    }
)


@dataclass
class Reading:
    """A reader's output.

    ``data`` is a dict that :meth:`legato.dsl.model.Definition.model_validate` accepts;
    ``pointers`` maps canonical JSON pointer prefixes to pointers into the source
    document (see :func:`legato.dsl.findings.source_pointer`); ``findings`` are the
    problems the reader saw, already located in the source document.
    """

    data: dict[str, Any]
    pointers: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def error(self, code: str, pointer: str, message: str, fix: str) -> None:
        self.findings.append(error(code, pointer, message, fix))

    def warning(self, code: str, pointer: str, message: str, fix: str) -> None:
        self.findings.append(warning(code, pointer, message, fix))

    def unknown_key(self, key: object, pointer: str, allowed: Iterable[str], where: str) -> None:
        allowed = list(allowed)
        hint = did_you_mean(str(key), allowed)
        self.error(
            FIELD,
            join(pointer, key),
            f"`{key}` is not a field of {where}.",
            f"remove it{hint}" if hint else f"remove it; the fields are {one_of(allowed)}",
        )

    def map(self, canonical: str, source: str) -> None:
        self.pointers[canonical] = source


def model_fields(cls: type[BaseModel]) -> set[str]:
    """Field names and aliases a model accepts."""
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        names.add(info.alias or name)
        names.add(name)
    return names


def is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(value, Mapping)


def version_text(value: object) -> str:
    """Versions are strings; YAML may read ``1.0`` as a number."""
    return value if isinstance(value, str) else str(value)
