"""The activity registry, the built-in actions' pure parts and the SSRF classifier."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import types
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from legato.actions.send_email import EmailSettings, message_id_for
from legato.activity import ActivityContext, ActivityRegistry, activity, activity_info
from legato.errors import (
    ActivityNotFound,
    ErrorClass,
    InputError,
    StepError,
    UsageError,
    error_from_dict,
)
from legato.net import (
    NetworkPolicy,
    check_addresses,
    refusal_reason,
    retry_after_seconds,
    step_error_for_status,
    step_error_from_httpx,
)
from legato.settings import Settings


@pytest.fixture
async def registry() -> AsyncIterator[ActivityRegistry]:
    async with ActivityRegistry() as reg:
        yield reg


@pytest.fixture
def ctx(registry: ActivityRegistry) -> ActivityContext:
    return registry.context(run_id="run-1", workflow="onboarding", step="assign", attempt=1)


def _module(name: str, **members: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in members.items():
        setattr(module, key, value)
    return module


# ---- the decorator ------------------------------------------------------------------------


def test_activity_marks_the_function_without_registering_it() -> None:
    @activity("assign_plan", timeout="2m")
    async def assign(customer_id: str) -> dict[str, Any]:
        return {}

    info = activity_info(assign)
    assert info is not None
    assert (info.name, info.timeout) == ("assign_plan", 120.0)
    assert "assign_plan" not in ActivityRegistry().names()


def test_activity_defaults_to_the_function_name_and_works_bare() -> None:
    @activity
    def grant_credits() -> None: ...

    @activity()
    def create_wallet() -> None: ...

    assert activity_info(grant_credits).name == "grant_credits"  # type: ignore[union-attr]
    assert activity_info(create_wallet).name == "create_wallet"  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["", "has space", "9lives", "a/b"])
def test_activity_rejects_bad_names(bad: str) -> None:
    with pytest.raises(UsageError, match="not a valid activity name"):
        activity(bad)


@pytest.mark.parametrize("bad", [0, -1, "soon"])
def test_activity_rejects_bad_timeouts(bad: Any) -> None:
    with pytest.raises(UsageError):
        activity("x", timeout=bad)


# ---- registration -------------------------------------------------------------------------


def test_register_module_takes_every_marked_function() -> None:
    @activity("one")
    async def first() -> int:
        return 1

    @activity("two")
    def second() -> int:
        return 2

    def helper() -> None: ...

    registry = ActivityRegistry()
    registry.register(_module("acts", first=first, second=second, helper=helper))
    assert registry.names() == {"one", "two"}
    assert registry.get("two") is second


def test_register_module_without_activities_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no function marked"):
        ActivityRegistry().register(_module("empty", x=1))


def test_register_plain_function_by_its_name_or_a_given_one() -> None:
    def compute(x: int) -> int:
        return x

    registry = ActivityRegistry()
    registry.register(compute)
    registry.register(compute, name="compute_again")
    assert registry.names() == {"compute", "compute_again"}


def test_two_different_functions_under_one_name_is_a_usage_error() -> None:
    @activity("dup")
    def a() -> None: ...

    @activity("dup")
    def b() -> None: ...

    registry = ActivityRegistry()
    registry.register(a)
    registry.register(a)  # the same function again is fine
    with pytest.raises(UsageError, match="two activities are named 'dup'"):
        registry.register(b)


@pytest.mark.parametrize("order", ["builtins_first", "builtins_last"])
async def test_registered_activities_override_builtins(order: str, ctx: ActivityContext) -> None:
    @activity("log")
    async def my_log(**fields: Any) -> dict[str, Any]:
        return {"mine": True}

    registry = ActivityRegistry()
    if order == "builtins_first":
        registry.include_builtins()
    registry.register(my_log)
    if order == "builtins_last":
        registry.include_builtins()
    assert registry.get("log") is my_log
    assert await registry.invoke("log", {"message": "x"}, ctx) == {"mine": True}
    assert {"log_message", "http_request", "send_email", "set"} <= registry.names()


def test_unknown_activity_suggests_the_closest_name() -> None:
    registry = ActivityRegistry().include_builtins()
    with pytest.raises(ActivityNotFound) as info:
        registry.get("http_reqest")
    err = info.value
    assert err.error_class is ErrorClass.PERMANENT
    assert err.details["suggestion"] == "http_request"
    assert "http_request" in err.details["known"]
    assert "Did you mean 'http_request'?" in err.message
    rebuilt = error_from_dict(err.to_dict())
    assert isinstance(rebuilt, ActivityNotFound)
    assert rebuilt.details == err.details


def test_from_import_paths_loads_modules_and_functions() -> None:
    registry = ActivityRegistry.from_import_paths(
        ["legato.actions.noop", "legato.actions.fail:flaky", "legato.actions.sleep.sleep"],
        builtins=False,
    )
    assert registry.names() == {"noop", "flaky", "sleep"}


def test_from_settings_configures_network_email_and_activities() -> None:
    settings = Settings(
        allow_private_networks=False,
        allowed_hosts="billing.internal, 10.0.0.0/8",
        smtp_host="mail.internal",
        smtp_port=2525,
        smtp_password="hunter2",
        activities="legato.actions.fail:flaky",
    )
    registry = ActivityRegistry.from_settings(settings)
    assert registry.network == NetworkPolicy(
        allowed_hosts=frozenset({"billing.internal", "10.0.0.0/8"})
    )
    assert (registry.email.host, registry.email.port) == ("mail.internal", 2525)
    assert registry.email.password == "hunter2"
    assert {"flaky", "http_request", "send_email"} <= registry.names()


def test_import_paths_and_known_names() -> None:
    from legato.actions import fail, noop

    assert ActivityRegistry.import_paths(["legato.actions.noop", "legato.actions.fail:fail"]) == [
        noop,
        fail.fail,
    ]
    names = ActivityRegistry.known_names(["legato.actions.fail:flaky"])
    assert {"flaky", "log", "log_message", "set"} <= names
    with pytest.raises(InputError):
        ActivityRegistry.known_names(["legato.actions.fail:nothing"])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("no_such_pkg_for_legato.acts", "cannot import activities from 'no_such_pkg_for_legato"),
        ("legato.actions.noop:missing", "has no attribute 'missing'"),
        ("legato.actions.nothing_here", "cannot import activities"),
    ],
)
def test_from_import_paths_reports_what_failed(path: str, expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        ActivityRegistry.from_import_paths([path], builtins=False)


# ---- invoking -----------------------------------------------------------------------------


async def test_dict_input_becomes_keyword_arguments_and_ctx_is_passed(
    registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    seen: dict[str, Any] = {}

    @activity("assign_plan")
    async def assign(customer_id: str, plan_id: str, *, ctx: ActivityContext) -> dict[str, Any]:
        seen["ctx"] = ctx
        return {"customer": customer_id, "plan": plan_id}

    registry.register(assign)
    result = await registry.invoke("assign_plan", {"customer_id": "c1", "plan_id": "p1"}, ctx)
    assert result == {"customer": "c1", "plan": "p1"}
    assert seen["ctx"] is ctx


async def test_dict_that_does_not_bind_is_passed_whole(
    registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    def count(payload: dict[str, Any]) -> int:
        return len(payload)

    def first(data: Any, /) -> Any:
        return data

    registry.register(count)
    registry.register(first)
    assert await registry.invoke("count", {"a": 1, "b": 2}, ctx) == 2
    # a positional-only parameter always receives the whole input, even a matching key
    assert await registry.invoke("first", {"data": 5}, ctx) == {"data": 5}
    assert await registry.invoke("first", [1, 2], ctx) == [1, 2]


async def test_the_call_form_is_chosen_again_for_each_shape_of_input(
    registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    # _bind remembers which call form binds per input shape: one shape's answer must not
    # leak into another's
    async def either(data: Any = None, *, scale: int = 1) -> Any:
        return {"data": data, "scale": scale}

    registry.register(either)
    for _ in range(2):
        assert await registry.invoke("either", {"data": 3}, ctx) == {"data": 3, "scale": 1}
        assert await registry.invoke("either", {"x": 3}, ctx) == {"data": {"x": 3}, "scale": 1}
        assert await registry.invoke("either", {"data": 1, "scale": 2}, ctx) == {
            "data": 1,
            "scale": 2,
        }
        assert await registry.invoke("either", None, ctx) == {"data": None, "scale": 1}
        assert await registry.invoke("either", [7], ctx) == {"data": [7], "scale": 1}


async def test_none_input_calls_without_arguments(
    registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    def nothing() -> str:
        return "ok"

    registry.register(nothing)
    assert await registry.invoke("nothing", None, ctx) == "ok"


async def test_input_that_fits_no_parameter_is_validation(
    registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    def needs(a: int, b: int) -> int:
        return a + b

    registry.register(needs)
    with pytest.raises(StepError) as info:
        await registry.invoke("needs", {"a": 1}, ctx)
    assert info.value.error_class is ErrorClass.VALIDATION
    assert info.value.details["activity"] == "needs"


async def test_ctx_key_in_input_is_rejected(
    registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    async def uses_ctx(*, ctx: ActivityContext) -> None: ...

    registry.register(uses_ctx)
    with pytest.raises(StepError, match="reserved") as info:
        await registry.invoke("uses_ctx", {"ctx": 1}, ctx)
    assert info.value.error_class is ErrorClass.VALIDATION


async def test_sync_activities_run_in_a_thread(
    registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    def where() -> int:
        return threading.get_ident()

    registry.register(where)
    assert await registry.invoke("where", None, ctx) != threading.get_ident()


async def test_the_input_is_copied(registry: ActivityRegistry, ctx: ActivityContext) -> None:
    def mutate(items: list[int]) -> None:
        items.append(99)

    registry.register(mutate)
    data = {"items": [1]}
    await registry.invoke("mutate", data, ctx)
    assert data == {"items": [1]}


async def test_results_are_normalised_json(
    registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    def shaped() -> Any:
        return {"t": (1, 2), "n": {1: "one"}}

    registry.register(shaped)
    assert await registry.invoke("shaped", None, ctx) == {"t": [1, 2], "n": {"1": "one"}}


@pytest.mark.parametrize("value", [object(), float("nan"), {"when": threading.Lock()}])
async def test_non_json_results_are_validation(
    value: Any, registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    @activity("bad_result")
    def bad() -> Any:
        return value

    registry.register(bad)
    with pytest.raises(StepError, match="'bad_result' returned a value") as info:
        await registry.invoke("bad_result", None, ctx)
    assert info.value.error_class is ErrorClass.VALIDATION


def _request() -> httpx.Request:
    return httpx.Request("POST", "https://api.example.com/v1/pay?token=secret")


@pytest.mark.parametrize(
    ("exc", "error_class"),
    [
        (TimeoutError(), ErrorClass.TIMEOUT),
        (httpx.ConnectError("refused", request=_request()), ErrorClass.RETRYABLE),
        (httpx.ReadTimeout("slow", request=_request()), ErrorClass.TIMEOUT),
        (
            httpx.HTTPStatusError(
                "x", request=_request(), response=httpx.Response(403, request=_request())
            ),
            ErrorClass.AUTH_FAILED,
        ),
        (ValueError("bad data"), ErrorClass.RETRYABLE),
        (KeyError("customer_id"), ErrorClass.RETRYABLE),
    ],
)
async def test_exceptions_are_classified(
    exc: Exception, error_class: ErrorClass, registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    async def boom() -> None:
        raise exc

    registry.register(boom)
    with pytest.raises(StepError) as info:
        await registry.invoke("boom", None, ctx)
    assert info.value.error_class is error_class
    assert info.value.__cause__ is exc


async def test_user_bug_is_retryable_with_type_and_message(
    registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    def buggy() -> None:
        raise ZeroDivisionError("division by zero")

    registry.register(buggy)
    with pytest.raises(StepError) as info:
        await registry.invoke("buggy", None, ctx)
    assert info.value.retryable
    assert info.value.details["exception_type"] == "builtins.ZeroDivisionError"
    assert info.value.details["exception_message"] == "division by zero"


async def test_step_errors_pass_through_unchanged(
    registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    raised = StepError("plan unknown", error_class=ErrorClass.PERMANENT, details={"plan": "x"})

    async def picky() -> None:
        raise raised

    registry.register(picky)
    with pytest.raises(StepError) as info:
        await registry.invoke("picky", None, ctx)
    assert info.value is raised


async def test_activity_timeout_and_step_timeout(
    registry: ActivityRegistry, ctx: ActivityContext
) -> None:
    @activity("slow", timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(5)

    registry.register(slow)
    with pytest.raises(StepError) as info:
        await registry.invoke("slow", None, ctx)
    assert info.value.error_class is ErrorClass.TIMEOUT
    registry.include_builtins()
    with pytest.raises(StepError) as info:  # the step's timeout bounds an activity without one
        await registry.invoke("sleep", {"seconds": 5}, ctx, timeout=0.05)
    assert info.value.error_class is ErrorClass.TIMEOUT
    assert await registry.invoke("sleep", {"seconds": 0.01}, ctx, timeout=1) == {"slept": 0.01}


async def test_context_needs_an_open_registry() -> None:
    registry = ActivityRegistry()
    with pytest.raises(UsageError, match="not open"):
        registry.context(run_id="r", workflow="w", step="s")
    async with registry:
        ctx = registry.context(run_id="r", workflow="w", step="s", attempt=2)
        assert ctx.idempotency_key == "r/s"
        assert ctx.logger.extra["run_id"] == "r"  # type: ignore[index]
        assert not ctx.http.is_closed
    assert ctx.http.is_closed
    with pytest.raises(UsageError):
        registry.context(run_id="r", workflow="w", step="s")


def test_context_validates_attempt(registry: ActivityRegistry, ctx: ActivityContext) -> None:
    with pytest.raises(UsageError, match="counts from 1"):
        ActivityContext(
            run_id="r",
            workflow="w",
            step="s",
            attempt=0,
            idempotency_key="k",
            http=ctx.http,
            logger=ctx.logger,
        )


# ---- built-in actions ---------------------------------------------------------------------


@pytest.fixture
def builtins(registry: ActivityRegistry) -> ActivityRegistry:
    return registry.include_builtins()


async def test_log_logs_with_run_fields(
    builtins: ActivityRegistry, ctx: ActivityContext, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="legato.actions.log"):
        result = await builtins.invoke(
            "log_message", {"message": "welcome sent", "level": "warning", "fields": {"n": 1}}, ctx
        )
    assert result == {"logged": True, "message": "welcome sent"}
    [record] = [r for r in caplog.records if r.name == "legato.actions.log"]
    assert record.levelno == logging.WARNING
    assert (record.run_id, record.step, record.fields) == ("run-1", "assign", {"n": 1})  # type: ignore[attr-defined]


async def test_log_rejects_unknown_level(builtins: ActivityRegistry, ctx: ActivityContext) -> None:
    with pytest.raises(StepError) as info:
        await builtins.invoke("log", {"message": "x", "level": "loud"}, ctx)
    assert info.value.error_class is ErrorClass.VALIDATION


async def test_set_and_noop_return_their_input(
    builtins: ActivityRegistry, ctx: ActivityContext
) -> None:
    assert await builtins.invoke("set", {"plan": "pro", "values": 1}, ctx) == {
        "plan": "pro",
        "values": 1,
    }
    assert await builtins.invoke("set", None, ctx) == {}
    assert await builtins.invoke("noop", None, ctx) == {}
    assert await builtins.invoke("noop", [1], ctx) == [1]
    with pytest.raises(StepError):
        await builtins.invoke("set", [1], ctx)


async def test_sleep_accepts_seconds_or_duration(
    builtins: ActivityRegistry, ctx: ActivityContext
) -> None:
    assert await builtins.invoke("sleep", {"duration": "10ms"}, ctx) == {"slept": 0.01}
    assert await builtins.invoke("sleep", {"seconds": 0}, ctx) == {"slept": 0.0}
    for bad in ({}, {"seconds": 1, "duration": "1s"}, {"duration": "soon"}, {"seconds": -1}):
        with pytest.raises(StepError) as info:
            await builtins.invoke("sleep", bad, ctx)
        assert info.value.error_class is ErrorClass.VALIDATION


async def test_fail_raises_what_it_is_told(
    builtins: ActivityRegistry, ctx: ActivityContext
) -> None:
    with pytest.raises(StepError) as info:
        await builtins.invoke(
            "fail", {"error_class": "rate_limited", "message": "slow down", "retry_after": 3}, ctx
        )
    assert (info.value.error_class, info.value.message) == (ErrorClass.RATE_LIMITED, "slow down")
    assert info.value.retry_after == 3
    with pytest.raises(StepError) as info:
        await builtins.invoke("fail", {"error_class": "OOPS"}, ctx)
    assert info.value.error_class is ErrorClass.VALIDATION


async def test_flaky_fails_until_the_attempt_passes_fail_times(
    builtins: ActivityRegistry,
) -> None:
    outcomes = []
    for attempt in (1, 2, 3):
        ctx = builtins.context(run_id="r", workflow="w", step="s", attempt=attempt)
        try:
            outcomes.append(await builtins.invoke("flaky", {"fail_times": 2}, ctx))
        except StepError as exc:
            outcomes.append(exc.error_class)
    assert outcomes == [ErrorClass.RETRYABLE, ErrorClass.RETRYABLE, {"attempt": 3}]


@pytest.mark.parametrize(
    "request_input",
    [
        {"url": "ftp://files.example.com/x"},
        {"url": "/relative"},
        {"url": "https://api.example.com", "json": {}, "body": "x"},
        {"url": "https://api.example.com", "method": "BREW"},
        {"url": "https://api.example.com", "timeout": "forever"},
        {"url": "https://api.example.com", "headers": {"X-A": "a\r\nInjected: 1"}},
        {"url": "https://api.example.com", "expect_status": "200"},
        {"url": "https://api.example.com", "retries": 3},
        {"method": "GET"},
    ],
)
async def test_http_request_validates_its_input(
    request_input: dict[str, Any], builtins: ActivityRegistry, ctx: ActivityContext
) -> None:
    with pytest.raises(StepError) as info:
        await builtins.invoke("http_request", request_input, ctx)
    assert info.value.error_class is ErrorClass.VALIDATION


@pytest.mark.parametrize(
    "email",
    [
        {"to": "not-an-address", "subject": "s", "body": "b"},
        {"to": ["ok@example.com", "nope"], "subject": "s", "body": "b"},
        {"to": "ok@example.com", "subject": "s\r\nBcc: evil@example.com", "body": "b"},
        {"to": "ok@example.com", "subject": "s", "body": "b", "from": "x"},
        {"subject": "s", "body": "b"},
        {"to": "ok@example.com", "subject": "s", "body": "b", "attachments": []},
    ],
)
async def test_send_email_validates_before_connecting(
    email: dict[str, Any], builtins: ActivityRegistry, ctx: ActivityContext
) -> None:
    with pytest.raises(StepError) as info:
        await builtins.invoke("send_email", email, ctx)
    assert info.value.error_class is ErrorClass.VALIDATION


def test_message_id_is_stable_per_idempotency_key() -> None:
    a = message_id_for("run-1/welcome", "Billing <billing@example.com>")
    assert a == message_id_for("run-1/welcome", "billing@example.com")
    assert a != message_id_for("run-1/other", "billing@example.com")
    assert a.startswith("<legato.")
    assert a.endswith("@example.com>")


def test_email_settings_never_show_the_password() -> None:
    settings = EmailSettings(user="mailer", password="hunter2")
    assert "hunter2" not in repr(settings)
    with pytest.raises(ValueError, match="not both"):
        EmailSettings(starttls=True, use_ssl=True)


# ---- the SSRF classifier ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "private"),
        ("100.64.0.1", "not globally routable"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback, embedded in ::ffff:7f00:1"),
        ("::ffff:169.254.169.254", "link-local, embedded in ::ffff:a9fe:a9fe"),
        ("2002:7f00:1::", "loopback, embedded in 2002:7f00:1::"),
        ("64:ff9b::a00:1", "private, embedded in 64:ff9b::a00:1"),
    ],
)
def test_refused_addresses(address: str, reason: str) -> None:
    assert refusal_reason(address) == reason
    assert refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(address) is None


def test_every_resolved_address_is_checked() -> None:
    with pytest.raises(StepError) as info:
        check_addresses("rebind.example", ["93.184.216.34", "127.0.0.1"], NetworkPolicy())
    err = info.value
    assert err.error_class is ErrorClass.PERMANENT
    assert err.details == {
        "host": "rebind.example",
        "address": "127.0.0.1",
        "reason": "loopback",
        "ssrf_guard": True,
    }
    assert "LEGATO_ALLOW_PRIVATE_NETWORKS=true" in err.message
    assert "allowed_hosts" in err.message


def test_policy_exceptions() -> None:
    addresses = ["10.1.2.3"]
    assert check_addresses("x", addresses, NetworkPolicy(allow_private=True)) == addresses
    policy = NetworkPolicy(allowed_hosts=frozenset({"Billing.Internal.", "*.corp.example"}))
    assert check_addresses("billing.internal", addresses, policy) == addresses
    assert check_addresses("api.corp.example", addresses, policy) == addresses
    with pytest.raises(StepError):
        check_addresses("corp.example", addresses, policy)
    by_network = NetworkPolicy(allowed_hosts=frozenset({"10.1.0.0/16"}))
    assert check_addresses("anything", addresses, by_network) == addresses
    with pytest.raises(StepError):
        check_addresses("anything", ["10.2.0.1"], by_network)
    with pytest.raises(TypeError):
        NetworkPolicy(allowed_hosts="billing.internal")  # type: ignore[arg-type]


# ---- HTTP outcomes to error classes --------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (200, None),
        (302, None),
        (400, ErrorClass.VALIDATION),
        (401, ErrorClass.AUTH_FAILED),
        (403, ErrorClass.AUTH_FAILED),
        (404, ErrorClass.PERMANENT),
        (409, ErrorClass.PERMANENT),
        (422, ErrorClass.VALIDATION),
        (429, ErrorClass.RATE_LIMITED),
        (500, ErrorClass.RETRYABLE),
        (503, ErrorClass.RETRYABLE),
    ],
)
def test_status_classification(status: int, error_class: ErrorClass | None) -> None:
    error = step_error_for_status(status, method="GET", url="https://u:p@api.example.com/x?k=v")
    if error_class is None:
        assert error is None
        return
    assert error is not None
    assert error.error_class is error_class
    assert error.details["url"] == "https://api.example.com/x"


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == 10.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412500.0) == 0.0
    assert retry_after_seconds("soon") is None
    error = step_error_for_status(429, headers={"Retry-After": "12"})
    assert error is not None
    assert error.retry_after == 12.0


def test_httpx_errors_keep_secrets_out_of_details() -> None:
    error = step_error_from_httpx(httpx.ConnectError("refused", request=_request()))
    assert error.details["url"] == "https://api.example.com/v1/pay"
    assert "secret" not in str(error.to_dict())
