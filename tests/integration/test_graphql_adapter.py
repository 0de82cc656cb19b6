"""GraphQLConnector against a real GraphQL server on loopback: a small graphql-core schema
served by a stdlib HTTP server, plus routes that answer HTTP errors, sleep, or are not
GraphQL at all."""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import graphql
import pytest

from legato import ErrorClass, StepError
from legato.connectors.auth import build_auth
from legato.connectors.base import Connector, Result, Task
from legato.connectors.config import ApiKeyAuth, BearerAuth, OAuth2Auth, ServiceConfig
from legato.connectors.graphql import GraphQLConnector, classify_graphql_errors
from legato.net import NetworkPolicy

SCHEMA = graphql.build_schema(
    """
    type Customer { id: ID!, name: String! }
    type JobError { class: String, message: String }
    type Job { id: ID!, status: String!, result: Customer, error: JobError }
    type Query {
      customer(id: ID!): Customer
      fail(code: String, retryAfter: Int): String
      ok: String
      secure: String
      job(id: ID!): Job
    }
    type Mutation {
      createCustomer(name: String!): Customer!
      startImport(name: String!): Job!
    }
    """
)

OPERATIONS: dict[str, Any] = {
    "customer.create": {
        "query": "mutation ($name: String!) { createCustomer(name: $name) { id name } }",
        "result": "createCustomer",
    },
    "customer.get": {"query": "query ($id: ID!) { customer(id: $id) { id name } }"},
    "customer.id": {
        "query": "mutation Create($name: String!) { createCustomer(name: $name) { id } } "
        "query Other { ok }",
        "result": "createCustomer.id",
        "operation_name": "Create",
    },
    "fail": {
        "query": "query ($code: String, $retryAfter: Int) "
        "{ fail(code: $code, retryAfter: $retryAfter) }",
        "result": "fail",
    },
    "mixed": {
        "query": 'query { a: fail(code: "INTERNAL_SERVER_ERROR") b: fail(code: "BAD_USER_INPUT") }'
    },
    "secure": {"query": "query { secure }", "result": "secure"},
    "import.start": {
        "query": "mutation ($name: String!) { startImport(name: $name) { id status } }",
        "result": "startImport",
    },
    "import.status": {
        "query": "query ($operation_id: ID!) { job(id: $operation_id) "
        "{ status result { id name } error { class message } } }",
        "result": "job",
    },
}


class GraphQLServer:
    """``POST /graphql`` runs the schema; ``/http/<status>`` answers that status;
    ``/slow`` sleeps; ``/plain`` answers JSON that is not GraphQL; ``POST /token`` is an
    OAuth2 token endpoint; ``/graphql-401`` answers 401 unless the token is tok-2."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.tokens = 0
        self.jobs: dict[str, dict[str, Any]] = {}
        self.stopping = threading.Event()
        server = self

        def fail(_info: Any, code: str | None = None, retryAfter: int | None = None) -> str:
            extensions: dict[str, Any] = {}
            if code is not None:
                extensions["code"] = code
            if retryAfter is not None:
                extensions["retryAfter"] = retryAfter
            raise graphql.GraphQLError(f"failed with {code}", extensions=extensions or None)

        def secure(info: Any) -> str:
            if info.context["headers"].get("authorization") != "Bearer tok-2":
                raise graphql.GraphQLError("token expired", extensions={"code": "UNAUTHENTICATED"})
            return "welcome"

        def start_import(_info: Any, name: str) -> dict[str, Any]:
            job_id = f"job-{len(server.jobs) + 1}"
            server.jobs[job_id] = {"id": job_id, "status": "PENDING", "name": name}
            return server.jobs[job_id]

        def job(_info: Any, id: str) -> dict[str, Any] | None:
            state = server.jobs.get(id)
            if state is None:
                return None
            out = {"id": id, "status": state["status"], "result": None, "error": None}
            if state["status"] == "COMPLETED":
                out["result"] = {"id": "C-9", "name": state["name"]}
            if state["status"] == "FAILED":
                out["error"] = {"class": "VALIDATION", "message": "bad file"}
            return out

        self.root = {
            "customer": lambda _info, id: {"id": id, "name": "Ada"},
            "createCustomer": lambda _info, name: {"id": "C-1", "name": name},
            "fail": fail,
            "ok": lambda _info: "fine",
            "secure": secure,
            "startImport": start_import,
            "job": job,
        }

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.send(405, {"error": "use POST"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                parts = urlsplit(self.path)
                if parts.path == "/token":
                    server.tokens += 1
                    self.send(200, {"access_token": f"tok-{server.tokens}", "expires_in": 3600})
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                payload = json.loads(raw) if raw else None
                server.requests.append({"path": parts.path, "headers": headers, "body": payload})
                if parts.path.startswith("/http/"):
                    status = int(parts.path.removeprefix("/http/"))
                    extra = {}
                    retry = parse_qs(parts.query).get("retry")
                    if retry:
                        extra["Retry-After"] = retry[0]
                    if parse_qs(parts.query).get("date"):
                        extra["Retry-After"] = email.utils.formatdate(
                            time.time() + 120, usegmt=True
                        )
                    self.send(status, {"errors": [{"message": f"HTTP {status}"}]}, extra)
                elif parts.path == "/slow":
                    server.stopping.wait(5)
                    self.send(200, {"data": {"ok": "late"}})
                elif parts.path == "/plain":
                    self.send(200, {"hello": "world"})
                elif parts.path == "/graphql-401" and headers.get("authorization") != (
                    "Bearer tok-2"
                ):
                    self.send(401, {"errors": [{"message": "token expired"}]})
                else:
                    self.run(payload, headers)

            def run(self, payload: dict[str, Any], headers: dict[str, str]) -> None:
                try:
                    document = graphql.parse(payload["query"])
                except graphql.GraphQLError as exc:
                    error = {**exc.formatted, "extensions": {"code": "GRAPHQL_PARSE_FAILED"}}
                    self.send(400, {"errors": [error]})
                    return
                problems = graphql.validate(SCHEMA, document)
                if problems:
                    errors = [
                        {**p.formatted, "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}
                        for p in problems
                    ]
                    self.send(400, {"errors": errors})
                    return
                result = graphql.execute_sync(
                    SCHEMA,
                    document,
                    root_value=server.root,
                    context_value={"headers": headers},
                    variable_values=payload.get("variables"),
                    operation_name=payload.get("operationName"),
                )
                if result.data is None and result.errors:  # variables that do not coerce
                    errors = [
                        {**e.formatted, "extensions": {"code": "BAD_USER_INPUT"}}
                        for e in result.errors
                    ]
                    self.send(400, {"errors": errors})
                    return
                self.send(200, result.formatted)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> GraphQLServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


def oauth2(server: GraphQLServer) -> OAuth2Auth:
    return OAuth2Auth(
        type="oauth2", client_id="c", client_secret="s", token_url=f"{server.url}/token"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_task(operation: str, input: Any = None, **fields: Any) -> Task:
    defaults: dict[str, Any] = {
        "task_id": f"step-{operation}",
        "run_id": "run-1",
        "workflow": "crm-sync",
        "service": "crm",
        "idempotency_key": f"run-1/{operation}",
        "correlation_id": "run-1:step",
        "traceparent": "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
    }
    return Task(operation=operation, input=input, **{**defaults, **fields})


@pytest.fixture
def server() -> Iterator[GraphQLServer]:
    with GraphQLServer() as srv:
        yield srv


@pytest.fixture
async def connect(server: GraphQLServer) -> AsyncIterator[Callable[..., GraphQLConnector]]:
    made: list[GraphQLConnector] = []
    providers: list[Any] = []

    def build(*, auth: Any = None, path: str = "/graphql", **overrides: Any) -> GraphQLConnector:
        data: dict[str, Any] = {
            "name": "crm",
            "type": "graphql",
            "endpoint": f"{server.url}{path}",
            "timeout": {"connect": 2, "request": 5},
            "operations": OPERATIONS,
        }
        data.update(overrides)
        if auth is not None:
            data["auth"] = auth
        config = ServiceConfig.model_validate(data)
        provider = build_auth(config.auth, NetworkPolicy(allow_private=True))
        providers.append(provider)
        connector = GraphQLConnector(config, auth=provider, network=NetworkPolicy())
        made.append(connector)
        return connector

    yield build
    for connector in made:
        await connector.aclose()
    for provider in providers:
        await provider.aclose()


async def test_satisfies_the_connector_protocol(
    connect: Callable[..., GraphQLConnector],
) -> None:
    assert isinstance(connect(), Connector)


async def test_a_mutation_returns_its_result_field(
    connect: Callable[..., GraphQLConnector], server: GraphQLServer
) -> None:
    result = await connect().execute(make_task("customer.create", {"name": "Ada"}))
    assert isinstance(result, Result)
    assert result.output == {"id": "C-1", "name": "Ada"}
    (request,) = server.requests
    assert request["body"] == {
        "query": OPERATIONS["customer.create"]["query"],
        "variables": {"name": "Ada"},
    }


async def test_without_result_the_output_is_data(connect: Callable[..., GraphQLConnector]) -> None:
    result = await connect().execute(make_task("customer.get", {"id": "C-7"}))
    assert result.output == {"customer": {"id": "C-7", "name": "Ada"}}


async def test_operation_name_and_a_dotted_result(
    connect: Callable[..., GraphQLConnector], server: GraphQLServer
) -> None:
    result = await connect().execute(make_task("customer.id", {"name": "Bo"}))
    assert result.output == "C-1"
    assert server.requests[0]["body"]["operationName"] == "Create"


async def test_headers_reach_the_server(
    connect: Callable[..., GraphQLConnector], server: GraphQLServer
) -> None:
    connector = connect(
        auth=ApiKeyAuth(type="api_key", header="X-Api-Token", value="key-1"),
        retry={"idempotency_header": "X-Idempotency"},
        headers={"X-Client": "legato-tests"},
    )
    await connector.execute(make_task("customer.create", {"name": "Ada"}, attempt=3))
    headers = server.requests[0]["headers"]
    assert headers["x-api-token"] == "key-1"
    assert headers["x-idempotency"] == "run-1/customer.create"
    assert "idempotency-key" not in headers
    assert headers["x-correlation-id"] == "run-1:step"
    assert headers["traceparent"] == "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"
    assert headers["x-legato-attempt"] == "3"
    assert headers["x-legato-run-id"] == "run-1"
    assert headers["x-client"] == "legato-tests"
    assert headers["content-type"] == "application/json"


async def test_bearer_auth(connect: Callable[..., GraphQLConnector], server: GraphQLServer) -> None:
    await connect(auth=BearerAuth(type="bearer", token="tkn")).execute(
        make_task("customer.create", {"name": "Ada"})
    )
    assert server.requests[0]["headers"]["authorization"] == "Bearer tkn"
    assert server.requests[0]["headers"]["idempotency-key"] == "run-1/customer.create"


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("UNAUTHENTICATED", ErrorClass.AUTH_FAILED),
        ("FORBIDDEN", ErrorClass.AUTH_FAILED),
        ("BAD_USER_INPUT", ErrorClass.VALIDATION),
        ("GRAPHQL_VALIDATION_FAILED", ErrorClass.VALIDATION),
        ("RATE_LIMITED", ErrorClass.RATE_LIMITED),
        ("INTERNAL_SERVER_ERROR", ErrorClass.RETRYABLE),
        ("SOMETHING_ELSE", ErrorClass.PERMANENT),
        (None, ErrorClass.PERMANENT),
    ],
)
async def test_errors_are_classified_by_extension_code(
    connect: Callable[..., GraphQLConnector], code: str | None, error_class: ErrorClass
) -> None:
    with pytest.raises(StepError) as caught:
        await connect().execute(make_task("fail", {"code": code}))
    assert caught.value.error_class is error_class
    assert "GraphQL error" in caught.value.message
    assert caught.value.details["errors"][0]["path"] == ["fail"]


async def test_rate_limited_honours_retry_after_extension(
    connect: Callable[..., GraphQLConnector],
) -> None:
    with pytest.raises(StepError) as caught:
        await connect().execute(make_task("fail", {"code": "RATE_LIMITED", "retryAfter": 12}))
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    assert caught.value.retry_after == 12


async def test_unauthenticated_refreshes_once_then_fails(
    connect: Callable[..., GraphQLConnector], server: GraphQLServer
) -> None:
    with pytest.raises(StepError) as caught:
        await connect().execute(make_task("fail", {"code": "UNAUTHENTICATED"}))
    assert caught.value.details["refreshed"] is True
    assert len(server.requests) == 2


async def test_partial_data_with_errors_is_an_error(
    connect: Callable[..., GraphQLConnector],
) -> None:
    connector = connect(
        operations={"partial": {"query": 'query { ok fail(code: "INTERNAL_SERVER_ERROR") }'}}
    )
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("partial"))
    assert caught.value.error_class is ErrorClass.RETRYABLE
    assert caught.value.details["partial_data"] is True


async def test_the_most_decisive_error_wins(connect: Callable[..., GraphQLConnector]) -> None:
    with pytest.raises(StepError) as caught:
        await connect().execute(make_task("mixed"))
    assert caught.value.error_class is ErrorClass.VALIDATION
    assert caught.value.details["error_count"] == 2
    assert "1 more" in caught.value.message


async def test_an_invalid_document_or_variables_is_validation(
    connect: Callable[..., GraphQLConnector],
) -> None:
    broken = connect(operations={"x": {"query": "query { nope }"}})
    with pytest.raises(StepError) as invalid:
        await broken.execute(make_task("x"))
    assert invalid.value.error_class is ErrorClass.VALIDATION
    assert "nope" in invalid.value.message
    with pytest.raises(StepError) as missing:  # $name is required
        await connect().execute(make_task("customer.create", {}))
    assert missing.value.error_class is ErrorClass.VALIDATION


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, ErrorClass.VALIDATION),
        (401, ErrorClass.AUTH_FAILED),
        (403, ErrorClass.AUTH_FAILED),
        (404, ErrorClass.PERMANENT),
        (422, ErrorClass.VALIDATION),
        (429, ErrorClass.RATE_LIMITED),
        (500, ErrorClass.RETRYABLE),
        (503, ErrorClass.RETRYABLE),
    ],
)
async def test_http_errors_are_classified_as_rest(
    connect: Callable[..., GraphQLConnector], status: int, error_class: ErrorClass
) -> None:
    with pytest.raises(StepError) as caught:
        await connect(path=f"/http/{status}").execute(make_task("customer.create", {"name": "A"}))
    assert caught.value.error_class is error_class
    assert caught.value.details["status"] == status


async def test_http_429_retry_after_seconds_and_date(
    connect: Callable[..., GraphQLConnector],
) -> None:
    with pytest.raises(StepError) as seconds:
        await connect(path="/http/429?retry=30").execute(make_task("customer.create", {}))
    assert seconds.value.retry_after == 30
    with pytest.raises(StepError) as date:
        await connect(path="/http/429?date=1").execute(make_task("customer.create", {}))
    assert date.value.retry_after is not None
    assert 100 < date.value.retry_after <= 121


async def test_refresh_once_on_http_401_with_oauth2(
    connect: Callable[..., GraphQLConnector], server: GraphQLServer
) -> None:
    auth = OAuth2Auth(
        type="oauth2", client_id="c", client_secret="s", token_url=f"{server.url}/token"
    )
    connector = connect(auth=auth, path="/graphql-401")
    result = await connector.execute(make_task("customer.create", {"name": "Ada"}))
    assert result.output == {"id": "C-1", "name": "Ada"}
    assert [r["headers"]["authorization"] for r in server.requests] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]


async def test_refresh_once_on_unauthenticated_error(
    connect: Callable[..., GraphQLConnector], server: GraphQLServer
) -> None:
    auth = OAuth2Auth(
        type="oauth2", client_id="c", client_secret="s", token_url=f"{server.url}/token"
    )
    result = await connect(auth=auth).execute(make_task("secure"))
    assert result.output == "welcome"
    assert server.tokens == 2


async def test_a_slow_server_is_a_timeout(connect: Callable[..., GraphQLConnector]) -> None:
    connector = connect(path="/slow", timeout={"connect": 1, "request": 0.3})
    started = time.monotonic()
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("customer.create", {"name": "A"}))
    assert caught.value.error_class is ErrorClass.TIMEOUT
    assert time.monotonic() - started < 3


async def test_connection_refused_is_retryable(connect: Callable[..., GraphQLConnector]) -> None:
    connector = connect(endpoint=f"http://127.0.0.1:{free_port()}/graphql")
    with pytest.raises(StepError) as caught:
        await connector.execute(make_task("customer.create", {"name": "A"}))
    assert caught.value.error_class is ErrorClass.RETRYABLE


async def test_configuration_and_input_mistakes(connect: Callable[..., GraphQLConnector]) -> None:
    connector = connect()
    with pytest.raises(StepError) as unknown:
        await connector.execute(make_task("customer.delete", {"id": "C-1"}))
    assert unknown.value.error_class is ErrorClass.PERMANENT
    assert "operations.customer.delete.query" in unknown.value.message
    with pytest.raises(StepError) as not_object:
        await connector.execute(make_task("customer.create", ["Ada"]))
    assert not_object.value.error_class is ErrorClass.VALIDATION
    with pytest.raises(StepError) as not_graphql:
        await connect(path="/plain").execute(make_task("customer.create", {"name": "A"}))
    assert not_graphql.value.error_class is ErrorClass.PERMANENT
    missing_field = connect(operations={"x": {"query": "query { ok }", "result": "nope"}})
    with pytest.raises(StepError) as no_field:
        await missing_field.execute(make_task("x"))
    assert no_field.value.error_class is ErrorClass.PERMANENT


async def test_batch_gives_one_outcome_per_task(connect: Callable[..., GraphQLConnector]) -> None:
    tasks = [
        make_task("customer.create", {"name": "A"}, task_id="a"),
        make_task("fail", {"code": "BAD_USER_INPUT"}, task_id="b"),
        make_task("customer.create", {"name": "C"}, task_id="c"),
    ]
    results = await connect().execute_batch(tasks)
    assert isinstance(results[0], Result)
    assert results[0].output == {"id": "C-1", "name": "A"}
    assert isinstance(results[1], StepError)
    assert results[1].error_class is ErrorClass.VALIDATION
    assert isinstance(results[2], Result)
    assert results[2].output["name"] == "C"


async def test_async_start_and_check_status(
    connect: Callable[..., GraphQLConnector], server: GraphQLServer
) -> None:
    config = {"status_operation": "import.status", "poll_interval": 1}
    connector = connect(async_=config)
    task = make_task("import.start", {"name": "Ada"})
    ack = await connector.start_async(task, "cb-token-1")
    assert ack.operation_id == "job-1"
    assert ack.metadata["task_status"] == "PENDING"
    assert server.requests[0]["headers"]["x-callback-token"] == "cb-token-1"
    assert await connector.check_status(task, "job-1") is None
    assert server.requests[1]["body"]["variables"] == {"operation_id": "job-1"}
    server.jobs["job-1"]["status"] = "COMPLETED"
    done = await connector.check_status(task, "job-1")
    assert done is not None
    assert done.output == {"id": "C-9", "name": "Ada"}
    assert done.operation_id == "job-1"
    server.jobs["job-1"]["status"] = "FAILED"
    with pytest.raises(StepError) as caught:
        await connector.check_status(task, "job-1")
    assert caught.value.error_class is ErrorClass.VALIDATION
    assert "bad file" in caught.value.message


async def test_callback_url_is_sent_when_given(server: GraphQLServer) -> None:
    config = ServiceConfig.model_validate(
        {
            "name": "crm",
            "type": "graphql",
            "endpoint": f"{server.url}/graphql",
            "operations": OPERATIONS,
        }
    )
    async with GraphQLConnector(config, callback_url="https://legato.example/cb/{token}") as c:
        await c.start_async(make_task("import.start", {"name": "A"}), "t/1")
    assert server.requests[0]["headers"]["x-callback-url"] == "https://legato.example/cb/t%2F1"


async def test_health_check(
    connect: Callable[..., GraphQLConnector], server: GraphQLServer
) -> None:
    await connect().health_check()
    assert server.requests[-1]["body"]["query"] == "query { __typename }"
    await connect(operations={"health": {"query": "query { ok }"}}).health_check()
    assert server.requests[-1]["body"]["query"] == "query { ok }"
    with pytest.raises(StepError) as caught:
        await connect(endpoint=f"http://127.0.0.1:{free_port()}/graphql").health_check()
    assert caught.value.error_class is ErrorClass.RETRYABLE
    with pytest.raises(StepError) as failing:
        await connect(path="/http/503").health_check()
    assert failing.value.error_class is ErrorClass.RETRYABLE


def test_error_precedence_and_capabilities() -> None:
    errors = [
        {"message": "a", "extensions": {"code": "RATE_LIMITED", "retryAfter": 3}},
        {"message": "b", "extensions": {"code": "INTERNAL_SERVER_ERROR"}},
    ]
    assert classify_graphql_errors(errors) == (ErrorClass.RATE_LIMITED, 0, 3.0)
    assert classify_graphql_errors([{"message": "x"}], retry_after_header="5")[0] is (
        ErrorClass.PERMANENT
    )
    config = ServiceConfig.model_validate(
        {
            "name": "crm",
            "type": "graphql",
            "endpoint": "https://crm.example/graphql",
            "capabilities": ["customer.create"],
        }
    )
    assert GraphQLConnector(config).capabilities() == {"customer.create"}


def test_malformed_configuration_is_refused() -> None:
    from legato.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        GraphQLConnector(
            ServiceConfig.model_validate(
                {"name": "crm", "type": "graphql", "endpoint": "crm.example:443"}
            )
        )
    with pytest.raises(ConfigurationError, match=r"operations\.x"):
        GraphQLConnector(
            ServiceConfig.model_validate(
                {
                    "name": "crm",
                    "type": "graphql",
                    "endpoint": "https://crm.example/graphql",
                    "operations": {"x": {"result": "y"}},
                }
            )
        )


async def test_through_the_hub_with_the_real_registry(
    server: GraphQLServer, tmp_path: Path
) -> None:
    import legato.connectors.hub as hub_module
    from legato.connectors.registry import load_registry

    services = tmp_path / "services.yaml"
    services.write_text(
        f"""
services:
  - name: crm
    type: graphql
    endpoint: {server.url}/graphql
    auth: {{type: bearer, token: "${{CRM_TOKEN}}"}}
    operations:
      customer.create:
        query: "mutation ($name: String!) {{ createCustomer(name: $name) {{ id name }} }}"
        result: createCustomer
"""
    )
    registry = load_registry(services, {"CRM_TOKEN": "crm-token-1"})
    async with hub_module.Connectors(registry) as hub:
        result = await hub.execute(
            make_task("customer.create", {"name": "Ada"}, correlation_id="", traceparent="")
        )
        await hub.health_check("crm")
    assert result.output == {"id": "C-1", "name": "Ada"}
    headers = server.requests[0]["headers"]
    assert headers["authorization"] == "Bearer crm-token-1"
    assert headers["x-correlation-id"] == "run-1:step-customer.create"
