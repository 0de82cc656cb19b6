"""Who is calling, and what they may do: bearer tokens (JWT) made into a ``Principal``.

A token is a JWT signed with HS256 (``LEGATO_API_JWT_SECRET``) or RS256 (a public key,
``LEGATO_API_JWT_PUBLIC_KEY``, or the keys of a JWKS file, ``LEGATO_API_JWT_JWKS``, chosen
by the token's ``kid``).  It must carry ``exp``, ``tenant_id`` and ``environment_id``, and
``scopes`` (a list, or one space-separated string; ``scope`` is read too) among
``workflows:read``, ``workflows:write``, ``workflows:execute`` and ``admin`` (admin
implies the others).  When ``LEGATO_API_JWT_ISSUER``/``_AUDIENCE`` are set, ``iss``/``aud``
must match.

This is FastAPI dependencies only: :func:`authenticate` checks the token and gives the
principal; :func:`authorize`, declared by a route with ``Security(authorize, scopes=...)``,
refuses a principal without those scopes.  Handlers never check anything themselves.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from legato.api.problems import AuthenticationError, PermissionDenied
from legato.errors import ConfigurationError, UsageError
from legato.settings import Settings
from legato.store import Scope

READ = "workflows:read"
WRITE = "workflows:write"
EXECUTE = "workflows:execute"
ADMIN = "admin"
SCOPES = (READ, WRITE, EXECUTE, ADMIN)

MIN_SECRET_BYTES = 32
DEV_TOKEN_SECONDS = 30 * 24 * 3600
LEEWAY_SECONDS = 30  # clock skew tolerated on exp / nbf / iat


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: the token's subject, the tenant and environment it acts in, its scopes."""

    subject: str | None
    scope: Scope
    scopes: frozenset[str]

    def allows(self, needed: str) -> bool:
        return ADMIN in self.scopes or needed in self.scopes


def _scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scopes")
    if raw is None:
        raw = claims.get("scope")
    if raw is None:
        return frozenset()
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return frozenset(raw)
    raise _invalid("its `scopes` claim must be a list of strings or one space-separated string")


def _invalid(why: str) -> AuthenticationError:
    return AuthenticationError(
        f"the bearer token is not accepted: {why}. Fix: send a valid token in "
        "`Authorization: Bearer <token>`",
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{why}"'},
    )


class TokenVerifier:
    """Checks tokens against the configured keys; mints tokens when it holds a secret."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: Any = None,
        jwks: jwt.PyJWKSet | None = None,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        if secret is None and public_key is None and jwks is None:
            raise ConfigurationError(
                "the API has no way to check tokens. Fix: set LEGATO_API_JWT_SECRET (HS256), "
                "LEGATO_API_JWT_PUBLIC_KEY (RS256, a PEM file) or LEGATO_API_JWT_JWKS (a JWKS "
                "file), or start `legato serve --dev` to get a generated secret and a token"
            )
        if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"LEGATO_API_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes, which is "
                "too weak for HS256. Fix: use a longer random secret, for example the output "
                "of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        self._secret = secret
        self._public_key = public_key
        self._jwks = jwks
        self.issuer = issuer
        self.audience = audience

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """The verifier the settings describe.  In dev mode without any key, a random
        HS256 secret (valid while this process lives)."""
        secret = settings.api_jwt_secret or None
        public_key = _load_public_key(settings.api_jwt_public_key)
        jwks = _load_jwks(settings.api_jwt_jwks)
        if settings.api_dev and secret is None and public_key is None and jwks is None:
            secret = secrets.token_urlsafe(48)
        return cls(
            secret=secret,
            public_key=public_key,
            jwks=jwks,
            issuer=settings.api_jwt_issuer or None,
            audience=settings.api_jwt_audience or None,
        )

    @property
    def can_mint(self) -> bool:
        return self._secret is not None

    def mint(
        self,
        *,
        tenant_id: str = "default",
        environment_id: str = "default",
        scopes: Iterable[str] = SCOPES,
        subject: str = "dev",
        lifetime: float = DEV_TOKEN_SECONDS,
    ) -> str:
        """An HS256 token for this verifier (dev mode, tests, scripts)."""
        if self._secret is None:
            raise UsageError("this verifier has no HS256 secret, so it cannot mint tokens")
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": subject,
            "tenant_id": tenant_id,
            "environment_id": environment_id,
            "scopes": list(scopes),
            "iat": now,
            "exp": now + int(lifetime),
        }
        if self.issuer:
            claims["iss"] = self.issuer
        if self.audience:
            claims["aud"] = self.audience
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _invalid("it is not a JWT") from None
        algorithm = header.get("alg")
        key: Any
        if algorithm == "HS256" and self._secret is not None:
            key = self._secret
        elif algorithm == "RS256" and (self._public_key is not None or self._jwks is not None):
            key = self._rsa_key(header.get("kid"))
        else:
            accepted = [
                alg
                for alg, present in (
                    ("HS256", self._secret is not None),
                    ("RS256", self._public_key is not None or self._jwks is not None),
                )
                if present
            ]
            raise _invalid(
                f"it is signed with {algorithm!r}; this server accepts {' or '.join(accepted)}"
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("it has expired; get a new one") from None
        except jwt.InvalidSignatureError:
            raise _invalid("its signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"it has no `{exc.claim}` claim") from None
        except jwt.InvalidAudienceError:
            raise _invalid(f"its audience is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise _invalid(f"its issuer is not {self.issuer!r}") from None
        except jwt.InvalidTokenError as exc:
            raise _invalid(f"it is invalid ({type(exc).__name__})") from None
        tenant, environment = claims.get("tenant_id"), claims.get("environment_id")
        for claim, value in (("tenant_id", tenant), ("environment_id", environment)):
            if not isinstance(value, str) or not value:
                raise _invalid(f"it has no `{claim}` claim (a non-empty string)")
        subject = claims.get("sub")
        return Principal(
            subject=subject if isinstance(subject, str) else None,
            scope=Scope(str(tenant), str(environment)),
            scopes=_scopes_of(claims),
        )

    def _rsa_key(self, kid: Any) -> Any:
        if self._jwks is not None:
            keys = self._jwks.keys
            if kid is not None:
                for candidate in keys:
                    if candidate.key_id == kid:
                        return candidate.key
                if self._public_key is None:
                    raise _invalid(f"no key of the JWKS has kid {kid!r}")
            elif len(keys) == 1:
                return keys[0].key
            elif self._public_key is None:
                raise _invalid("it names no `kid`, and the JWKS holds several keys")
        return self._public_key


def _load_public_key(value: str | None) -> Any:
    if not value:
        return None
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = value
    if not value.lstrip().startswith("-----BEGIN"):
        path = Path(value).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"LEGATO_API_JWT_PUBLIC_KEY: cannot read {str(path)!r} ({exc.strerror or exc}). "
                "Fix: give the path of a PEM public key file, or the PEM text itself"
            ) from exc
    try:
        key = load_pem_public_key(text.encode())
    except ValueError as exc:
        raise ConfigurationError(
            "LEGATO_API_JWT_PUBLIC_KEY is not a PEM public key. Fix: give the RSA public key "
            "(`-----BEGIN PUBLIC KEY-----` ...) that verifies your tokens"
        ) from exc
    if not isinstance(key, RSAPublicKey):
        raise ConfigurationError(
            "LEGATO_API_JWT_PUBLIC_KEY is not an RSA key; tokens are verified with RS256"
        )
    return key


def _load_jwks(value: str | None) -> jwt.PyJWKSet | None:
    if not value:
        return None
    path = Path(value).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return jwt.PyJWKSet.from_dict(data)
    except OSError as exc:
        raise ConfigurationError(
            f"LEGATO_API_JWT_JWKS: cannot read {str(path)!r} ({exc.strerror or exc}). "
            'Fix: give the path of a JWKS file ({"keys": [...]})'
        ) from exc
    except (ValueError, jwt.PyJWKError, jwt.PyJWKSetError) as exc:
        raise ConfigurationError(
            f"LEGATO_API_JWT_JWKS: {str(path)!r} is not a usable JWKS ({exc}). Fix: give a "
            'JSON file {"keys": [{"kty": "RSA", "kid": ..., "n": ..., "e": ...}]}'
        ) from exc


# ---- the dependencies ---------------------------------------------------------------------------

bearer = HTTPBearer(
    auto_error=False,
    description="A JWT carrying `tenant_id`, `environment_id` and `scopes`.",
)


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller, from the request's bearer token (401 when missing or invalid)."""
    if credentials is None:
        raise AuthenticationError(
            "this route needs a bearer token. Fix: send `Authorization: Bearer <token>` "
            "(a JWT with tenant_id, environment_id and scopes)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.verify(credentials.credentials)


async def authorize(
    security_scopes: SecurityScopes,
    principal: Annotated[Principal, Depends(authenticate)],
) -> Principal:
    """The caller, if its token grants every scope the route declares (403 otherwise)."""
    missing = [s for s in security_scopes.scopes if not principal.allows(s)]
    if missing:
        needed = " ".join(missing)
        granted = ", ".join(sorted(principal.scopes)) or "no scope"
        raise PermissionDenied(
            f"this needs the scope {needed}; the token grants {granted}. Fix: use a token "
            f"with `{needed}` (or `admin`) in its scopes",
            details={"required": missing, "granted": sorted(principal.scopes)},
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
        )
    return principal
