"""Token checks over HTTP against a server configured for RS256 with a public key file.

The server has no model and no feature repository: authentication runs before either is needed, so a valid
RS256 token reaches the route (503, nothing to serve) while every forged token stops at 401.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.serve_support import free_port, running_server, server_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _segment(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def rs256_server(stack_settings, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rs256")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = folder / "private.pem"
    public = folder / "public.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    environment = server_environment(
        stack_settings,
        JWT_ALGORITHM="RS256",
        JWT_PUBLIC_KEY_FILE=str(public),
        SERVE_MODEL_NAME="serve_rs256_no_such_model",
        FEATURES_REPO_DIR=str(folder / "no_repo"),
    )
    port = free_port()
    command = [str(Path(sys.executable).parent / "healthflow"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with running_server(command, environment, folder / "server.log", wait_for="/healthz") as url:
        yield {"url": url, "private": key, "public_pem": public.read_bytes(), "settings": stack_settings}


def _claims(settings) -> dict:
    now = int(time.time())
    return {
        "sub": "ehr",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + 300,
        "scope": "model:read score:read",
    }


def test_valid_rs256_token_passes_authentication(rs256_server):
    token = jwt.encode(_claims(rs256_server["settings"]), rs256_server["private"], "RS256")
    response = httpx.get(f"{rs256_server['url']}/v1/model", headers={"Authorization": f"Bearer {token}"})
    # No model is registered under this name, so the route returns 503 after authentication passed.
    assert response.status_code == 503
    assert "no version of model" in response.json()["detail"]


def test_hs256_token_signed_with_public_key_rejected(rs256_server):
    header = _segment({"alg": "HS256", "typ": "JWT"})
    payload = _segment(_claims(rs256_server["settings"]))
    signature = hmac.new(rs256_server["public_pem"], f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    response = httpx.get(f"{rs256_server['url']}/v1/model", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_dev_hs256_token_rejected(rs256_server):
    settings = rs256_server["settings"]
    token = jwt.encode(_claims(settings), settings.jwt_secret.get_secret_value(), "HS256")
    response = httpx.get(f"{rs256_server['url']}/v1/model", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_rs256_token_from_other_key_rejected(rs256_server):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_claims(rs256_server["settings"]), other, "RS256")
    response = httpx.get(f"{rs256_server['url']}/v1/model", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
