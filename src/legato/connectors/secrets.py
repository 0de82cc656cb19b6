"""Keeping the credentials of ``services.yaml`` out of logs, events and API output.

A loaded registry knows its secret values (:meth:`Secrets.from_registry`):

* every :class:`pydantic.SecretStr` field (oauth2 ``client_id``/``client_secret``, api_key
  ``value``, bearer ``token``);
* every value that ``${ENV}`` interpolation put into an ``auth`` or ``headers`` block, or
  into any field from a variable whose name says it is secret (``*PASSWORD*``,
  ``*SECRET*``, ``*TOKEN*``, ``*KEY*``, ``*CREDENTIAL*``);
* the password of any URL with credentials (``amqp://user:pass@host``);
* tokens fetched at run time (the OAuth2 provider adds each access token it receives).

:meth:`Secrets.redact` replaces every occurrence of a secret in a string, or in the strings
of a JSON-like value, with ``***``; :class:`SecretsFilter` does it to log records (message,
arguments, traceback, stack and extra attributes).  Install the filter on the *handlers*
that write logs (``install_log_filter``): a filter on a logger sees only records logged on
that very logger, not those of its children.

Values shorter than :data:`MIN_SECRET_LENGTH` characters are not masked: replacing every
``a`` of every log line would destroy the logs and hide nothing worth hiding.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from legato.connectors.config import Registry

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "Secrets",
    "SecretsFilter",
    "install_log_filter",
    "is_secret_variable",
    "redact",
    "url_password",
]

MASK = "***"
MIN_SECRET_LENGTH = 4
_SECRET_WORDS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "PASS")

T = TypeVar("T")

# The attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD_RECORD_ATTRS = frozenset(
    logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__
) | {"message", "asctime", "taskName"}


def is_secret_variable(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret."""
    upper = name.upper()
    return any(word in upper for word in _SECRET_WORDS)


def url_password(value: str) -> str | None:
    """The password of a URL with credentials (``scheme://user:password@host``), if any."""
    if "://" not in value or "@" not in value:
        return None
    try:
        password = urlsplit(value).password
    except ValueError:
        return None
    return password or None


class Secrets:
    """A thread-safe set of secret strings, and the means to mask them.

    It is mutable on purpose: a filter built on it keeps masking values added later (an
    OAuth2 token fetched after the filter was installed).
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self._ordered: tuple[str, ...] = ()
        self.update(values)

    @classmethod
    def from_registry(cls, registry: Registry) -> Secrets:
        """The secret values of a loaded registry (see the module's docstring)."""
        found: list[str] = []
        _collect(registry, found)
        found.extend(getattr(registry, "_env_secrets", None) or ())
        for service in registry.services:
            for text in (service.endpoint, service.wsdl or ""):
                password = url_password(text)
                if password:
                    found.append(password)
        return cls(found)

    # -- the set --------------------------------------------------------------------------

    def add(self, value: str | SecretStr | None) -> None:
        self.update([value])

    def update(self, values: Iterable[str | SecretStr | None]) -> None:
        plain: set[str] = set()
        for value in values:
            text = _plain(value)
            if text is not None and len(text) >= MIN_SECRET_LENGTH:
                plain.add(text)
        if not plain - self._values:
            return
        with self._lock:
            self._values = self._values | plain
            # Longest first, so a secret that contains another is masked whole.
            self._ordered = tuple(sorted(self._values, key=lambda s: (-len(s), s)))

    def discard(self, value: str | SecretStr | None) -> None:
        plain = _plain(value)
        if plain is None or plain not in self._values:
            return
        with self._lock:
            self._values = self._values - {plain}
            self._ordered = tuple(v for v in self._ordered if v != plain)

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and value in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ordered)

    def __repr__(self) -> str:  # never the values themselves
        return f"Secrets(<{len(self._values)} values>)"

    # -- masking --------------------------------------------------------------------------

    def contained_in(self, text: str) -> bool:
        """Whether ``text`` contains any of the secrets."""
        return any(secret in text for secret in self._ordered)

    def redact_text(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def redact(self, value: T) -> T:
        """``value`` with every secret masked: strings, and the strings (keys too) inside
        dicts, lists, tuples, sets, dataclasses and pydantic models (as dicts).  Other
        values are returned as they are."""
        if not self._ordered:
            return value
        return self._redact(value, 0)  # type: ignore[no-any-return]

    def _redact(self, value: Any, depth: int) -> Any:
        if depth > 64:
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, bytes | bytearray):
            try:
                text = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return value
            return self.redact_text(text).encode("utf-8") if self.contained_in(text) else value
        if isinstance(value, Mapping):
            return {
                self._redact(k, depth + 1): self._redact(v, depth + 1) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._redact(v, depth + 1) for v in value]
        if isinstance(value, tuple):
            items = tuple(self._redact(v, depth + 1) for v in value)
            return type(value)(*items) if hasattr(value, "_fields") else items
        if isinstance(value, set | frozenset):
            return type(value)(self._redact(v, depth + 1) for v in value)
        if isinstance(value, BaseModel):
            return self._redact(value.model_dump(mode="json"), depth + 1)
        if is_dataclass(value) and not isinstance(value, type):
            changes = {
                f.name: self._redact(getattr(value, f.name), depth + 1)
                for f in fields(value)
                if f.init
            }
            return replace(value, **changes)
        return value

    def log_filter(self) -> SecretsFilter:
        return SecretsFilter(self)


def redact(value: T, secrets: Secrets | Iterable[str]) -> T:
    """``value`` with every one of ``secrets`` masked (see :meth:`Secrets.redact`)."""
    bag = secrets if isinstance(secrets, Secrets) else Secrets(secrets)
    return bag.redact(value)


class SecretsFilter(logging.Filter):
    """A logging filter that masks secrets in records; it never drops a record.

    The message is formatted (``msg % args``) and masked, and the arguments dropped; an
    exception's traceback is formatted and masked into ``exc_text`` (``exc_info`` is
    cleared so no formatter renders the raw exception again); ``stack_info`` and
    attributes passed with ``extra=`` are masked too.
    """

    def __init__(self, secrets: Secrets) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: mask what we have
            message = f"{record.msg} {record.args}"
        record.msg = secrets.redact_text(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = secrets.redact_text(text.rstrip("\n"))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = secrets.redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = secrets.redact_text(record.stack_info)
        if hasattr(record, "message"):
            record.message = record.msg
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD_RECORD_ATTRS:
                record.__dict__[name] = secrets.redact(value)
        return True


def install_log_filter(
    secrets: Secrets | SecretsFilter,
    target: logging.Logger | logging.Handler | str | None = None,
) -> SecretsFilter:
    """Install a :class:`SecretsFilter` on ``target`` and return it.

    ``target`` is a handler, or a logger (a name; None is the root logger): on a logger the
    filter goes on the logger itself and on each handler it has now, so records its
    children propagate to those handlers are masked as well.  Remove it with
    ``target.removeFilter(filter)`` (and from the handlers).
    """
    log_filter = secrets if isinstance(secrets, SecretsFilter) else SecretsFilter(secrets)
    if isinstance(target, logging.Handler):
        target.addFilter(log_filter)
        return log_filter
    logger = target if isinstance(target, logging.Logger) else logging.getLogger(target)
    logger.addFilter(log_filter)
    for handler in logger.handlers:
        handler.addFilter(log_filter)
    return log_filter


def _plain(value: str | SecretStr | None) -> str | None:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value if isinstance(value, str) else None


def _collect(value: Any, found: list[str]) -> None:
    if isinstance(value, SecretStr):
        found.append(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect(getattr(value, name), found)
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, found)
