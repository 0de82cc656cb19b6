"""Activities: the Python functions a task step runs.

A host application marks its functions with :func:`activity` and gives them to an
:class:`ActivityRegistry`; a task step whose ``action`` names one runs it::

    import legato

    @legato.activity("assign_plan", timeout="30s")
    async def assign_plan(customer_id: str, plan_id: str, *, ctx: legato.ActivityContext):
        ...
        return {"subscription_id": sub_id}

    async with ActivityRegistry() as registry:
        registry.include_builtins()
        registry.register(my_module)          # every @activity in it
        result = await registry.invoke("assign_plan", {"customer_id": "c1", ...}, ctx)

How the input reaches the function
    A dict input is passed as keyword arguments when the signature accepts them by name;
    otherwise the whole input is passed as the one positional argument.  A function that
    always wants the whole input declares a positional-only parameter (``def f(data, /)``).
    A keyword parameter named ``ctx`` receives the :class:`ActivityContext`.

What comes back
    The return value must be JSON data; it is returned normalised (tuples become lists),
    exactly as it will be read back from the event log on replay.

Failures
    :class:`~legato.errors.StepError` passes through; ``TimeoutError`` becomes TIMEOUT;
    ``httpx`` errors are classified by status and type (:mod:`legato.net`); any other
    exception is a bug in the activity and becomes RETRYABLE (retried per the step's
    policy), with its type and message in ``details``.

The decorator only marks a function: there is no global registry.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import importlib
import inspect
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import httpx

from legato.dsl.durations import parse_duration
from legato.errors import (
    ActivityNotFound,
    ErrorClass,
    InputError,
    StepError,
    UsageError,
)
from legato.net import GuardedTransport, NetworkPolicy, Resolver, step_error_from_httpx

if TYPE_CHECKING:
    from types import TracebackType

    from legato.actions.send_email import EmailSettings
    from legato.settings import Settings

__all__ = ["ActivityContext", "ActivityInfo", "ActivityRegistry", "activity", "activity_info"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__legato_activity__"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_log = logging.getLogger("legato.activity")


# ---- the decorator ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityInfo:
    """What :func:`activity` records on a function."""

    name: str
    timeout: float | None = None


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(
            f"{name!r} is not a valid activity name; use letters, digits, '_', '-' or '.', "
            "starting with a letter or '_' (for example 'assign_plan')"
        )
    return name


def _check_timeout(timeout: float | str | None) -> float | None:
    if timeout is None:
        return None
    try:
        seconds = parse_duration(timeout)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"activity timeout: {exc}") from exc
    if seconds <= 0:
        raise UsageError(f"activity timeout must be positive, got {timeout!r}")
    return seconds


@overload
def activity(name: F, *, timeout: float | str | None = None) -> F: ...
@overload
def activity(
    name: str | None = None, *, timeout: float | str | None = None
) -> Callable[[F], F]: ...
def activity(
    name: str | Callable[..., Any] | None = None, *, timeout: float | str | None = None
) -> Any:
    """Mark a function (async or sync) as a Legato activity named ``name``.

    ``name`` defaults to the function's name; ``timeout`` (seconds or a duration such as
    ``"30s"``) bounds one attempt.  Nothing is registered: give the function, or its
    module, to :meth:`ActivityRegistry.register`.  Also usable bare: ``@activity``.
    """
    if callable(name):
        return activity(None, timeout=timeout)(name)
    seconds = _check_timeout(timeout)
    if name is not None:
        _check_name(name)

    def mark(fn: F) -> F:
        if not callable(fn):
            raise UsageError(f"@activity marks a function, not {type(fn).__name__}")
        act_name = _check_name(name or getattr(fn, "__name__", None))
        setattr(fn, _MARK, ActivityInfo(name=act_name, timeout=seconds))
        return fn

    return mark


def activity_info(fn: object) -> ActivityInfo | None:
    """The :class:`ActivityInfo` that :func:`activity` put on ``fn``, if any."""
    info = getattr(fn, _MARK, None)
    return info if isinstance(info, ActivityInfo) else None


# ---- the context --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityContext:
    """What an activity may know about the step it runs for (a keyword parameter ``ctx``).

    ``idempotency_key`` is the same on every attempt of the step: send it to services so
    a retried call has its effect once.  ``http`` is the registry's shared client, guarded
    by its :class:`~legato.net.NetworkPolicy`; ``logger`` carries run_id and step.
    """

    run_id: str
    workflow: str
    step: str
    attempt: int = 1
    idempotency_key: str
    tenant_id: str = "default"
    environment_id: str = "default"
    http: httpx.AsyncClient = field(repr=False, compare=False)
    logger: logging.LoggerAdapter[logging.Logger] = field(repr=False, compare=False)
    run_input: Any = field(default=None, repr=False, compare=False)
    """The run's input: the trigger's data (seed 002 steps read ``customer_id`` from it)."""

    def __post_init__(self) -> None:
        for name in ("run_id", "workflow", "step", "idempotency_key"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise UsageError(f"ActivityContext.{name} must be a non-empty string")
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int):
            raise UsageError("ActivityContext.attempt must be an int")
        if self.attempt < 1:
            raise UsageError(f"ActivityContext.attempt counts from 1, got {self.attempt}")


# ---- the registry -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    fn: Callable[..., Any]
    timeout: float | None
    builtin: bool
    signature: inspect.Signature | None
    is_async: bool
    wants_ctx: bool
    # which call form binds, by the input's shape (its keys, or None / one value): the
    # answer depends only on the signature and that shape, and binding costs ~10 µs
    forms: dict[Any, int] = field(default_factory=dict)


_KEYWORDS, _NOTHING, _ONE = 0, 1, 2  # the call forms _bind tries, in this order
_MAX_FORMS = 256


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _entry(name: str, fn: Callable[..., Any], *, builtin: bool) -> _Entry:
    info = activity_info(fn)
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    wants_ctx = signature is not None and any(
        p.name == "ctx"
        and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for p in signature.parameters.values()
    )
    return _Entry(
        name=name,
        fn=fn,
        timeout=info.timeout if info else None,
        builtin=builtin,
        signature=signature,
        is_async=_is_async(fn),
        wants_ctx=wants_ctx,
    )


def _bind(
    entry: _Entry, payload: Any, ctx: ActivityContext
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Arguments for one call: the dict as keywords if they bind, else one positional."""
    extra: dict[str, Any] = {"ctx": ctx} if entry.wants_ctx else {}
    sig = entry.signature
    if isinstance(payload, dict) and "ctx" in payload and entry.wants_ctx:
        raise StepError(
            f"the input of activity {entry.name!r} has a key 'ctx', which is reserved for "
            "the activity context; rename it",
            error_class=ErrorClass.VALIDATION,
            details={"activity": entry.name},
        )
    if sig is None:  # a builtin or C callable without a signature: try the plain forms
        return ((), {**payload, **extra}) if isinstance(payload, dict) else ((payload,), extra)
    keyed = isinstance(payload, dict) and all(isinstance(k, str) for k in payload)
    shape: Any = frozenset(payload) if keyed else (payload is None)
    form = entry.forms.get(shape)
    if form is None:
        form = _bind_form(entry, sig, payload, keyed, extra)
        if len(entry.forms) < _MAX_FORMS:
            entry.forms[shape] = form
    if form == _KEYWORDS:
        return (), {**payload, **extra}
    if form == _NOTHING:
        return (), dict(extra)
    return (payload,), extra


def _bind_form(
    entry: _Entry, sig: inspect.Signature, payload: Any, keyed: bool, extra: dict[str, Any]
) -> int:
    attempts: list[tuple[int, tuple[Any, ...], dict[str, Any]]] = []
    if keyed:
        attempts.append((_KEYWORDS, (), {**payload, **extra}))
    if payload is None:
        attempts.append((_NOTHING, (), dict(extra)))
    attempts.append((_ONE, (payload,), dict(extra)))
    problem = ""
    for form, args, kwargs in attempts:
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            problem = problem or str(exc)
            continue
        return form
    raise StepError(
        f"activity {entry.name!r} does not accept this input: {problem}; the step's input "
        f"must match the parameters {entry.name}{sig}",
        error_class=ErrorClass.VALIDATION,
        details={"activity": entry.name, "problem": problem, "signature": str(sig)},
    )


def _to_json(name: str, value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StepError(
            f"activity {name!r} returned a value that is not JSON data ({exc}); return "
            "dicts, lists, strings, numbers, booleans or None",
            error_class=ErrorClass.VALIDATION,
            details={"activity": name, "problem": str(exc)},
        ) from exc


def _classify(name: str, exc: Exception) -> StepError:
    if isinstance(exc, StepError):
        return exc
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
        return StepError(
            f"activity {name!r} timed out",
            error_class=ErrorClass.TIMEOUT,
            details={"activity": name, "exception_type": type(exc).__name__},
        )
    if isinstance(exc, httpx.HTTPError):
        error = step_error_from_httpx(exc)
        error.details.setdefault("activity", name)
        return error
    return StepError(
        f"activity {name!r} raised {type(exc).__name__}: {exc}",
        error_class=ErrorClass.RETRYABLE,
        details={
            "activity": name,
            "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception_message": str(exc),
        },
    )


class ActivityRegistry:
    """The activities a runtime can run, by name; owner of the shared HTTP client.

    ``network`` guards the shared client (``ctx.http`` and the ``http_request`` action);
    ``email`` configures the ``send_email`` action.  Use it as an async context manager:
    the client is opened on entry and closed on exit.
    """

    def __init__(
        self,
        *,
        network: NetworkPolicy | None = None,
        email: EmailSettings | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.network = network or NetworkPolicy()
        if email is None:
            from legato.actions.send_email import EmailSettings

            email = EmailSettings()
        self.email = email
        self._resolver = resolver
        self._entries: dict[str, _Entry] = {}
        self._http: httpx.AsyncClient | None = None
        self._state = "new"

    # -- registration --

    def register(self, fn_or_module: Any, name: str | None = None) -> Any:
        """Register a function (under ``name``, its @activity name, or its own name) or
        every @activity-marked function of a module.  Returns what it was given."""
        if isinstance(fn_or_module, ModuleType):
            if name is not None:
                raise UsageError("register(module) takes no name; name each @activity instead")
            found = [
                (info.name, value)
                for value in vars(fn_or_module).values()
                if (info := activity_info(value)) is not None
            ]
            if not found:
                raise UsageError(
                    f"module {fn_or_module.__name__!r} has no function marked with @legato.activity"
                )
            for act_name, fn in found:
                self._add(act_name, fn, builtin=False)
            return fn_or_module
        if not callable(fn_or_module):
            raise UsageError(
                f"register() takes a function or a module, not {type(fn_or_module).__name__}"
            )
        info = activity_info(fn_or_module)
        given = name or (info.name if info else getattr(fn_or_module, "__name__", None))
        self._add(_check_name(given), fn_or_module, builtin=False)
        return fn_or_module

    def include_builtins(self) -> ActivityRegistry:
        """Add the built-in actions (log, set, noop, sleep, fail, flaky, http_request,
        send_email); activities registered under the same names keep precedence."""
        from legato.actions.builtins import builtin_activities

        for act_name, fn in builtin_activities(email=self.email):
            self._add(act_name, fn, builtin=True)
        return self

    def _add(self, name: str, fn: Callable[..., Any], *, builtin: bool) -> None:
        old = self._entries.get(name)
        if old is not None:
            if builtin and not old.builtin:
                _log.debug("activity %r overrides the built-in of the same name", name)
                return
            if not builtin and old.builtin:
                _log.debug("activity %r overrides the built-in of the same name", name)
            elif old.fn is not fn and not builtin:
                raise UsageError(
                    f"two activities are named {name!r} ({_qualname(old.fn)} and "
                    f"{_qualname(fn)}); give one another name with @legato.activity('...')"
                )
        self._entries[name] = _entry(name, fn, builtin=builtin)

    def register_import_path(self, path: str) -> None:
        """Register ``"pkg.module"`` (its @activity functions) or ``"pkg.module:function"``."""
        self.register(_import(path))

    @classmethod
    def from_import_paths(
        cls,
        paths: Iterable[str],
        *,
        builtins: bool = True,
        network: NetworkPolicy | None = None,
        email: EmailSettings | None = None,
        resolver: Resolver | None = None,
    ) -> ActivityRegistry:
        """A registry with the built-ins (unless ``builtins=False``) and the activities
        found at each import path (``"pkg.module"`` or ``"pkg.module:function"``)."""
        if isinstance(paths, str):
            paths = [paths]
        registry = cls(network=network, email=email, resolver=resolver)
        if builtins:
            registry.include_builtins()
        for path in paths:
            registry.register_import_path(path)
        return registry

    @classmethod
    def from_settings(cls, settings: Settings) -> ActivityRegistry:
        """A registry configured from :class:`legato.settings.Settings`: the built-ins, the
        network policy (``allow_private_networks``, ``allowed_hosts``), the SMTP server
        (``smtp_*``) and the activities at ``settings.activities``."""
        from legato.actions.send_email import EmailSettings

        network = NetworkPolicy(
            allow_private=settings.allow_private_networks,
            allowed_hosts=frozenset(settings.allowed_hosts),
        )
        email = EmailSettings(
            host=settings.smtp_host,
            port=settings.smtp_port,
            user=settings.smtp_user,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
        )
        return cls.from_import_paths(settings.activities, network=network, email=email)

    @staticmethod
    def import_paths(paths: Iterable[str]) -> list[Any]:
        """Import each path (``"pkg.module"`` or ``"pkg.module:function"``); the modules and
        functions, ready for :meth:`register`.  InputError names a path that fails."""
        if isinstance(paths, str):
            paths = [paths]
        return [_import(path) for path in paths]

    @classmethod
    def known_names(cls, paths: Iterable[str] = ()) -> set[str]:
        """The activity names a definition may use: the built-ins and those at ``paths``
        (for validating definitions without opening a registry)."""
        return cls.from_import_paths(paths).names()

    # -- lookup --

    def names(self) -> set[str]:
        return set(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        """The function registered as ``name``; ActivityNotFound (with a suggestion) if none."""
        return self._get(name).fn

    def _get(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is not None:
            return entry
        known = sorted(self._entries)
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(known) if known else "none"
        raise ActivityNotFound(
            f"no activity is registered as {name!r}.{hint} Known activities: {listing}. "
            "Register it with ActivityRegistry.register() (mark it with @legato.activity)",
            details={"name": name, "known": known, "suggestion": close[0] if close else None},
        )

    # -- calling --

    async def invoke(
        self,
        name: str,
        input: Any,
        ctx: ActivityContext,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run activity ``name`` with ``input`` for one attempt; return its JSON result.

        ``timeout`` (seconds, e.g. the step's) overrides the activity's own.  Every failure
        is raised as a classified :class:`~legato.errors.StepError`.
        """
        entry = self._get(name)
        limit = timeout if timeout is not None else entry.timeout
        try:
            args, kwargs = _bind(entry, copy.deepcopy(input), ctx)
            async with asyncio.timeout(limit):
                if entry.is_async:
                    result = await entry.fn(*args, **kwargs)
                else:
                    result = await asyncio.to_thread(entry.fn, *args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            error = _classify(name, exc)
            if error is exc:
                raise
            raise error from exc
        return _to_json(name, result)

    # -- resources --

    def context(
        self,
        *,
        run_id: str,
        workflow: str,
        step: str,
        attempt: int = 1,
        idempotency_key: str | None = None,
        tenant_id: str = "default",
        environment_id: str = "default",
        run_input: Any = None,
    ) -> ActivityContext:
        """An :class:`ActivityContext` wired to this registry's HTTP client and a logger.

        ``idempotency_key`` defaults to ``"{run_id}/{step}"``; the runtime passes its own
        (run, step path and iteration).
        """
        if self._http is None or self._state != "open":
            raise UsageError(
                "the ActivityRegistry is not open; use it as `async with ActivityRegistry() "
                "as registry:` before creating contexts"
            )
        logger = logging.LoggerAdapter(
            logging.getLogger("legato.activities"),
            {
                "run_id": run_id,
                "workflow": workflow,
                "step": step,
                "attempt": attempt,
                "tenant_id": tenant_id,
                "environment_id": environment_id,
            },
        )
        return ActivityContext(
            run_id=run_id,
            workflow=workflow,
            step=step,
            attempt=attempt,
            idempotency_key=idempotency_key or f"{run_id}/{step}",
            tenant_id=tenant_id,
            environment_id=environment_id,
            http=self._http,
            logger=logger,
            run_input=run_input,
        )

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared, guarded HTTP client (only while the registry is open)."""
        if self._http is None or self._state != "open":
            raise UsageError("the ActivityRegistry is not open; enter it with `async with`")
        return self._http

    async def __aenter__(self) -> ActivityRegistry:
        if self._state != "new":
            raise UsageError(f"an ActivityRegistry can be opened once; this one is {self._state}")
        self._http = httpx.AsyncClient(
            transport=GuardedTransport(self.network, resolver=self._resolver),
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(30.0),
            headers={"User-Agent": "legato"},
        )
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the shared HTTP client (idempotent)."""
        self._state = "closed"
        if self._http is not None:
            client, self._http = self._http, None
            await client.aclose()


def _qualname(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


def _import(path: str) -> Any:
    """Import ``"pkg.module"``, ``"pkg.module:attr"`` or ``"pkg.module.attr"``."""
    if not isinstance(path, str) or not path.strip():
        raise InputError(f"{path!r} is not an import path; write 'pkg.module' or 'pkg.module:fn'")
    module_name, _, attr = path.strip().partition(":")
    not_a_module: ImportError | None = None
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        head, _, tail = module_name.rpartition(".")
        if attr or not head or exc.name != module_name:
            raise _import_error(path, exc) from exc
        try:  # "pkg.module.function"
            target = importlib.import_module(head)
        except ImportError:
            raise _import_error(path, exc) from exc
        attr, not_a_module = tail, exc
    except Exception as exc:  # the module itself failed while importing
        raise InputError(
            f"importing activities from {path!r} failed: {type(exc).__name__}: {exc}",
            details={"path": path},
        ) from exc
    for part in filter(None, attr.split(".")):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            if not_a_module is not None:  # "pkg.missing" is neither a module nor an attribute
                raise _import_error(path, not_a_module) from exc
            raise InputError(
                f"cannot load activities from {path!r}: {getattr(target, '__name__', target)!r} "
                f"has no attribute {part!r}",
                details={"path": path},
            ) from exc
    return target


def _import_error(path: str, exc: ImportError) -> InputError:
    return InputError(
        f"cannot import activities from {path!r}: {exc}. Check the module is installed or on "
        "PYTHONPATH (run from the project's root), and write 'pkg.module' or 'pkg.module:fn'",
        details={"path": path},
    )
