"""SoapConnector against a real SOAP server on loopback: a stdlib HTTP server that serves
tests/fixtures/soap/employee.wsdl (document/literal) and answers its operations with
canned envelopes, Faults and HTTP errors, chosen by the request's employeeId."""

from __future__ import annotations

import email.utils
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import zeep  # noqa: F401 - the soap extra is part of dev

from legato import ErrorClass, StepError
from legato.connectors.auth import build_auth
from legato.connectors.base import Connector, Result, Task
from legato.connectors.config import ApiKeyAuth, BearerAuth, OAuth2Auth, ServiceConfig
from legato.connectors.soap import SoapConnector, fault_error_class, json_safe
from legato.errors import UsageError
from legato.net import NetworkPolicy

WSDL = Path(__file__).parents[1] / "fixtures" / "soap" / "employee.wsdl"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
NS = "urn:legato:test:employees"

EMPLOYEE = f"""<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:e="{NS}">
  <soap:Body>
    <e:GetEmployeeResponse>
      <e:employee>
        <e:id>{{id}}</e:id>
        <e:name>Ada Lovelace</e:name>
        <e:startDate>2024-03-01</e:startDate>
        <e:updatedAt>2024-03-02T10:30:00Z</e:updatedAt>
        <e:salary>85000.50</e:salary>
        <e:bonus>0.10000000000000000000001</e:bonus>
        <e:active>true</e:active>
        <e:photo>aGVsbG8=</e:photo>
        <e:tags>eng</e:tags>
        <e:tags>remote</e:tags>
      </e:employee>
    </e:GetEmployeeResponse>
  </soap:Body>
</soap:Envelope>"""

PING = f"""<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:e="{NS}">
  <soap:Body><e:PingResponse><e:status>ok</e:status></e:PingResponse></soap:Body>
</soap:Envelope>"""


def fault(code: str, reason: str, *, extra_ns: str = "") -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="{SOAP_ENV}" {extra_ns}>
  <soap:Body>
    <soap:Fault>
      <faultcode>{code}</faultcode>
      <faultstring>{reason}</faultstring>
      <detail><reason xmlns="{NS}">{reason}</reason></detail>
    </soap:Fault>
  </soap:Body>
</soap:Envelope>"""


FAULTS = {
    "fault-server": fault("soap:Server", "database unavailable"),
    "fault-client": fault("soap:Client", "employeeId is malformed"),
    "fault-busy": fault("soap:Server.Busy", "try later"),
    "fault-custom": fault("e:EmployeeLocked", "locked", extra_ns=f'xmlns:e="{NS}"'),
    "fault-auth": fault(
        "wsse:FailedAuthentication",
        "bad token",
        extra_ns='xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"',
    ),
}


class SoapServer:
    """The employee service: GET ?wsdl serves the WSDL (with its own address), POST
    /employees answers SOAP calls, POST /token is an OAuth2 token endpoint."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.tokens = 0
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def send(
                self, status: int, body: str, content_type: str, headers: dict[str, str] | None
            ) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if "wsdl" in self.path.lower():
                    text = WSDL.read_text().replace(
                        "http://127.0.0.1:9/employees", f"{server.url}/employees"
                    )
                    self.send(200, text, "text/xml; charset=utf-8", None)
                else:
                    self.send(405, "use POST", "text/plain", None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path == "/token":
                    server.tokens += 1
                    self.send(
                        200,
                        f'{{"access_token": "tok-{server.tokens}", "expires_in": 3600}}',
                        "application/json",
                        None,
                    )
                    return
                envelope = ET.fromstring(raw)
                body = envelope.find(f"{{{SOAP_ENV}}}Body")
                assert body is not None
                call = body[0]
                fields = {child.tag.split("}")[1]: child.text for child in call}
                record = {
                    "operation": call.tag.split("}")[1],
                    "fields": fields,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                }
                server.requests.append(record)
                if record["operation"] == "Ping":
                    self.send(200, PING, "text/xml; charset=utf-8", None)
                    return
                self.answer(fields.get("employeeId") or "")

            def answer(self, employee: str) -> None:
                xml = "text/xml; charset=utf-8"
                if employee in FAULTS:
                    self.send(500, FAULTS[employee], xml, None)
                elif employee == "http-429":
                    self.send(429, "slow down", "text/plain", {"Retry-After": "7"})
                elif employee == "http-429-date":
                    when = email.utils.formatdate(time.time() + 120, usegmt=True)
                    self.send(429, "slow down", "text/plain", {"Retry-After": when})
                elif employee == "http-503":
                    self.send(503, "<html>maintenance</html>", "text/html", None)
                elif employee == "http-500-html":
                    self.send(500, "<html>oops</html>", "text/html", None)
                elif employee == "http-403":
                    self.send(403, "forbidden", "text/plain", None)
                elif employee == "http-400":
                    self.send(400, "bad request", "text/plain", None)
                elif employee == "http-401":
                    self.send(401, "who are you", "text/plain", None)
                elif employee == "needs-fresh":
                    if self.headers.get("Authorization") != "Bearer tok-2":
                        self.send(401, "token expired", "text/plain", None)
                    else:
                        self.send(200, EMPLOYEE.replace("{id}", employee), xml, None)
                elif employee.startswith("slow-"):
                    server.stopping.wait(float(employee.removeprefix("slow-")))
                    self.send(200, EMPLOYEE.replace("{id}", employee), xml, None)
                else:
                    self.send(200, EMPLOYEE.replace("{id}", employee), xml, None)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> SoapServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_task(operation: str, input: Any = None, **fields: Any) -> Task:
    defaults: dict[str, Any] = {
        "task_id": f"step-{operation}",
        "run_id": "run-1",
        "workflow": "onboarding",
        "service": "hr-legacy",
        "idempotency_key": f"run-1/{operation}",
        "correlation_id": "run-1:step",
        "traceparent": "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
    }
    return Task(operation=operation, input=input, **{**defaults, **fields})


def lookup(employee_id: str, **fields: Any) -> Task:
    return make_task("employee.lookup", {"employeeId": employee_id}, **fields)


@pytest.fixture
def server() -> Iterator[SoapServer]:
    with SoapServer() as srv:
        yield srv


@pytest.fixture
async def connect(server: SoapServer) -> AsyncIterator[Callable[..., SoapConnector]]:
    made: list[SoapConnector] = []
    providers: list[Any] = []

    def build(*, auth: Any = None, **overrides: Any) -> SoapConnector:
        data: dict[str, Any] = {
            "name": "hr-legacy",
            "type": "soap",
            "endpoint": f"{server.url}/employees",
            "wsdl": str(WSDL),
            "timeout": {"connect": 2, "request": 5},
            "operations": {"employee.lookup": {"method": "GetEmployee"}},
        }
        data.update(overrides)
        if auth is not None:
            data["auth"] = auth
        config = ServiceConfig.model_validate(data)
        provider = build_auth(config.auth, NetworkPolicy(allow_private=True))
        providers.append(provider)
        connector = SoapConnector(config, auth=provider, network=NetworkPolicy())
        made.append(connector)
        return connector

    yield build
    for connector in made:
        await connector.aclose()
    for provider in providers:
        await provider.aclose()


async def test_satisfies_the_connector_protocol(connect: Callable[..., SoapConnector]) -> None:
    assert isinstance(connect(), Connector)


async def test_success_maps_the_result_to_json(
    connect: Callable[..., SoapConnector], server: SoapServer
) -> None:
    connector = connect()
    result = await connector.execute(
        make_task("employee.lookup", {"employeeId": "E-1", "includeHistory": True})
    )
    assert isinstance(result, Result)
    assert result.output == {
        "id": "E-1",
        "name": "Ada Lovelace",
        "startDate": "2024-03-01",
        "updatedAt": "2024-03-02T10:30:00+00:00",
        "salary": 85000.5,
        "bonus": "0.10000000000000000000001",
        "active": True,
        "photo": "aGVsbG8=",
        "tags": ["eng", "remote"],
    }
    (request,) = server.requests
    assert request["operation"] == "GetEmployee"
    assert request["fields"] == {"employeeId": "E-1", "includeHistory": "true"}
    assert request["headers"]["soapaction"] == '"urn:legato:test:employees/GetEmployee"'


async def test_headers_reach_the_server(
    connect: Callable[..., SoapConnector], server: SoapServer
) -> None:
    connector = connect(
        auth=ApiKeyAuth(type="api_key", header="X-API-Key", value="k-123"),
        idempotency_header="X-Request-Key",
        headers={"X-Tenant": "acme"},
    )
    await connector.execute(lookup("E-1", attempt=2))
    headers = server.requests[0]["headers"]
    assert headers["x-request-key"] == "run-1/employee.lookup"
    assert "idempotency-key" not in headers
    assert headers["x-correlation-id"] == "run-1:step"
    assert headers["traceparent"].startswith("00-0123456789abcdef")
    assert headers["x-api-key"] == "k-123"
    assert headers["x-tenant"] == "acme"
    assert headers["x-legato-attempt"] == "2"
    assert headers["x-legato-run-id"] == "run-1"


async def test_bearer_auth_and_default_idempotency_header(
    connect: Callable[..., SoapConnector], server: SoapServer
) -> None:
    connector = connect(auth=BearerAuth(type="bearer", token="s3cret"))
    await connector.execute(lookup("E-1"))
    headers = server.requests[0]["headers"]
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["idempotency-key"] == "run-1/employee.lookup"


@pytest.mark.parametrize(
    ("employee", "error_class"),
    [
        ("fault-server", ErrorClass.RETRYABLE),
        ("fault-busy", ErrorClass.RETRYABLE),
        ("fault-client", ErrorClass.VALIDATION),
        ("fault-custom", ErrorClass.PERMANENT),
        ("fault-auth", ErrorClass.AUTH_FAILED),
    ],
)
async def test_faults_are_classified_by_faultcode(
    connect: Callable[..., SoapConnector], employee: str, error_class: ErrorClass
) -> None:
    with pytest.raises(StepError) as caught:
        await connect().execute(lookup(employee))
    assert caught.value.error_class is error_class
    assert "SOAP Fault" in caught.value.message
    assert caught.value.details["fault_code"]
    assert "fault_detail" in caught.value.details


@pytest.mark.parametrize(
    ("employee", "error_class"),
    [
        ("http-503", ErrorClass.RETRYABLE),
        ("http-500-html", ErrorClass.RETRYABLE),
        ("http-403", ErrorClass.AUTH_FAILED),
        ("http-401", ErrorClass.AUTH_FAILED),
        ("http-400", ErrorClass.VALIDATION),
        ("http-429", ErrorClass.RATE_LIMITED),
    ],
)
async def test_http_errors_are_classified_by_status(
    connect: Callable[..., SoapConnector], employee: str, error_class: ErrorClass
) -> None:
    with pytest.raises(StepError) as caught:
        await connect().execute(lookup(employee))
    assert caught.value.error_class is error_class


async def test_429_honours_retry_after_seconds_and_http_dates(
    connect: Callable[..., SoapConnector],
) -> None:
    connector = connect()
    with pytest.raises(StepError) as seconds:
        await connector.execute(lookup("http-429"))
    assert seconds.value.retry_after == 7
    with pytest.raises(StepError) as date:
        await connector.execute(lookup("http-429-date"))
    assert date.value.error_class is ErrorClass.RATE_LIMITED
    assert date.value.retry_after is not None
    assert 100 < date.value.retry_after <= 121


async def test_a_401_refreshes_the_oauth2_token_once(
    connect: Callable[..., SoapConnector], server: SoapServer
) -> None:
    auth = OAuth2Auth(
        type="oauth2", client_id="id", client_secret="secret", token_url=f"{server.url}/token"
    )
    connector = connect(auth=auth)
    result = await connector.execute(lookup("needs-fresh"))
    assert result.output["id"] == "needs-fresh"
    assert server.tokens == 2
    assert [r["headers"]["authorization"] for r in server.requests] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    with pytest.raises(StepError) as caught:  # refused again after the refresh: AUTH_FAILED
        await connector.execute(lookup("http-401"))
    assert caught.value.error_class is ErrorClass.AUTH_FAILED
    assert caught.value.details["refreshed"] is True
    assert server.tokens == 3


async def test_a_slow_server_is_a_timeout(connect: Callable[..., SoapConnector]) -> None:
    connector = connect(timeout={"connect": 1, "request": 0.3})
    started = time.monotonic()
    with pytest.raises(StepError) as caught:
        await connector.execute(lookup("slow-5"))
    assert caught.value.error_class is ErrorClass.TIMEOUT
    assert time.monotonic() - started < 3


async def test_calls_do_not_block_the_event_loop(connect: Callable[..., SoapConnector]) -> None:
    connector = connect()
    await connector.execute(lookup("E-0"))  # the WSDL is read once, first
    started = time.monotonic()
    results = await connector.execute_batch([lookup("slow-0.4", task_id=f"t{i}") for i in range(4)])
    assert all(isinstance(r, Result) for r in results)
    assert time.monotonic() - started < 1.2  # four 0.4 s calls at once, not one by one


async def test_connection_refused_is_retryable(connect: Callable[..., SoapConnector]) -> None:
    connector = connect(endpoint=f"http://127.0.0.1:{free_port()}/employees")
    with pytest.raises(StepError) as caught:
        await connector.execute(lookup("E-1"))
    assert caught.value.error_class is ErrorClass.RETRYABLE


async def test_input_the_schema_refuses_is_validation(
    connect: Callable[..., SoapConnector],
) -> None:
    connector = connect()
    with pytest.raises(StepError) as unknown:
        await connector.execute(make_task("employee.lookup", {"employeeId": "E-1", "colour": 1}))
    assert unknown.value.error_class is ErrorClass.VALIDATION
    with pytest.raises(StepError) as not_object:
        await connector.execute(make_task("employee.lookup", ["E-1"]))
    assert not_object.value.error_class is ErrorClass.VALIDATION


async def test_an_operation_the_wsdl_lacks_is_permanent(
    connect: Callable[..., SoapConnector],
) -> None:
    connector = connect(operations={"employee.fire": {"method": "FireEmployee"}})
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("employee.fire", {}))
    assert caught.value.error_class is ErrorClass.PERMANENT
    assert "GetEmployee" in caught.value.message  # lists what the WSDL has


async def test_unmapped_operations_call_the_wsdl_operation_of_that_name(
    connect: Callable[..., SoapConnector], server: SoapServer
) -> None:
    result = await connect().execute(make_task("Ping", {}))
    assert result.output == "ok"  # a single-element answer is its value
    assert server.requests[0]["operation"] == "Ping"


async def test_the_wsdl_may_come_from_the_endpoint_url(
    connect: Callable[..., SoapConnector], server: SoapServer
) -> None:
    connector = connect(endpoint=f"{server.url}/employees?wsdl", wsdl=None)
    result = await connector.execute(lookup("E-7"))
    assert result.output["id"] == "E-7"  # posted to the address the served WSDL gives


async def test_a_missing_wsdl_file_is_permanent(connect: Callable[..., SoapConnector]) -> None:
    connector = connect(wsdl="/nonexistent/employee.wsdl")
    with pytest.raises(StepError) as caught:
        await connector.execute(lookup("E-1"))
    assert caught.value.error_class is ErrorClass.PERMANENT
    assert "does not exist" in caught.value.message


async def test_a_wsdl_server_that_is_down_is_retryable(
    connect: Callable[..., SoapConnector],
) -> None:
    port = free_port()
    connector = connect(
        endpoint=f"http://127.0.0.1:{port}/employees", wsdl=f"http://127.0.0.1:{port}/?wsdl"
    )
    with pytest.raises(StepError) as caught:
        await connector.execute(lookup("E-1"))
    assert caught.value.error_class is ErrorClass.RETRYABLE


async def test_batch_gives_one_outcome_per_task(connect: Callable[..., SoapConnector]) -> None:
    tasks = [
        lookup("E-1", task_id="a"),
        lookup("fault-client", task_id="b"),
        lookup("E-3", task_id="c"),
    ]
    results = await connect().execute_batch(tasks)
    assert isinstance(results[0], Result)
    assert results[0].output["id"] == "E-1"
    assert isinstance(results[1], StepError)
    assert results[1].error_class is ErrorClass.VALIDATION
    assert isinstance(results[2], Result)
    assert results[2].output["id"] == "E-3"


async def test_health_check(connect: Callable[..., SoapConnector], server: SoapServer) -> None:
    await connect().health_check()  # the WSDL reads and the endpoint answers (405 to GET)
    await connect(operations={"health": {"method": "Ping"}}).health_check()
    assert server.requests[-1]["operation"] == "Ping"
    down = connect(endpoint=f"http://127.0.0.1:{free_port()}/employees")
    with pytest.raises(StepError) as caught:
        await down.health_check()
    assert caught.value.error_class is ErrorClass.RETRYABLE


async def test_async_is_not_supported(connect: Callable[..., SoapConnector]) -> None:
    connector = connect()
    with pytest.raises(StepError) as started:
        await connector.start_async(lookup("E-1"), "token")
    assert started.value.error_class is ErrorClass.PERMANENT
    with pytest.raises(StepError) as polled:
        await connector.check_status(lookup("E-1"), "op-1")
    assert polled.value.error_class is ErrorClass.PERMANENT


async def test_capabilities_come_from_the_config(connect: Callable[..., SoapConnector]) -> None:
    connector = connect(capabilities=["employee.lookup"])
    assert connector.capabilities() == {"employee.lookup"}


async def test_a_closed_connector_refuses_calls(connect: Callable[..., SoapConnector]) -> None:
    connector = connect()
    await connector.execute(lookup("E-1"))
    await connector.aclose()
    await connector.aclose()  # idempotent
    with pytest.raises(UsageError, match="closed"):
        await connector.execute(lookup("E-1"))


def test_fault_codes_and_json_safety() -> None:
    import datetime as dt
    from decimal import Decimal

    assert fault_error_class("{http://www.w3.org/2003/05/soap-envelope}Receiver") == (
        ErrorClass.RETRYABLE
    )
    assert fault_error_class("env:Sender", ["app:BadInput"]) is ErrorClass.VALIDATION
    assert fault_error_class(None) is ErrorClass.PERMANENT
    assert json_safe({"d": Decimal("12"), "t": dt.time(9, 30), "x": dt.timedelta(hours=1)}) == {
        "d": 12,
        "t": "09:30:00",
        "x": "PT1H",
    }


async def test_through_the_hub_with_the_real_registry(server: SoapServer, tmp_path: Path) -> None:
    import legato.connectors.hub as hub_module
    from legato.connectors.registry import load_registry

    services = tmp_path / "services.yaml"
    services.write_text(
        f"""
services:
  - name: hr-legacy
    type: soap
    endpoint: {server.url}/employees
    wsdl: {WSDL}
    auth: {{type: api_key, header: X-API-Key, value: "${{HR_KEY}}"}}
    idempotency_header: X-Request-Key
    timeout: {{connect: 2s, request: 5s}}
    operations:
      employee.lookup: {{method: GetEmployee}}
"""
    )
    registry = load_registry(services, {"HR_KEY": "hr-key-1"})
    async with hub_module.Connectors(registry) as hub:
        result = await hub.execute(lookup("E-9", correlation_id="", traceparent=""))
        with pytest.raises(StepError) as caught:
            await hub.execute(lookup("fault-client", correlation_id="", traceparent=""))
    assert result.output["id"] == "E-9"
    assert caught.value.error_class is ErrorClass.VALIDATION
    headers = server.requests[0]["headers"]
    assert headers["x-api-key"] == "hr-key-1"
    assert headers["x-request-key"] == "run-1/employee.lookup"
    assert headers["x-correlation-id"] == "run-1:step-employee.lookup"  # set by the hub
    assert headers["traceparent"].startswith("00-")
