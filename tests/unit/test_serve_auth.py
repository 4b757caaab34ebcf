"""Token verification: every attack in the threat list is rejected, valid tokens pass."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from healthflow.settings import Settings
from serving.auth import (
    AuthConfigError,
    ScopeError,
    TokenError,
    TokenVerifier,
    bearer_token,
)
from serving.tokens import create_token


def _settings(**overrides) -> Settings:
    return Settings(**overrides)


def _rsa_files(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "rsa.pem"
    public = tmp_path / "rsa.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def _segment(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(settings: Settings, **overrides) -> dict:
    now = datetime.now(UTC)
    claims = {
        "sub": "clinician-1",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "scope": "score:read",
    }
    claims.update(overrides)
    return claims


@pytest.fixture
def hs_settings() -> Settings:
    return _settings()


@pytest.fixture
def rs_settings(tmp_path) -> Settings:
    private, public = _rsa_files(tmp_path)
    return _settings(jwt_algorithm="RS256", jwt_public_key_file=public, jwt_private_key_file=private)


def test_valid_hs256_token_returns_principal(hs_settings):
    token = create_token(hs_settings, subject="clinician-1", scopes=["score:read", "model:read"], ttl_seconds=300)
    principal = TokenVerifier.from_settings(hs_settings).verify(token)
    assert principal.subject == "clinician-1"
    assert principal.scopes == {"score:read", "model:read"}


def test_valid_rs256_token_returns_principal(rs_settings):
    token = create_token(rs_settings, subject="ehr", scopes=["score:read"], ttl_seconds=300)
    assert TokenVerifier.from_settings(rs_settings).verify(token).subject == "ehr"


def test_missing_token_rejected_without_error_code(hs_settings):
    with pytest.raises(TokenError) as caught:
        TokenVerifier.from_settings(hs_settings).verify(None)
    assert caught.value.status == 401
    assert caught.value.www_authenticate == 'Bearer realm="healthflow"'


def test_expired_token_rejected(hs_settings):
    past = datetime.now(UTC) - timedelta(hours=2)
    token = create_token(hs_settings, subject="a", scopes=["score:read"], ttl_seconds=60, now=past)
    with pytest.raises(TokenError, match="expired") as caught:
        TokenVerifier.from_settings(hs_settings).verify(token)
    assert 'error="invalid_token"' in caught.value.www_authenticate


def test_expiry_within_leeway_accepted(hs_settings):
    past = datetime.now(UTC) - timedelta(seconds=70)
    token = create_token(hs_settings, subject="a", scopes=["score:read"], ttl_seconds=60, now=past)
    assert TokenVerifier.from_settings(hs_settings).verify(token).subject == "a"


def test_cached_token_rejected_after_expiry():
    settings = _settings(jwt_leeway_seconds=0)
    verifier = TokenVerifier.from_settings(settings)
    almost_expired = datetime.now(UTC) - timedelta(seconds=58)
    token = create_token(settings, subject="a", scopes=["score:read"], ttl_seconds=60, now=almost_expired)

    first = verifier.verify(token)
    second = verifier.verify(token)
    time.sleep(max(0.0, (first.expires_at - datetime.now(UTC)).total_seconds()) + 1.1)

    assert second is first  # served from the cache of verified tokens
    with pytest.raises(TokenError, match="expired"):
        verifier.verify(token)


def test_tampered_copy_of_cached_token_rejected(hs_settings):
    verifier = TokenVerifier.from_settings(hs_settings)
    token = create_token(hs_settings, subject="a", scopes=["score:read"], ttl_seconds=300)
    header, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    tampered = ".".join([header, _segment({**claims, "sub": "b"}), signature])

    verifier.verify(token)

    with pytest.raises(TokenError):
        verifier.verify(tampered)


def test_wrong_audience_rejected(hs_settings):
    token = jwt.encode(_claims(hs_settings, aud="another-api"), hs_settings.jwt_secret.get_secret_value(), "HS256")
    with pytest.raises(TokenError, match="audience"):
        TokenVerifier.from_settings(hs_settings).verify(token)


def test_wrong_issuer_rejected(hs_settings):
    token = jwt.encode(
        _claims(hs_settings, iss="https://evil.example"), hs_settings.jwt_secret.get_secret_value(), "HS256"
    )
    with pytest.raises(TokenError, match="issuer"):
        TokenVerifier.from_settings(hs_settings).verify(token)


@pytest.mark.parametrize("claim", ["exp", "iss", "aud", "sub", "iat"])
def test_missing_required_claim_rejected(hs_settings, claim):
    claims = _claims(hs_settings)
    del claims[claim]
    token = jwt.encode(claims, hs_settings.jwt_secret.get_secret_value(), "HS256")
    with pytest.raises(TokenError):
        TokenVerifier.from_settings(hs_settings).verify(token)


def test_alg_none_rejected(hs_settings):
    token = f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(_claims(hs_settings))}."
    with pytest.raises(TokenError, match="algorithm 'none'"):
        TokenVerifier.from_settings(hs_settings).verify(token)


def test_hs256_token_against_rs256_config_rejected(rs_settings):
    # The classic confusion attack: the public key used as an HMAC secret.
    public_pem = rs_settings.jwt_public_key_file.read_bytes()
    header = _segment({"alg": "HS256", "typ": "JWT"})
    payload = _segment(_claims(rs_settings))
    import hashlib
    import hmac

    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    with pytest.raises(TokenError, match="HS256"):
        TokenVerifier.from_settings(rs_settings).verify(token)


def test_tampered_payload_rejected(hs_settings):
    token = create_token(hs_settings, subject="a", scopes=["score:read"], ttl_seconds=300)
    header, _, signature = token.split(".")
    forged = _segment(_claims(hs_settings, scope="score:read model:read audit:read"))
    with pytest.raises(TokenError, match="signature"):
        TokenVerifier.from_settings(hs_settings).verify(f"{header}.{forged}.{signature}")


def test_token_signed_with_other_secret_rejected(hs_settings):
    token = jwt.encode(_claims(hs_settings), "another-secret-of-enough-length-0123456789", "HS256")
    with pytest.raises(TokenError, match="signature"):
        TokenVerifier.from_settings(hs_settings).verify(token)


def test_garbage_token_rejected(hs_settings):
    with pytest.raises(TokenError, match="well-formed"):
        TokenVerifier.from_settings(hs_settings).verify("not-a-jwt")


def test_token_longer_than_max_ttl_rejected(hs_settings):
    claims = _claims(hs_settings)
    claims["exp"] = claims["iat"] + hs_settings.jwt_max_ttl_seconds + 600
    token = jwt.encode(claims, hs_settings.jwt_secret.get_secret_value(), "HS256")
    with pytest.raises(TokenError, match="longer than"):
        TokenVerifier.from_settings(hs_settings).verify(token)


def test_missing_scope_raises_403(hs_settings):
    token = create_token(hs_settings, subject="a", scopes=["model:read"], ttl_seconds=300)
    principal = TokenVerifier.from_settings(hs_settings).verify(token)
    with pytest.raises(ScopeError) as caught:
        principal.require("score:read")
    assert caught.value.status == 403
    assert 'scope="score:read"' in caught.value.www_authenticate


def test_jwks_selects_key_by_kid(tmp_path):
    first = ec.generate_private_key(ec.SECP256R1())
    second = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(first.public_key())), "kid": "one", "alg": "ES256"},
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(second.public_key())), "kid": "two", "alg": "ES256"},
        ]
    }
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks))
    settings = _settings(jwt_algorithm="ES256", jwt_jwks_file=jwks_file)
    claims = _claims(settings)
    verifier = TokenVerifier.from_settings(settings)

    assert verifier.verify(jwt.encode(claims, second, "ES256", headers={"kid": "two"})).subject == "clinician-1"
    with pytest.raises(TokenError, match="signature"):
        verifier.verify(jwt.encode(claims, first, "ES256", headers={"kid": "two"}))
    with pytest.raises(TokenError, match="kid"):
        verifier.verify(jwt.encode(claims, first, "ES256", headers={"kid": "three"}))


def test_prod_profile_rejects_hs256_by_default():
    settings = _settings(profile="prod", pseudonym_key="k" * 32, pg_password="p", jwt_secret="s" * 40)
    with pytest.raises(AuthConfigError, match="HS256"):
        TokenVerifier.from_settings(settings)


def test_prod_profile_allows_hs256_when_configured():
    settings = _settings(
        profile="prod", pseudonym_key="k" * 32, pg_password="p", jwt_secret="s" * 40, jwt_allow_hs256_in_prod=True
    )
    assert TokenVerifier.from_settings(settings).policy.algorithm == "HS256"


def test_rs256_without_key_file_is_config_error():
    with pytest.raises(AuthConfigError, match="PUBLIC_KEY_FILE"):
        TokenVerifier.from_settings(_settings(jwt_algorithm="RS256"))


def test_bearer_header_parsing():
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token(None) is None
    with pytest.raises(TokenError):
        bearer_token("Basic dXNlcjpwYXNz")


def test_create_token_rejects_unknown_scope_and_long_ttl(hs_settings):
    with pytest.raises(Exception, match="unknown scope"):
        create_token(hs_settings, subject="a", scopes=["admin"], ttl_seconds=60)
    with pytest.raises(Exception, match="outside"):
        create_token(hs_settings, subject="a", scopes=["score:read"], ttl_seconds=10**7)
