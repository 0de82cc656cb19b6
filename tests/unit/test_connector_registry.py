"""services.yaml: the full loader, ${ENV} interpolation, error messages, secrets and masking."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from legato.connectors import config
from legato.connectors.registry import (
    interpolate,
    load_registry,
    load_service_capabilities,
    parse_registry,
)
from legato.connectors.secrets import (
    MASK,
    Secrets,
    SecretsFilter,
    install_log_filter,
    redact,
)
from legato.errors import InputError

SEEDS = Path(__file__).parents[1] / "fixtures" / "seeds"
SEED_000 = SEEDS / "000_services.yaml"
SEED_ENV = {
    "WORKDAY_CLIENT_ID": "workday-client-id-1",
    "WORKDAY_CLIENT_SECRET": "workday-client-secret-2",
    "STERLING_API_KEY": "sterling-api-key-3",
    "STRIPE_SECRET_KEY": "sk_test_stripe_4",
}


def write(tmp_path: Path, text: str, name: str = "services.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- seed 000 ---------------------------------------------------------------------------------


def test_seed_000_loads_with_its_environment() -> None:
    registry = load_registry(SEED_000, SEED_ENV)
    assert [s.name for s in registry.services] == [
        "hr-workday",
        "background-check-sterling",
        "payment-stripe",
    ]
    hr = registry.get("hr-workday")
    assert hr is not None
    assert hr.type == "grpc"
    assert isinstance(hr.auth, config.OAuth2Auth)
    assert hr.auth.client_id.get_secret_value() == "workday-client-id-1"
    assert hr.auth.client_secret.get_secret_value() == "workday-client-secret-2"
    assert hr.retry is not None
    assert hr.retry.initial_delay == 1.0
    assert hr.retry.max_delay == 30.0
    assert hr.circuit_breaker == config.CircuitBreakerConfig(
        failure_threshold=5, timeout=60.0, half_open_attempts=3
    )
    assert hr.timeout.connect == 5.0
    assert hr.timeout.request == 30.0
    assert hr.rate_limit == config.RateLimitConfig(requests_per_second=100, burst=200)
    sterling = registry.get("background-check-sterling")
    assert sterling is not None
    assert isinstance(sterling.auth, config.ApiKeyAuth)
    assert sterling.auth.header == "X-API-Key"
    assert sterling.timeout.request == 120.0
    assert sterling.retry is not None
    assert sterling.retry.max_attempts == 5
    stripe = registry.get("payment-stripe")
    assert stripe is not None
    assert isinstance(stripe.auth, config.BearerAuth)
    # seed 000 puts idempotency_header under `retry`; the service-level reader finds it
    assert stripe.header_for_idempotency() == "Idempotency-Key"
    assert registry.capabilities() == load_service_capabilities(SEED_000)
    assert registry.capabilities()["payment-stripe"] == {
        "payment.charge",
        "payment.refund",
        "customer.create",
        "subscription.create",
    }
    # secrets never show in repr or JSON dumps
    dumped = registry.model_dump_json() + repr(registry)
    for value in SEED_ENV.values():
        assert value not in dumped


def test_missing_variables_are_all_named_with_file_service_and_field() -> None:
    with pytest.raises(InputError) as caught:
        load_registry(SEED_000, {"STRIPE_SECRET_KEY": "sk_x"})
    message = caught.value.message
    assert str(SEED_000) in message
    for name, service, field in (
        ("WORKDAY_CLIENT_ID", "hr-workday", "auth.client_id"),
        ("WORKDAY_CLIENT_SECRET", "hr-workday", "auth.client_secret"),
        ("STERLING_API_KEY", "background-check-sterling", "auth.value"),
    ):
        assert f"${{{name}}} (used in service `{service}`, field `{field}`)" in message
    assert "STRIPE_SECRET_KEY" not in message
    assert "${NAME:-default}" in message
    assert {m["variable"] for m in caught.value.details["missing"]} == {
        "WORKDAY_CLIENT_ID",
        "WORKDAY_CLIENT_SECRET",
        "STERLING_API_KEY",
    }


def test_lint_view_needs_no_environment() -> None:
    # The thin wrapper and the lenient mode of the full loader both work with nothing set.
    assert set(load_service_capabilities(SEED_000)) == {
        "hr-workday",
        "background-check-sterling",
        "payment-stripe",
    }
    registry = load_registry(SEED_000, {}, require_env=False)
    assert registry.capabilities() == load_service_capabilities(SEED_000)


# ---- interpolation ----------------------------------------------------------------------------


def test_interpolation_with_defaults_everywhere_in_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
services:
  - name: billing
    type: rest
    endpoint: ${BILLING_URL:-http://billing.internal:8080}/api
    timeout: {request: "${BILLING_TIMEOUT:-45s}"}
    rate_limit: {requests_per_second: "${BILLING_RPS}"}
    headers: {X-Tenant: "${TENANT:-acme}", X-Empty: "${EMPTY:-}"}
    auth: {type: bearer, token: "tok-${TOKEN_PART}"}
    capabilities: ["invoice.${VERB:-create}"]
    operations:
      invoice.create: {method: POST, path: "/invoices/$${literal}"}
""",
    )
    registry = load_registry(path, {"BILLING_RPS": "12.5", "TOKEN_PART": "abcdef"})
    billing = registry.services[0]
    assert billing.endpoint == "http://billing.internal:8080/api"
    assert billing.timeout.request == 45.0
    assert billing.rate_limit is not None
    assert billing.rate_limit.requests_per_second == 12.5
    assert billing.headers == {"X-Tenant": "acme", "X-Empty": ""}
    assert isinstance(billing.auth, config.BearerAuth)
    assert billing.auth.token.get_secret_value() == "tok-abcdef"
    assert billing.capabilities == ("invoice.create",)
    assert billing.operations["invoice.create"]["path"] == "/invoices/${literal}"
    # A set variable wins over the default, even when empty.
    registry = load_registry(
        path, {"BILLING_RPS": "1", "TOKEN_PART": "abcdef", "BILLING_URL": "https://b.example"}
    )
    assert registry.services[0].endpoint == "https://b.example/api"


def test_interpolate_function_and_malformed_references(tmp_path: Path) -> None:
    assert interpolate({"a": ["${X}", "${Y:-why}", 3]}, {"X": "ex"}) == {"a": ["ex", "why", 3]}
    with pytest.raises(InputError, match="Z"):
        interpolate("${Z}", {})
    path = write(
        tmp_path,
        "services:\n  - {name: a, type: rest, endpoint: 'http://${HOST-x}/${1BAD}'}\n",
    )
    with pytest.raises(InputError) as caught:
        load_registry(path, {})
    assert "service `a`, field `endpoint`: '${HOST-x}' is not a valid variable" in (
        caught.value.message
    )
    assert "'${1BAD}'" in caught.value.message


# ---- validation messages ----------------------------------------------------------------------


def test_every_problem_names_service_field_and_fix(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
services:
  - name: hr
    type: rset
    endpoint: hr.internal:443
    retry: {max_attempts: 0, backoff: sometimes, initial_delay: 5 sec}
    colour: red
  - name: pay
    type: rest
    endpoint: https://pay.example
    auth: {type: oauth2, client_id: abc}
  - name: crm
    type: rest
    endpoint: https://crm.example
    auth: {type: kerberos}
  - name: erp
    type: rest
    endpoint: https://erp.example
    versions: {v1: {}}
    version_route: {default: v2}
  - type: rest
    endpoint: https://nameless.example
""",
    )
    with pytest.raises(InputError) as caught:
        load_registry(path, {})
    message = caught.value.message
    assert message.startswith(f"{path}: ")
    expected = [
        "service `hr`, field `type`: Input should be 'grpc', 'rest', 'graphql', 'amqp', "
        "'nats' or 'soap'; use one of grpc, rest, graphql, amqp, nats, soap",
        "service `hr`, field `retry.max_attempts`: Input should be greater than or equal "
        "to 1; use a number in the allowed range",
        "service `hr`, field `retry.backoff`:",
        "service `hr`, field `retry.initial_delay`: '5 sec' is not a duration; write it like",
        "service `hr`, field `colour`: unknown field; remove `colour` or correct its spelling",
        "service `pay`, field `auth.client_secret`: Field required; add `client_secret`",
        "service `pay`, field `auth.token_url`: Field required; add `token_url`",
        "service `crm`, field `auth`: unknown auth type 'kerberos'; set `type:` to one of "
        "oauth2, api_key, bearer, mtls, none",
        "service `erp`, field `version_route`: version_route names version(s) ['v2']",
        "service `services[4]`, field `name`: Field required; add `name`",
    ]
    for line in expected:
        assert line in message, line
    problems = caught.value.details["problems"]
    assert all(p["service"] and p["problem"] for p in problems)
    assert {p["service"] for p in problems} == {"hr", "pay", "crm", "erp", "services[4]"}


def test_duplicate_services_are_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n"
        "  - {name: a, type: rest, endpoint: 'http://a'}\n"
        "  - {name: b, type: rest, endpoint: 'http://b'}\n"
        "  - {name: a, type: grpc, endpoint: 'a:443'}\n",
    )
    with pytest.raises(InputError, match=r"service `a` is defined twice \(services\[0\] and "):
        load_registry(path, {})
    with pytest.raises(InputError, match="defined twice"):
        load_service_capabilities(path)


def test_idempotency_header_in_either_place_but_not_two_different(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n"
        "  - {name: a, type: rest, endpoint: 'http://a', idempotency_header: X-Key}\n"
        "  - {name: b, type: rest, endpoint: 'http://b', retry: {idempotency_header: X-Key}}\n",
    )
    registry = load_registry(path, {})
    assert [s.header_for_idempotency() for s in registry.services] == ["X-Key", "X-Key"]
    path = write(
        tmp_path,
        "services:\n  - {name: a, type: rest, endpoint: 'http://a', idempotency_header: X-A,"
        " retry: {idempotency_header: X-B}}\n",
    )
    with pytest.raises(InputError, match=r"field `idempotency_header`.*set it in one place"):
        load_registry(path, {})


def test_file_level_problems(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such service registry file"):
        load_registry(tmp_path / "nope.yaml", {})
    with pytest.raises(InputError, match="not valid YAML at line 3"):
        load_registry(write(tmp_path, "services:\n  - [\n"), {})
    with pytest.raises(InputError, match="expected a `services:` list"):
        load_registry(write(tmp_path, "- a\n"), {})
    with pytest.raises(InputError, match=r"unknown top-level key\(s\) \['extra'\]"):
        load_registry(write(tmp_path, "services: []\nextra: 1\n"), {})
    assert parse_registry({"services": []}, environ={}).services == ()


def test_versions_and_operations_feed_capabilities(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
services:
  - name: crm
    type: rest
    endpoint: https://crm.example/v1
    capabilities: [contact.create]
    operations:
      contact.update: {method: PUT, path: "/contacts/{id}"}
    versions:
      v1: {}
      v2:
        endpoint: https://crm.example/v2
        capabilities: [contact.create, contact.merge]
    version_route:
      default: v1
      rules:
        - {when: "input.region == 'eu'", version: v2}
""",
    )
    registry = load_registry(path, {})
    crm = registry.services[0]
    assert crm.operation_names() == {"contact.create", "contact.update"}
    assert crm.operation_names("v2") == {"contact.create", "contact.merge", "contact.update"}
    assert registry.capabilities() == {"crm": {"contact.create", "contact.update", "contact.merge"}}
    assert load_service_capabilities(path) == registry.capabilities()


# ---- secrets and masking ----------------------------------------------------------------------


def test_secrets_of_a_registry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
services:
  - name: queue
    type: amqp
    endpoint: amqp://legato:${RABBIT_PASSWORD}@mq.internal:5672/
    headers: {X-Tenant-Key: "${TENANT_KEY}"}
  - name: hr
    type: rest
    endpoint: https://hr.example
    auth:
      type: oauth2
      client_id: ${HR_ID}
      client_secret: literal-secret-in-file
      token_url: https://${IDP_HOST}/oauth/token
  - name: mtls
    type: grpc
    endpoint: payments.internal:443
    auth: {type: mtls, cert: /etc/certs/c.pem, key: /etc/certs/k.pem}
  - name: plain
    type: rest
    endpoint: https://${PUBLIC_HOST}/api
""",
    )
    env = {
        "RABBIT_PASSWORD": "rabbit-pass-1",
        "TENANT_KEY": "tenant-key-2",
        "HR_ID": "hr-client-3",
        "IDP_HOST": "idp.internal.example",
        "PUBLIC_HOST": "public.example",
    }
    secrets = Secrets.from_registry(load_registry(path, env))
    for value in (
        "rabbit-pass-1",
        "tenant-key-2",
        "hr-client-3",
        "literal-secret-in-file",
        "idp.internal.example",  # interpolated into an auth block
    ):
        assert value in secrets
    assert "public.example" not in secrets  # an ordinary variable in an ordinary field
    assert "/etc/certs/c.pem" not in secrets
    assert "legato" not in secrets
    assert "rabbit-pass-1" not in repr(secrets)


def test_redact_walks_json_like_values() -> None:
    secrets = Secrets(["s3cr3t-value", "tok", SecretStr("other-secret")])
    assert "tok" not in secrets  # too short to mask
    value = {
        "message": "token s3cr3t-value refused",
        "list": ["a", "xx other-secret xx", 3, None],
        "s3cr3t-value": b"bytes s3cr3t-value",
        "nested": ({"deep": "s3cr3t-value"},),
    }
    masked = secrets.redact(value)
    assert masked == {
        "message": f"token {MASK} refused",
        "list": ["a", f"xx {MASK} xx", 3, None],
        MASK: f"bytes {MASK}".encode(),
        "nested": ({"deep": MASK},),
    }
    assert redact("a s3cr3t-value", ["s3cr3t-value"]) == f"a {MASK}"
    # a secret containing another is masked whole
    both = Secrets(["abcd", "abcdefgh"])
    assert both.redact_text("xabcdefghx abcd") == f"x{MASK}x {MASK}"
    secrets.discard("s3cr3t-value")
    assert secrets.redact_text("s3cr3t-value") == "s3cr3t-value"


def test_log_filter_masks_message_args_traceback_and_extra() -> None:
    secret = "hunter2-password"
    secrets = Secrets([secret])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(detail)s"))
    logger = logging.getLogger("legato.test.secrets")
    logger.propagate = False
    logger.addHandler(handler)
    child = logging.getLogger("legato.test.secrets.child")
    log_filter = install_log_filter(secrets, logger)
    assert isinstance(log_filter, SecretsFilter)
    try:
        logger.warning("login with %s", secret, extra={"detail": {"pw": secret}})
        try:
            raise RuntimeError(f"the server said {secret}")
        except RuntimeError:
            child.exception("call failed for %r", secret, extra={"detail": secret})
        # added after the filter was installed: still masked
        secrets.add("late-token-value")
        child.error("late-token-value", extra={"detail": "-"})
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(log_filter)
        logger.propagate = True
    text = stream.getvalue()
    assert secret not in text
    assert "late-token-value" not in text
    assert text.count(MASK) >= 5
    assert "RuntimeError: the server said ***" in text
    assert "Traceback" in text


def test_log_filter_on_a_handler_sees_every_logger(caplog: pytest.LogCaptureFixture) -> None:
    secrets = Secrets(["abc-secret-xyz"])
    caplog.handler.addFilter(SecretsFilter(secrets))
    with caplog.at_level(logging.INFO):
        logging.getLogger("somewhere.else").info("value=%s", "abc-secret-xyz")
        logging.getLogger("legato").info(json.dumps({"k": "abc-secret-xyz"}))
    assert "abc-secret-xyz" not in caplog.text
    assert all("abc-secret-xyz" not in r.getMessage() for r in caplog.records)
