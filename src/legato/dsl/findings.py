"""Findings: what is wrong (or doubtful) in a workflow definition, where, and how to fix it.

A :class:`Finding` carries a stable rule code (``L101``), a severity, a JSON pointer
(RFC 6901) into the *source* document the user wrote, a message and a one-line fix.
The codes are listed in ``docs/reference/lint-rules.md``.

Readers translate canonical locations back to the source document with a
:data:`PointerMap`: canonical JSON pointer prefix -> source JSON pointer, e.g.
``/states/send_welcome`` -> ``/steps/1`` and ``/states/send_welcome/next`` ->
``/steps/1/next_steps/0``. The longest matching prefix wins; the rest of the pointer is
appended unchanged.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]

PointerMap = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in a definition.

    ``line`` and ``column`` (1-based) are set when the position in the text is known
    (syntax errors); ``pointer`` is always set (``""`` is the whole document).
    """

    code: str
    severity: Severity
    pointer: str
    message: str
    fix: str
    line: int | None = None
    column: int | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        where = self.pointer or "/"
        return f"{where}: {self.severity} {self.code}: {self.message} Fix: {self.fix}"

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "code": self.code,
            "severity": self.severity,
            "pointer": self.pointer,
            "message": self.message,
            "fix": self.fix,
        }
        if self.line is not None:
            data["line"] = self.line
            data["column"] = self.column
        return data


def error(code: str, pointer: str, message: str, fix: str) -> Finding:
    return Finding(code=code, severity="error", pointer=pointer, message=message, fix=fix)


def warning(code: str, pointer: str, message: str, fix: str) -> Finding:
    return Finding(code=code, severity="warning", pointer=pointer, message=message, fix=fix)


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.is_error for f in findings)


# ---- JSON pointers --------------------------------------------------------------------------


def escape(token: object) -> str:
    """Escape one reference token (RFC 6901)."""
    return str(token).replace("~", "~0").replace("/", "~1")


def join(base: str, *tokens: object) -> str:
    """``join("/states", "a/b", 0)`` -> ``"/states/a~1b/0"``."""
    return base + "".join("/" + escape(t) for t in tokens)


def source_pointer(pointer: str, pointers: PointerMap | None) -> str:
    """Translate a canonical pointer to the source document with the longest prefix."""
    if not pointers:
        return pointer
    probe = pointer
    while True:
        if probe in pointers:
            return pointers[probe] + pointer[len(probe) :]
        if not probe:
            return pointer
        probe = probe[: probe.rfind("/")]


def relocate(finding: Finding, pointers: PointerMap | None) -> Finding:
    """The same finding with its pointer translated to the source document."""
    if not pointers:
        return finding
    return Finding(
        code=finding.code,
        severity=finding.severity,
        pointer=source_pointer(finding.pointer, pointers),
        message=finding.message,
        fix=finding.fix,
        line=finding.line,
        column=finding.column,
    )


# ---- suggestions ----------------------------------------------------------------------------


def suggest(word: str, candidates: Iterable[str], *, n: int = 3) -> list[str]:
    """Close matches for ``word`` among ``candidates`` (best first)."""
    pool = sorted({c for c in candidates if isinstance(c, str)})
    return difflib.get_close_matches(word, pool, n=n, cutoff=0.6)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean `next`?"`` or ``""``."""
    close = suggest(word, candidates)
    if not close:
        return ""
    if len(close) == 1:
        return f"; did you mean `{close[0]}`?"
    return "; did you mean " + " or ".join(f"`{c}`" for c in close) + "?"


def one_of(candidates: Iterable[str], *, limit: int = 12) -> str:
    """```a`, `b` or `c``` for a fix text."""
    items = sorted(set(candidates))
    if len(items) > limit:
        items = [*items[:limit], "..."]
    if not items:
        return "(none)"
    quoted = [f"`{i}`" if i != "..." else i for i in items]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def article(word: str) -> str:
    """``"an `action`"``, ``"a `wait`"``: the word in backticks with its article."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} `{word}`"
