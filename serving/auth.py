"""Bearer-token (JWT) verification for the scoring API.

Every knob is explicit: exactly one algorithm is accepted (``jwt_algorithm``), and a token's header must
name that algorithm, so ``alg: none`` and an HS256 token signed with a public key as the secret are
rejected before any signature check. ``exp``, ``iat``, ``iss``, ``aud`` and ``sub`` are required; the
leeway for clock skew is ``jwt_leeway_seconds``; a token that lives longer than ``jwt_max_ttl_seconds``
is rejected. Scopes are the space-separated ``scope`` claim (RFC 8693), or a JSON list in ``scope``/``scp``.

Rule for profile prod: HS256 (one shared secret for signing and verifying) is rejected at start-up unless
``jwt_allow_hs256_in_prod`` is true; prod is expected to verify RS256/ES256 tokens with a public key or a
JWKS file, so the API never has a key that can mint tokens.

Error messages name the failed check, never the token or its claims.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from healthflow.errors import AuthenticationError, PermissionDeniedError
from healthflow.settings import Settings

logger = logging.getLogger(__name__)

SCORE_READ = "score:read"
MODEL_READ = "model:read"
AUDIT_READ = "audit:read"
KNOWN_SCOPES = (SCORE_READ, MODEL_READ, AUDIT_READ)

REALM = "healthflow"
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")


class TokenError(AuthenticationError):
    """A missing or invalid bearer token; ``www_authenticate`` is the RFC 6750 challenge for the 401."""

    def __init__(self, message: str, *, error_code: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.error_code = error_code

    @property
    def www_authenticate(self) -> str:
        if self.error_code is None:
            return f'Bearer realm="{REALM}"'
        description = self.message.replace('"', "'")
        return f'Bearer realm="{REALM}", error="{self.error_code}", error_description="{description}"'


class ScopeError(PermissionDeniedError):
    """A valid token without the scope a route needs; ``www_authenticate`` names the scope."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"the token lacks scope {scope!r}; request a token with --scope {scope}", required_scope=scope)
        self.scope = scope

    @property
    def www_authenticate(self) -> str:
        return f'Bearer realm="{REALM}", error="insufficient_scope", scope="{self.scope}"'


class AuthConfigError(RuntimeError):
    """The JWT settings do not form a usable verifier; the message names the setting."""


@dataclass(frozen=True)
class Principal:
    """The verified caller: token subject, granted scopes and expiry (UTC)."""

    subject: str
    scopes: frozenset[str]
    expires_at: datetime
    token_id: str | None = None

    def require(self, scope: str) -> None:
        """Raise ScopeError unless the token grants ``scope``."""
        if scope not in self.scopes:
            raise ScopeError(scope)


@dataclass(frozen=True)
class TokenPolicy:
    """The claims and limits every token must meet."""

    algorithm: str
    issuer: str
    audience: str
    leeway_seconds: int
    max_ttl_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenPolicy:
        return cls(
            algorithm=settings.jwt_algorithm,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
            max_ttl_seconds=settings.jwt_max_ttl_seconds,
        )


def parse_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """Return the scopes granted by ``scope`` (space-separated string or list) or ``scp`` (list)."""
    raw = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return frozenset(raw)
    raise TokenError("the token's scope claim is neither a string nor a list of strings")


# Tokens verified lately, so a client that sends the same token with every request pays for the signature
# check once. A cached token is still refused once it expires (leeway included).
VERIFIED_TOKENS_CACHED = 1024


class TokenVerifier:
    """Verify bearer tokens against one pinned algorithm and one key (or a JWKS key set)."""

    def __init__(self, policy: TokenPolicy, *, key: Any = None, jwks: jwt.PyJWKSet | None = None) -> None:
        if (key is None) == (jwks is None):
            raise AuthConfigError("give exactly one of a key or a JWKS key set to the token verifier")
        self.policy = policy
        self._key = key
        self._jwks = jwks
        self._verified: dict[str, Principal] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """Build the verifier from the settings; raise AuthConfigError for an unusable combination."""
        policy = TokenPolicy.from_settings(settings)
        if policy.algorithm == "HS256":
            if settings.profile == "prod" and not settings.jwt_allow_hs256_in_prod:
                raise AuthConfigError(
                    "HEALTHFLOW_JWT_ALGORITHM=HS256 is rejected in profile prod; use RS256 or ES256 with "
                    "HEALTHFLOW_JWT_PUBLIC_KEY_FILE or HEALTHFLOW_JWT_JWKS_FILE, or set "
                    "HEALTHFLOW_JWT_ALLOW_HS256_IN_PROD=true"
                )
            if settings.jwt_secret is None:
                raise AuthConfigError("HEALTHFLOW_JWT_SECRET must be set for HEALTHFLOW_JWT_ALGORITHM=HS256")
            return cls(policy, key=settings.jwt_secret.get_secret_value())

        if settings.jwt_jwks_file is not None:
            return cls(policy, jwks=load_jwks(settings.jwt_jwks_file))
        if settings.jwt_public_key_file is not None:
            return cls(policy, key=read_key_file(settings.jwt_public_key_file, "HEALTHFLOW_JWT_PUBLIC_KEY_FILE"))
        raise AuthConfigError(
            f"HEALTHFLOW_JWT_ALGORITHM={policy.algorithm} needs "
            "HEALTHFLOW_JWT_PUBLIC_KEY_FILE or HEALTHFLOW_JWT_JWKS_FILE"
        )

    def verify(self, token: str | None) -> Principal:
        """Return the principal of a valid token; raise TokenError (401) for a missing or invalid one."""
        if not token:
            raise TokenError("a bearer token is required in the Authorization header", error_code=None)
        cached = self._verified.get(token)
        if cached is not None:
            if datetime.now(UTC) <= cached.expires_at + timedelta(seconds=self.policy.leeway_seconds):
                return cached
            self._verified.pop(token, None)

        header = self._read_header(token)
        key = self._select_key(header)
        claims = self._decode(token, key)
        self._check_lifetime(claims)

        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenError("the token's sub claim is empty or not a string")
        principal = Principal(
            subject=subject,
            scopes=parse_scopes(claims),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            token_id=claims.get("jti"),
        )
        if len(self._verified) >= VERIFIED_TOKENS_CACHED:
            self._verified.clear()
        self._verified[token] = principal
        return principal

    def _read_header(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as error:
            raise TokenError("the bearer token is not a well-formed JWT") from error
        algorithm = header.get("alg")
        if algorithm != self.policy.algorithm:
            # Checked before any key use: this is what stops `alg: none` and HS256-with-a-public-key tokens.
            raise TokenError(
                f"token algorithm {algorithm!r} is not accepted; this API accepts {self.policy.algorithm} only"
            )
        return header

    def _select_key(self, header: dict[str, Any]) -> Any:
        if self._jwks is None:
            return self._key
        kid = header.get("kid")
        keys = self._jwks.keys
        if kid is None:
            if len(keys) == 1:
                return keys[0].key
            raise TokenError("the token has no kid header and the key set contains several keys")
        for candidate in keys:
            if candidate.key_id == kid:
                return candidate.key
        raise TokenError("the token's kid matches no key in the key set")

    def _decode(self, token: str, key: Any) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[self.policy.algorithm],
                audience=self.policy.audience,
                issuer=self.policy.issuer,
                leeway=self.policy.leeway_seconds,
                options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as error:
            raise TokenError("the token has expired") from error
        except jwt.InvalidAudienceError as error:
            raise TokenError("the token's audience is not this API") from error
        except jwt.InvalidIssuerError as error:
            raise TokenError("the token's issuer is not trusted") from error
        except jwt.MissingRequiredClaimError as error:
            raise TokenError(f"the token lacks the required claim {error.claim!r}") from error
        except jwt.InvalidSignatureError as error:
            raise TokenError("the token's signature is invalid") from error
        except jwt.ImmatureSignatureError as error:
            raise TokenError("the token is not valid yet") from error
        except jwt.InvalidTokenError as error:
            # Covers malformed segments, wrong key types and any other check; the class name is safe to log.
            logger.info("token rejected: %s", type(error).__name__)
            raise TokenError("the bearer token is invalid") from error

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        lifetime = int(claims["exp"]) - int(claims["iat"])
        if lifetime > self.policy.max_ttl_seconds:
            raise TokenError(
                f"the token lives {lifetime} s, longer than the {self.policy.max_ttl_seconds} s this API accepts"
            )


def bearer_token(authorization: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` header, None when absent; raise on another scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("the Authorization header must be 'Bearer <token>'", error_code="invalid_request")
    return token.strip()


def read_key_file(path: Path, setting: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise AuthConfigError(f"cannot read {setting} {path}: {error.strerror}") from error


def load_jwks(path: Path) -> jwt.PyJWKSet:
    """Load a JWKS file; raise AuthConfigError when it cannot be read or contains no usable key."""
    text = read_key_file(path, "HEALTHFLOW_JWT_JWKS_FILE")
    try:
        return jwt.PyJWKSet.from_dict(json.loads(text))
    except (ValueError, jwt.PyJWKSetError, jwt.InvalidKeyError) as error:
        raise AuthConfigError(f"HEALTHFLOW_JWT_JWKS_FILE {path} is not a usable JWKS: {error}") from error
