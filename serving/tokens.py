"""Minting of API tokens for development and tests (`healthflow token create`).

In production an identity provider issues the tokens and the API only holds the public key; this module
signs with ``jwt_secret`` (HS256) or with ``jwt_private_key_file`` (RS256/ES256).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt

from healthflow.errors import InvalidInputError
from healthflow.settings import Settings
from serving.auth import KNOWN_SCOPES, AuthConfigError, read_key_file


def create_token(
    settings: Settings,
    *,
    subject: str,
    scopes: list[str],
    ttl_seconds: int,
    now: datetime | None = None,
    kid: str | None = None,
) -> str:
    """Return a signed token for ``subject`` with ``scopes``, valid ``ttl_seconds`` from ``now`` (UTC)."""
    unknown = sorted(set(scopes) - set(KNOWN_SCOPES))
    if unknown:
        raise InvalidInputError(f"unknown scope {', '.join(unknown)}; known scopes: {', '.join(KNOWN_SCOPES)}")
    if not subject:
        raise InvalidInputError("the token subject must not be empty")
    if not 1 <= ttl_seconds <= settings.jwt_max_ttl_seconds:
        raise InvalidInputError(
            f"ttl {ttl_seconds} s is outside 1..{settings.jwt_max_ttl_seconds} s (HEALTHFLOW_JWT_MAX_TTL_SECONDS)"
        )

    issued_at = now or datetime.now(UTC)
    claims = {
        "sub": subject,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(issued_at.timestamp()),
        "nbf": int(issued_at.timestamp()),
        "exp": int((issued_at + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": str(uuid.uuid4()),
        "scope": " ".join(sorted(set(scopes))),
    }
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, signing_key(settings), algorithm=settings.jwt_algorithm, headers=headers)


def signing_key(settings: Settings) -> str:
    """Return the key that signs tokens for the configured algorithm."""
    if settings.jwt_algorithm == "HS256":
        if settings.jwt_secret is None:
            raise AuthConfigError("HEALTHFLOW_JWT_SECRET must be set to mint HS256 tokens")
        return settings.jwt_secret.get_secret_value()
    if settings.jwt_private_key_file is None:
        raise AuthConfigError(
            f"minting {settings.jwt_algorithm} tokens needs HEALTHFLOW_JWT_PRIVATE_KEY_FILE (a PEM private key)"
        )
    return read_key_file(settings.jwt_private_key_file, "HEALTHFLOW_JWT_PRIVATE_KEY_FILE")
