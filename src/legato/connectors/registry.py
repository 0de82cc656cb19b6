"""The service registry (``services.yaml``, in the shape of the External Service Interface).

::

    services:
      - name: hr-workday
        type: grpc
        endpoint: workday.internal:443
        capabilities: [employee.create, employee.update]

For now only names and capabilities are read, for the validator (``legato lint
--services services.yaml``). ``${ENV}`` references are left as written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from legato.errors import InputError


def load_service_capabilities(path: str | os.PathLike[str]) -> dict[str, set[str]]:
    """Service name -> the operations it offers (its ``capabilities``).

    A service without ``capabilities`` maps to an empty set, which the validator reads as
    "any operation". Raises :class:`InputError` naming the file (and the entry) when the
    file is missing, is not YAML, or a service has no name.
    """
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
        doc = yaml.safe_load(text)
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
    return _capabilities(doc, file)


def _capabilities(doc: Any, file: Path) -> dict[str, set[str]]:
    services = doc.get("services") if isinstance(doc, Mapping) else None
    if not isinstance(services, list):
        raise InputError(
            f"{file}: expected a `services:` list, like `services: [{{name: hr, "
            f"capabilities: [employee.create]}}]`",
            details={"path": str(file)},
        )
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
        caps = entry.get("capabilities", [])
        if caps is None:
            caps = []
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise InputError(
                f"{where} (`{name}`): `capabilities` must be a list of operation names",
                details={"path": str(file), "index": i, "service": name},
            )
        out[name] = set(caps)
    return out
