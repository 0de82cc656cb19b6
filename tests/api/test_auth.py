"""Identity and access: every authenticated route answers 401 without a valid token and
403 without its scope; tokens are HS256, RS256 (a PEM key) or RS256 from a JWKS file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.api.conftest import (
    AUTHENTICATED,
    ITEM_ROUTES,
    ORDERED,
    ROUTES,
    SECRET,
    Api,
    Resources,
    route_id,
)

from legato.api import TokenVerifier, create_app
from legato.api.auth import ADMIN, EXECUTE, READ, SCOPES, WRITE
from legato.errors import ConfigurationError
from legato.settings import Settings


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "ada",
        "tenant_id": "acme",
        "environment_id": "prod",
        "scopes": [READ, WRITE, EXECUTE],
        "iat": now,
        "exp": now + 600,
        **extra,
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


BAD_TOKENS = {
    "no token": None,
    "bad signature": jwt.encode(claims(), "another-secret-" + "x" * 40, "HS256"),
    "expired": jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, "HS256"),
    "not a jwt": "not.a.jwt",
    "no exp": jwt.encode({k: v for k, v in claims().items() if k != "exp"}, SECRET, "HS256"),
    "no tenant": jwt.encode({**claims(), "tenant_id": None}, SECRET, "HS256"),
    "no environment": jwt.encode(
        {k: v for k, v in claims().items() if k != "environment_id"}, SECRET, "HS256"
    ),
    "alg none": jwt.encode(claims(), None, "none"),
    "basic auth": "basic",
}


@pytest.mark.parametrize("key", AUTHENTICATED, ids=route_id)
@pytest.mark.parametrize("problem", ["no token", "bad signature", "expired"])
async def test_every_route_answers_401_without_a_valid_token(
    api: Api, key: tuple[str, str], problem: str
) -> None:
    token = BAD_TOKENS[problem]
    headers = {} if token is None else bearer(token)
    response = await ROUTES[key].call(Resources()).send(api.client, headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["status"] == 401
    assert body["type"] == "urn:legato:problem:unauthenticated"
    assert "Fix:" in body["detail"]
    if problem == "expired":
        assert "expired" in body["detail"]
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("problem", sorted(set(BAD_TOKENS) - {"no token"}))
async def test_each_kind_of_bad_token_is_refused_and_says_why(api: Api, problem: str) -> None:
    token = BAD_TOKENS[problem]
    headers = {"Authorization": "Basic YTpi"} if problem == "basic auth" else bearer(str(token))
    response = await api.client.get("/api/v1/workflows/definitions", headers=headers)
    assert response.status_code == 401, response.text
    detail = response.json()["detail"]
    expected = {
        "bad signature": "signature does not verify",
        "expired": "expired",
        "not a jwt": "not a JWT",
        "no exp": "`exp`",
        "no tenant": "`tenant_id`",
        "no environment": "`environment_id`",
        "alg none": "'none'",
        "basic auth": "needs a bearer token",
    }[problem]
    assert expected in detail


@pytest.mark.parametrize("key", AUTHENTICATED, ids=route_id)
async def test_every_route_answers_403_without_its_scope(api: Api, key: tuple[str, str]) -> None:
    needed = ROUTES[key].scope
    others = tuple(s for s in (READ, WRITE, EXECUTE) if s != needed)
    response = await ROUTES[key].call(Resources()).send(api.client, api.as_(scopes=others))
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["type"] == "urn:legato:problem:forbidden"
    assert needed in body["detail"]
    assert f'scope="{needed}"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("key", ITEM_ROUTES, ids=route_id)
async def test_every_route_naming_a_resource_answers_404_for_one_that_does_not_exist(
    api: Api, key: tuple[str, str]
) -> None:
    response = await ROUTES[key].call(Resources()).send(api.client, api.as_())
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["type"] == "urn:legato:problem:not-found"
    assert body["instance"].startswith("/api/v1/")
    assert "does not exist" in body["detail"]


async def test_admin_implies_every_scope_and_scopes_may_be_one_string(api: Api) -> None:
    created = await api.create(ORDERED, headers=api.as_(scopes=(ADMIN,)))
    spaced = api.as_(scopes=f"{READ} {EXECUTE}")
    r = await api.client.get(f"/api/v1/workflows/definitions/{created['id']}", headers=spaced)
    assert r.status_code == 200
    r = await api.client.post(
        f"/api/v1/workflows/definitions/{created['id']}/trigger", json={}, headers=spaced
    )
    assert r.status_code == 202
    r = await api.client.post(
        f"/api/v1/workflows/definitions/{created['id']}/disable", headers=spaced
    )
    assert r.status_code == 403
    # `scope` (the OAuth 2 claim) is read too
    token = jwt.encode({**claims(), "scopes": None, "scope": READ}, SECRET, "HS256")
    r = await api.client.get("/api/v1/workflows/definitions", headers=bearer(token))
    assert r.status_code == 200
    # a token with no scope at all reads nothing
    r = await api.client.get("/api/v1/workflows/definitions", headers=api.as_(scopes=()))
    assert r.status_code == 403
    assert "no scope" in r.json()["detail"]


async def test_the_subject_is_recorded_as_the_creator(api: Api) -> None:
    created = await api.create(ORDERED)
    assert created["created_by"] == "user-of-acme"


# ---- RS256, JWKS, issuer and audience -----------------------------------------------------------


def _rsa() -> tuple[Any, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return key, pem


async def _status(app: Any, token: str) -> int:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        r = await c.get("/api/v1/workflows/definitions", headers=bearer(token))
        return r.status_code


async def test_rs256_with_a_public_key_file_and_issuer_and_audience(tmp_path: Path) -> None:
    key, pem = _rsa()
    (tmp_path / "key.pem").write_text(pem)
    settings = Settings(
        db=str(tmp_path / "l.db"),
        api_jwt_public_key=str(tmp_path / "key.pem"),
        api_jwt_issuer="https://id.example",
        api_jwt_audience="legato",
    )
    app = create_app(settings)
    good = jwt.encode(claims(iss="https://id.example", aud="legato"), key, "RS256")
    assert await _status(app, good) == 200
    app = create_app(settings)
    wrong_aud = jwt.encode(claims(iss="https://id.example", aud="other"), key, "RS256")
    assert await _status(app, wrong_aud) == 401
    app = create_app(settings)
    other_key, _ = _rsa()
    assert (
        await _status(
            app, jwt.encode(claims(iss="https://id.example", aud="legato"), other_key, "RS256")
        )
        == 401
    )
    # an HS256 token signed with the public key's text (the algorithm-confusion attack)
    app = create_app(settings)
    confused = jwt.api_jws.PyJWS().encode(
        json.dumps(claims(iss="https://id.example", aud="legato")).encode(),
        "x" * 64,
        algorithm="HS256",
    )
    assert await _status(app, confused) == 401


async def test_rs256_keys_from_a_jwks_file_chosen_by_kid(tmp_path: Path) -> None:
    first, _ = _rsa()
    second, _ = _rsa()
    keys = []
    for kid, key in (("one", first), ("two", second)):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}))
    settings = Settings(db=str(tmp_path / "l.db"), api_jwt_jwks=str(tmp_path / "jwks.json"))
    for kid, key, expected in (("two", second, 200), ("one", second, 401), ("six", first, 401)):
        token = jwt.encode(claims(), key, "RS256", headers={"kid": kid})
        assert await _status(create_app(settings), token) == expected, kid


def test_the_server_refuses_to_start_without_a_way_to_check_tokens(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="LEGATO_API_JWT_SECRET"):
        create_app(Settings(db=str(tmp_path / "l.db")))
    with pytest.raises(ConfigurationError, match="shorter than 32 bytes"):
        create_app(Settings(db=str(tmp_path / "l.db"), api_jwt_secret="short"))
    with pytest.raises(ConfigurationError, match="cannot read"):
        create_app(Settings(db=str(tmp_path / "l.db"), api_jwt_public_key="/nonexistent.pem"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigurationError, match="not a usable JWKS"):
        create_app(Settings(db=str(tmp_path / "l.db"), api_jwt_jwks=str(tmp_path / "bad.json")))


def test_dev_mode_generates_a_secret_and_a_token_with_every_scope(tmp_path: Path) -> None:
    app = create_app(Settings(db=str(tmp_path / "l.db"), api_dev=True))
    verifier: TokenVerifier = app.state.verifier
    principal = verifier.verify(app.state.dev_token)
    assert principal.scope.tenant_id == principal.scope.environment_id == "default"
    assert principal.scopes == frozenset(SCOPES)
    # a new process, a new secret: the old token is worthless there
    other = create_app(Settings(db=str(tmp_path / "l.db"), api_dev=True))
    assert other.state.dev_token != app.state.dev_token
    with pytest.raises(Exception, match="signature"):
        other.state.verifier.verify(app.state.dev_token)
    # dev mode with a configured secret uses it
    fixed = create_app(Settings(db=str(tmp_path / "l.db"), api_dev=True, api_jwt_secret=SECRET))
    assert fixed.state.verifier.verify(fixed.state.dev_token).subject == "dev"
    assert jwt.decode(fixed.state.dev_token, SECRET, algorithms=["HS256"])["tenant_id"] == (
        "default"
    )


@pytest.mark.parametrize("key", ITEM_ROUTES, ids=route_id)
async def test_every_route_naming_a_resource_validates_its_path(
    api: Api, key: tuple[str, str]
) -> None:
    too_long = Resources(
        workflow_id="w" * 201, waiting_execution_id="e" * 201, failed_execution_id="f" * 201
    )
    route = ROUTES[key]
    response = await route.call(too_long).send(api.client, api.as_())
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    if route.named_in == "body":  # POST /api/v1/instances names its template in the body
        assert error["pointer"].startswith("/body/")
        assert "in the request body" in error["fix"]
    else:
        assert error["pointer"].startswith("/path/")
        assert error["fix"].startswith("correct the path parameter")
