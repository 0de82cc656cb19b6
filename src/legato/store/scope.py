"""The tenant and environment a stored row belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from legato.errors import UsageError


@dataclass(frozen=True, slots=True)
class Scope:
    """Every scoped store query filters by both fields (architecture invariant 5)."""

    tenant_id: str = "default"
    environment_id: str = "default"

    def __post_init__(self) -> None:
        for field, value in (
            ("tenant_id", self.tenant_id),
            ("environment_id", self.environment_id),
        ):
            if not isinstance(value, str) or not value:
                raise UsageError(f"Scope.{field} must be a non-empty string, got {value!r}")

    def __str__(self) -> str:
        return f"tenant {self.tenant_id!r}, environment {self.environment_id!r}"
