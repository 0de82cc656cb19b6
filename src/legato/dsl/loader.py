"""Load a workflow definition from text, a file or a parsed document.

::

    result = load_file("onboarding.yaml")
    definition = result.raise_for_errors()      # or look at result.findings

Every accepted format (canonical, ``states``, ``steps``, ``ordered``; see
``docs/reference/formats.md``) is read into the canonical :class:`Definition`, then
checked by :func:`legato.dsl.validate.validate`. Problems are :class:`Finding` objects
located by JSON pointer in the document the user wrote.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from legato.dsl.findings import Finding, did_you_mean, error, has_errors, one_of
from legato.dsl.formats import FORMATS, read
from legato.dsl.formats._common import FORMAT, SCHEMA, SYNTAX
from legato.dsl.formats._schema import schema_findings
from legato.dsl.formats.steps import STEP_TYPES
from legato.dsl.model import Definition
from legato.errors import DefinitionError, InputError

UNKNOWN_FORMAT = "unknown"
_JSON_START = re.compile(r"\s*[{\[]\s*\"")


@dataclass(frozen=True)
class LoadResult:
    """What loading a definition gave.

    ``definition`` is ``None`` when the document could not be read into the model (a
    syntax, format or schema error). It is set when only the validator found errors, so
    that tools can still show it: check :attr:`ok` or call :meth:`raise_for_errors`
    before running it.
    """

    definition: Definition | None
    findings: list[Finding]
    source: str
    format: str
    document: Any
    pointers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when there is a definition and no error finding (warnings are fine)."""
        return self.definition is not None and not has_errors(self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def raise_for_errors(self) -> Definition:
        """Return the definition, or raise :class:`DefinitionError` with every error."""
        if self.definition is None or has_errors(self.findings):
            raise DefinitionError(findings=self.errors, source=self.source)
        return self.definition


# ---- format detection -------------------------------------------------------------------------


def detect_format(doc: Mapping[str, Any], format: str | None = None) -> str:
    """The format of ``doc``: ``canonical``, ``states``, ``steps`` or ``ordered``.

    An explicit ``format`` argument or a top-level ``"format"`` key wins. Raises
    :class:`DefinitionError` when the format cannot be told.
    """
    fmt, problem = _detect(doc, format)
    if problem is not None or fmt is None:
        raise DefinitionError(findings=[problem] if problem else [])
    return fmt


def _detect(doc: Mapping[str, Any], explicit: str | None) -> tuple[str | None, Finding | None]:
    if explicit is None and "format" in doc:
        declared = doc["format"]
        if not isinstance(declared, str):
            return None, error(
                FORMAT,
                "/format",
                "`format` must be a string.",
                f"use one of {one_of(FORMATS)}",
            )
        explicit, where = declared, "/format"
    else:
        where = ""
    if explicit is not None:
        if explicit in FORMATS:
            return explicit, None
        return None, error(
            FORMAT,
            where,
            f"`{explicit}` is not a definition format.",
            f"use one of {one_of(FORMATS)}{did_you_mean(explicit, FORMATS)}",
        )
    workflow = doc.get("workflow")
    if isinstance(workflow, Mapping) and "states" in workflow:
        return "states", None
    if "states" in doc:
        return "canonical", None
    steps = doc.get("steps")
    if isinstance(steps, list):
        items = [s for s in steps if isinstance(s, Mapping)]
        if any("next_steps" in s for s in items):
            return "steps", None
        if (
            "trigger" in doc
            or "retry_policy" in doc
            or any("order" in s or "depends_on" in s for s in items)
        ):
            return "ordered", None
        if any(s.get("type") in STEP_TYPES for s in items):
            return "steps", None
        return "ordered", None
    return None, error(
        FORMAT,
        "",
        "Cannot tell the format of this definition: it has no `states`, "
        "`workflow.states` or `steps`.",
        f"add the workflow's states or steps, or say which format it is with `format:` "
        f"({one_of(FORMATS)})",
    )


# ---- loading ----------------------------------------------------------------------------------


def load_document(
    doc: Any,
    *,
    source: str = "<document>",
    format: str | None = None,
    validate: bool = True,
    actions: set[str] | None = None,
    services: Mapping[str, set[str]] | None = None,
    workflows: set[str] | None = None,
    default_name: str | None = None,
) -> LoadResult:
    """Read a parsed document (a dict) into a :class:`Definition` and validate it.

    ``actions``, ``services`` and ``workflows`` are passed to the validator (unknown
    names become errors); ``default_name`` names a workflow whose document has no
    ``name`` (the file's stem when loading a file).
    """
    if default_name is None:
        default_name = _stem(source)
    if not isinstance(doc, Mapping):
        what = "empty" if doc is None else f"a {type(doc).__name__}, not a mapping"
        not_mapping = error(
            FORMAT,
            "",
            f"The definition is {what}.",
            "write the definition as a mapping (name, states or steps, ...)",
        )
        return LoadResult(None, [not_mapping], source, UNKNOWN_FORMAT, doc)
    fmt, problem = _detect(doc, format)
    if problem is not None or fmt is None:
        return LoadResult(None, [problem] if problem else [], source, UNKNOWN_FORMAT, doc)

    try:
        reading = read(fmt, doc, default_name=default_name)
    except RecursionError:
        return LoadResult(None, [_too_deep()], source, fmt, doc)
    findings = list(reading.findings)
    definition: Definition | None = None
    if reading.data:
        try:
            definition = Definition.model_validate(reading.data)
        except RecursionError:
            findings.append(_too_deep())
        except ValidationError as exc:
            findings.extend(schema_findings(exc, reading.data, reading.pointers))
        except (TypeError, AttributeError) as exc:
            # A validator that raised something other than ValueError (e.g. a list where a
            # duration belongs): still a finding, never a crash on untrusted input.
            findings.append(
                error(
                    SCHEMA,
                    "",
                    f"The definition does not match the model: {exc}.",
                    "check that durations are strings like '30s' and that every field has "
                    "the type the reference gives",
                )
            )
    if has_errors(findings):
        definition = None
    if definition is not None and validate:
        from legato.dsl.validate import validate as run_validate

        try:
            findings.extend(
                run_validate(
                    definition,
                    actions=actions,
                    services=services,
                    workflows=workflows,
                    pointers=reading.pointers,
                )
            )
        except RecursionError:
            findings.append(_too_deep())
    return LoadResult(definition, findings, source, fmt, doc, dict(reading.pointers))


def load_text(
    text: str,
    *,
    source: str = "<string>",
    format: str | None = None,
    validate: bool = True,
    actions: set[str] | None = None,
    services: Mapping[str, set[str]] | None = None,
    workflows: set[str] | None = None,
    default_name: str | None = None,
) -> LoadResult:
    """Parse YAML or JSON text and load it (see :func:`load_document`)."""
    doc, problem = parse_text(text)
    if problem is not None:
        return LoadResult(None, [problem], source, UNKNOWN_FORMAT, None)
    return load_document(
        doc,
        source=source,
        format=format,
        validate=validate,
        actions=actions,
        services=services,
        workflows=workflows,
        default_name=default_name,
    )


def load_file(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    validate: bool = True,
    actions: set[str] | None = None,
    services: Mapping[str, set[str]] | None = None,
    workflows: set[str] | None = None,
) -> LoadResult:
    """Read and load a definition file (``.yaml``, ``.yml`` or ``.json``).

    Raises :class:`InputError` when the file cannot be read; problems in its content are
    findings.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(
            f"{file}: no such file; check the path", details={"path": str(file)}
        ) from exc
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{file}: not UTF-8 text (byte {exc.start}); save the definition as UTF-8",
            details={"path": str(file)},
        ) from exc
    except OSError as exc:
        raise InputError(
            f"{file}: cannot read it ({exc.strerror or exc})", details={"path": str(file)}
        ) from exc
    return load_text(
        text,
        source=str(file),
        format=format,
        validate=validate,
        actions=actions,
        services=services,
        workflows=workflows,
        default_name=file.stem,
    )


def parse_text(text: str) -> tuple[Any, Finding | None]:
    """Parse YAML or JSON into plain data; a syntax error is a finding with line and column.

    Text that looks like JSON (``{`` or ``[`` then a quoted string) is read as JSON, so
    its errors are JSON's (YAML would read ``{"a": }`` as a null); anything else as YAML.
    """
    if _JSON_START.match(text):
        try:
            return json.loads(text), None
        except json.JSONDecodeError as exc:
            return None, _syntax(exc.msg, exc.lineno, exc.colno, "JSON")
        except RecursionError:
            return None, _too_deep()
    try:
        return yaml.safe_load(text), None
    except RecursionError:
        return None, _too_deep()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            return None, _syntax(problem, None, None, "YAML")
        return None, _syntax(problem, mark.line + 1, mark.column + 1, "YAML")
    except yaml.YAMLError as exc:
        return None, _syntax(str(exc), None, None, "YAML")


def _syntax(problem: str, line: int | None, column: int | None, kind: str) -> Finding:
    where = f"line {line}, column {column}: " if line is not None else ""
    fix = (
        f"correct the {kind} syntax at line {line}, column {column}"
        if line is not None
        else f"correct the {kind} syntax"
    )
    return Finding(
        code=SYNTAX,
        severity="error",
        pointer="",
        message=f"{where}the text is not valid {kind}: {problem}.",
        fix=fix,
        line=line,
        column=column,
    )


def _too_deep() -> Finding:
    return error(
        SYNTAX,
        "",
        "The document is nested too deeply to read.",
        "flatten it: move deep parts into states of their own",
    )


def _stem(source: str) -> str | None:
    if not source or source.startswith("<"):
        return None
    return Path(source).stem or None
