"""The service registry (``services.yaml``, in the shape of the External Service Interface).

::

    services:
      - name: hr-workday
        type: grpc
        endpoint: workday.internal:443
        auth:
          type: oauth2
          client_id: ${WORKDAY_CLIENT_ID}
          client_secret: ${WORKDAY_CLIENT_SECRET}
          token_url: https://workday.com/oauth/token
        capabilities: [employee.create, employee.update]

:func:`load_registry` reads the whole file into :class:`~legato.connectors.config.Registry`:

* ``${NAME}`` and ``${NAME:-default}`` in every string value are replaced from the
  environment before validation (``$${`` writes a literal ``${``).  Every variable that is
  not set (and has no default) is reported at once, with the service and field it is in.
* Every problem names the file, the service and the field path, and says how to fix it.
* Values interpolated where secrets go are remembered, so that
  :meth:`Secrets.from_registry <legato.connectors.secrets.Secrets.from_registry>` can mask
  them in logs, events and API output.

:func:`load_service_capabilities` is what ``legato lint --services`` needs: names and
capabilities only, leniently (no environment variables needed, no other field checked).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from legato.connectors.config import Registry, ServiceConfig
from legato.connectors.secrets import is_secret_variable, url_password
from legato.errors import InputError

__all__ = [
    "Registry",
    "interpolate",
    "load_registry",
    "load_service_capabilities",
    "parse_registry",
]

_VARIABLE = re.compile(
    r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$\{(?P<bad>[^}]*)\}?"
)
_SECRET_BLOCKS = frozenset({"auth", "headers"})
_AUTH_TYPES: tuple[str, ...] = ("oauth2", "api_key", "bearer", "mtls", "none")
_SERVICE_TYPES: tuple[str, ...] = get_args(ServiceConfig.model_fields["type"].annotation)


# ---- reading the file -------------------------------------------------------------------------


def _read_document(path: str | os.PathLike[str]) -> tuple[Path, Any]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(
            f"{file}: no such service registry file; check the path",
            details={"path": str(file)},
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{file}: cannot read the service registry ({exc})", details={"path": str(file)}
        ) from exc
    try:
        return file, yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(
            f"{file}: not valid YAML{where}: {exc.problem or exc}; correct the syntax",
            details={"path": str(file)},
        ) from exc
    except yaml.YAMLError as exc:
        raise InputError(
            f"{file}: not valid YAML: {exc}; correct the syntax", details={"path": str(file)}
        ) from exc


def _services_list(doc: Any, file: Path | str) -> list[Any]:
    services = doc.get("services") if isinstance(doc, Mapping) else None
    if not isinstance(services, list):
        raise InputError(
            f"{file}: expected a `services:` list, like `services: [{{name: hr, type: rest, "
            f"endpoint: 'https://hr.example', capabilities: [employee.create]}}]`",
            details={"path": str(file)},
        )
    return services


def _service_label(entry: Any, index: int) -> str:
    name = entry.get("name") if isinstance(entry, Mapping) else None
    if isinstance(name, str) and name.strip():
        return name
    return f"services[{index}]"


# ---- names and capabilities, leniently (legato lint --services) -----------------------------


def load_service_capabilities(path: str | os.PathLike[str]) -> dict[str, set[str]]:
    """Service name -> the operations it offers (its ``capabilities``, the names in its
    ``operations``, and those of its ``versions``).

    Lenient on purpose: ``${ENV}`` references stay as written (no variable needs to be
    set) and no other field is checked, so ``legato lint --services`` works on a
    registry before its secrets exist.  A service without capabilities maps to an empty
    set, which the validator reads as "any operation". Raises :class:`InputError` naming
    the file (and the entry) when the file is missing, is not YAML, or a service has no
    name or appears twice.
    """
    file, doc = _read_document(path)
    return _capabilities(doc, file)


def _capabilities(doc: Any, file: Path) -> dict[str, set[str]]:
    services = _services_list(doc, file)
    out: dict[str, set[str]] = {}
    for i, entry in enumerate(services):
        where = f"{file}: services[{i}]"
        if not isinstance(entry, Mapping):
            raise InputError(
                f"{where} is not a mapping; write each service as {{name: ..., type: ..., "
                "capabilities: [...]}",
                details={"path": str(file), "index": i},
            )
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError(
                f"{where} has no `name`; give every service a name (tasks refer to it)",
                details={"path": str(file), "index": i},
            )
        if name in out:
            raise InputError(
                f"{where}: service `{name}` is defined twice; keep one entry per service",
                details={"path": str(file), "index": i, "service": name},
            )
        names = _names_list(entry.get("capabilities"), f"{where} (`{name}`)", file, i, name)
        operations = entry.get("operations")
        if isinstance(operations, Mapping):
            names |= {str(k) for k in operations}
        versions = entry.get("versions")
        if isinstance(versions, Mapping):
            for version in versions.values():
                if isinstance(version, Mapping):
                    names |= _names_list(
                        version.get("capabilities"), f"{where} (`{name}`)", file, i, name
                    )
                    if isinstance(version.get("operations"), Mapping):
                        names |= {str(k) for k in version["operations"]}
        out[name] = names
    return out


def _names_list(caps: Any, where: str, file: Path, index: int, name: str) -> set[str]:
    if caps is None:
        return set()
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise InputError(
            f"{where}: `capabilities` must be a list of operation names",
            details={"path": str(file), "index": index, "service": name},
        )
    return set(caps)


# ---- ${ENV} interpolation -------------------------------------------------------------------


class _Interpolation:
    """Walks a document, replacing ``${NAME}`` / ``${NAME:-default}`` in string values."""

    def __init__(self, environ: Mapping[str, str], *, strict: bool) -> None:
        self.environ = environ
        self.strict = strict
        self.missing: list[tuple[str, str, str]] = []  # (variable, service, field path)
        self.malformed: list[tuple[str, str, str]] = []  # (text, service, field path)
        self.secrets: set[str] = set()

    def walk(self, value: Any, service: str, path: tuple[str | int, ...]) -> Any:
        if isinstance(value, str):
            return self.text(value, service, path)
        if isinstance(value, Mapping):
            return {k: self.walk(v, service, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, service, (*path, i)) for i, v in enumerate(value)]
        return value

    def text(self, text: str, service: str, path: tuple[str | int, ...]) -> str:
        if "$" not in text:
            return text
        secret_place = bool(path) and path[0] in _SECRET_BLOCKS

        def substitute(match: re.Match[str]) -> str:
            whole = match.group(0)
            if whole == "$${":
                return "${"
            if match.group("bad") is not None:
                self.malformed.append((whole, service, _dotted(path)))
                return whole
            name = match.group("name")
            default = match.group("default")
            if name in self.environ:
                value = self.environ[name]
            elif default is not None:
                value = default
            else:
                if self.strict:
                    self.missing.append((name, service, _dotted(path)))
                # Lenient mode keeps a placeholder so the entry still validates.
                value = f"<{name}>"
            if secret_place or is_secret_variable(name):
                self.secrets.add(value)
            return value

        return _VARIABLE.sub(substitute, text)


def interpolate(
    value: Any, environ: Mapping[str, str] | None = None, *, strict: bool = True
) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string of ``value`` (a parsed
    YAML/JSON document).  InputError naming every missing variable when ``strict``."""
    walker = _Interpolation(os.environ if environ is None else environ, strict=strict)
    result = walker.walk(value, "", ())
    if walker.missing:
        names = sorted({name for name, _, _ in walker.missing})
        raise InputError(
            f"environment variable(s) not set: {', '.join(names)}; set them, or give a "
            "default with ${NAME:-default}",
            details={"missing": names},
        )
    return result


# ---- the full loader ------------------------------------------------------------------------


def load_registry(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    require_env: bool = True,
) -> Registry:
    """Read ``services.yaml`` into a validated :class:`Registry`.

    ``environ`` (default ``os.environ``) supplies ``${NAME}`` values.  With
    ``require_env=False`` an unset variable becomes the placeholder ``<NAME>`` instead of
    an error (for tools that only need the shape, such as a linter).

    Raises :class:`InputError` listing every problem: unset variables (with the service
    and field each is used in), invalid fields (service, field path, what is wrong and
    how to fix it), and services defined twice.
    """
    file, doc = _read_document(path)
    return parse_registry(
        doc,
        environ=os.environ if environ is None else environ,
        source=str(file),
        require_env=require_env,
    )


def parse_registry(
    doc: Any,
    *,
    environ: Mapping[str, str] | None = None,
    source: str = "services.yaml",
    require_env: bool = True,
) -> Registry:
    """Like :func:`load_registry`, for a document already parsed (``source`` names it in
    messages)."""
    if isinstance(doc, Mapping):
        extra = sorted(str(k) for k in doc if k != "services")
        if extra and "services" in doc:
            raise InputError(
                f"{source}: unknown top-level key(s) {extra}; the file holds one `services:` list",
                details={"path": source, "keys": extra},
            )
    entries = _services_list(doc, source)
    walker = _Interpolation(os.environ if environ is None else environ, strict=require_env)
    interpolated: list[tuple[str, Any]] = []
    for i, entry in enumerate(entries):
        label = _service_label(entry, i)
        interpolated.append((label, walker.walk(entry, label, ())))

    if walker.missing:
        by_name: dict[str, list[str]] = {}
        for name, service, field in walker.missing:
            by_name.setdefault(name, []).append(f"service `{service}`, field `{field}`")
        lines = [f"{source}: {len(by_name)} environment variable(s) not set:"]
        lines += [f"  ${{{name}}} (used in {'; '.join(uses)})" for name, uses in by_name.items()]
        lines.append(
            "Set them in the environment of the process, or give a default with ${NAME:-default}."
        )
        raise InputError(
            "\n".join(lines),
            details={
                "path": source,
                "missing": [
                    {"variable": name, "service": service, "field": field}
                    for name, service, field in walker.missing
                ],
            },
        )

    problems: list[dict[str, str]] = []
    for text, service, field in walker.malformed:
        problems.append(
            {
                "service": service,
                "field": field,
                "problem": f"{text!r} is not a valid variable reference",
                "fix": "write ${NAME} or ${NAME:-default} (NAME: letters, digits, _), or "
                "$${ for a literal ${",
            }
        )

    services: list[ServiceConfig] = []
    seen: dict[str, int] = {}
    for i, (label, entry) in enumerate(interpolated):
        if not isinstance(entry, Mapping):
            problems.append(
                {
                    "service": label,
                    "field": "",
                    "problem": "the entry is not a mapping",
                    "fix": "write each service as {name: ..., type: ..., endpoint: ...}",
                }
            )
            continue
        if label in seen:
            problems.append(
                {
                    "service": label,
                    "field": "name",
                    "problem": f"service `{label}` is defined twice (services[{seen[label]}] "
                    f"and services[{i}])",
                    "fix": "keep one entry per service, or rename one of them",
                }
            )
            continue
        seen[label] = i
        entry_problems = _entry_problems(entry)
        validated: ServiceConfig | None = None
        try:
            validated = ServiceConfig.model_validate(entry)
        except ValidationError as exc:
            entry_problems += [_describe(error, entry) for error in exc.errors()]
        if entry_problems or validated is None:
            problems += [{"service": label, **p} for p in entry_problems]
        else:
            services.append(validated)

    if problems:
        order = {label: i for i, (label, _) in reversed(list(enumerate(interpolated)))}
        problems.sort(key=lambda p: order.get(p["service"], 0))
        lines = [f"{source}: {len(problems)} problem(s) in the service registry:"]
        for p in problems:
            where = f"service `{p['service']}`" + (f", field `{p['field']}`" if p["field"] else "")
            fix = f"; {p['fix']}" if p["fix"] else ""
            lines.append(f"  {where}: {p['problem']}{fix}")
        raise InputError("\n".join(lines), details={"path": source, "problems": problems})

    registry = Registry(services=tuple(services))
    secrets = set(walker.secrets)
    for config in services:
        for text in (config.endpoint, config.wsdl or ""):
            password = url_password(text)
            if password:
                secrets.add(password)
    registry._env_secrets = frozenset(secrets)
    return registry


def _entry_problems(entry: Mapping[str, Any]) -> list[dict[str, str]]:
    """Checks pydantic cannot express in the model."""
    problems: list[dict[str, str]] = []
    retry = entry.get("retry")
    top = entry.get("idempotency_header")
    nested = retry.get("idempotency_header") if isinstance(retry, Mapping) else None
    if top and nested and top != nested:
        problems.append(
            {
                "field": "idempotency_header",
                "problem": f"`idempotency_header` is {top!r} here and {nested!r} under `retry`",
                "fix": "set it in one place (either works)",
            }
        )
    return problems


# ---- explaining validation errors -----------------------------------------------------------


def _dotted(path: tuple[str | int, ...] | list[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _clean_loc(loc: tuple[Any, ...]) -> list[str | int]:
    parts: list[str | int] = []
    for i, part in enumerate(loc):
        # Discriminated unions put the tag in the location: auth.oauth2.client_id.
        if i > 0 and loc[i - 1] == "auth" and part in _AUTH_TYPES:
            continue
        if isinstance(part, str) and (part.startswith("function-") or "[" in part):
            continue  # validator wrappers
        parts.append(part if isinstance(part, int) else str(part))
    return parts


def _fix(error: Any, field: str, entry: Mapping[str, Any]) -> str:
    kind = error["type"]
    last = field.rsplit(".", 1)[-1] if field else ""
    if kind == "missing":
        if field == "auth.type" or (field.startswith("auth") and last == "type"):
            return f"add `type:` to the auth block: one of {', '.join(_AUTH_TYPES)}"
        return f"add `{last}`"
    if kind == "extra_forbidden":
        return f"remove `{last}` or correct its spelling (see docs/reference/services.md)"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"set `type:` to one of {', '.join(_AUTH_TYPES)}"
    if kind == "literal_error":
        expected = (error.get("ctx") or {}).get("expected")
        if field == "type":
            return f"use one of {', '.join(_SERVICE_TYPES)}"
        return f"use one of {expected}" if expected else "use one of the allowed values"
    if kind == "string_pattern_mismatch" and field == "name":
        return "use letters, digits, '.', '_' and '-', starting with a letter or digit"
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "less_than"):
        return "use a number in the allowed range"
    if kind in ("int_parsing", "int_type", "float_parsing", "float_type", "int_from_float"):
        return "write a number"
    if kind == "value_error":
        return ""  # our validators' messages already say how to fix it
    if "duration" in str(error.get("msg", "")):
        return "write a duration like '30s', '5m' or '2h'"
    return "correct the value"


def _describe(error: Any, entry: Mapping[str, Any]) -> dict[str, str]:
    field = _dotted(_clean_loc(tuple(error["loc"])))
    message = str(error.get("msg", "invalid"))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if not field and "version_route" in message:
        field = "version_route"
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    if error["type"] == "union_tag_invalid":
        tag = (error.get("ctx") or {}).get("tag")
        message = f"unknown auth type {tag!r}"
    if error["type"] == "union_tag_not_found":
        message = "the auth block has no `type`"
    return {"field": field, "problem": message, "fix": _fix(error, field, entry)}
