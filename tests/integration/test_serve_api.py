"""ScoreAPI against a real server: `healthflow serve` in a subprocess on 127.0.0.1 with a free port.

The served model is a mechanics-only CatBoost model fitted here on a synthetic frame (bench/serve_setup.py),
registered in the stack's MLflow, with its features written to a real Feast PostgreSQL online store.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import numpy as np
import pytest

from healthflow.events import SCORES, make_consumer
from healthflow.pseudonym import key_bytes, patient_pseudonym
from tests.integration.serve_support import (
    drop_isolated,
    free_port,
    isolated_settings,
    running_server,
    server_environment,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # MLflow warns about its own type hints when the pyfunc module is imported; not ours to fix.
    pytest.mark.filterwarnings("ignore::UserWarning:mlflow.*"),
]

PATIENT_ID = "MRN-SERVE-000417"


@pytest.fixture(scope="module")
def serve_env(stack_settings, template_database, tmp_path_factory):
    from bench.serve_setup import register_mechanics_model, synthetic_frame, write_feature_repo

    settings = isolated_settings(stack_settings, template_database, "api")
    model_name = f"serve_test_{settings.pg_database}"
    feature_service = "serve_test_service"
    frame = synthetic_frame(300, seed=3)
    key = key_bytes(settings.pseudonym_key.get_secret_value())
    frame.loc[0, "patient_pseudonym"] = patient_pseudonym(key, PATIENT_ID)
    # The same patient has an earlier stay, so scoring without a stay id must pick stay-0 (the latest).
    frame.loc[1, "patient_pseudonym"] = frame.loc[0, "patient_pseudonym"]
    frame.loc[1, "discharged_at"] = frame.loc[0, "discharged_at"] - timedelta(days=90)
    frame.loc[2, "hemoglobin"] = np.nan

    repo = tmp_path_factory.mktemp("feature_repo")
    version = register_mechanics_model(settings, model_name, frame, iterations=60)
    write_feature_repo(settings, repo, frame, feature_service=feature_service)
    environment = server_environment(
        settings,
        SERVE_MODEL_NAME=model_name,
        SERVE_FEATURE_SERVICE=feature_service,
        FEATURES_REPO_DIR=str(repo),
        SERVE_MODEL_POLL_SECONDS="1",
        SERVE_BATCH_MAX_PATIENTS="10",
    )
    yield {
        "settings": settings,
        "frame": frame,
        "model_name": model_name,
        "version": version,
        "environment": environment,
        "log_dir": tmp_path_factory.mktemp("serve_logs"),
    }
    drop_isolated(stack_settings, settings)


@pytest.fixture(scope="module")
def server(serve_env):
    port = free_port()
    command = [str(Path(sys.executable).parent / "healthflow"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    log_path = serve_env["log_dir"] / "server.log"
    with running_server(command, serve_env["environment"], log_path, wait_for="/readyz") as base_url:
        yield {"url": base_url, "log": log_path}


def _token(settings, *scopes, **claims) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": "test-client",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "scope": " ".join(scopes),
    }
    payload.update(claims)
    return jwt.encode(payload, settings.jwt_secret.get_secret_value(), "HS256")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _segment(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_score_by_pseudonym_returns_explained_score(server, serve_env):
    settings, row = serve_env["settings"], serve_env["frame"].iloc[5]
    response = httpx.post(
        f"{server['url']}/v1/score",
        json={"pseudonym": row.patient_pseudonym, "stay_id": row.stay_id},
        headers=_auth(_token(settings, "score:read")),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["probability"] <= 1.0
    assert body["risk_level"] in {"low", "medium", "high"}
    assert set(body["thresholds"]) >= {"operating_point", "medium", "high"}
    assert len(body["top_features"]) == settings.serve_top_features
    assert body["model"]["name"] == serve_env["model_name"]
    assert body["model"]["run_id"]
    assert body["features"]["age"] == pytest.approx(row.age)
    assert body["lineage"]["feature_service"] == "serve_test_service"
    assert "serve_test_stay_features" in body["feature_freshness"]
    assert body["prediction_id"] > 0


def test_shap_sum_equals_raw_output(server, serve_env):
    from catboost import Pool

    import mlflow

    settings, row = serve_env["settings"], serve_env["frame"].iloc[7]
    body = httpx.post(
        f"{server['url']}/v1/score",
        json={"pseudonym": row.patient_pseudonym, "stay_id": row.stay_id},
        headers=_auth(_token(settings, "score:read")),
        timeout=30,
    ).json()
    explanation = body["explanation"]

    # The model's raw output, computed here from the registered version, independently of the service.
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    wrapped = mlflow.pyfunc.load_model(
        f"models:/{serve_env['model_name']}/{body['model']['version']}"
    ).unwrap_python_model()
    from training.model import prepare_features

    frame = prepare_features(serve_env["frame"].iloc[[7]], wrapped.types)
    raw = float(
        wrapped.catboost_model.predict(
            Pool(frame, cat_features=list(wrapped.types.categorical)), prediction_type="RawFormulaVal"
        )[0]
    )

    total = sum(explanation["shap_values"].values()) + explanation["expected_value"]
    assert total == pytest.approx(raw, abs=1e-6)
    assert explanation["raw_margin"] == pytest.approx(raw, abs=1e-6)
    assert body["probability"] == pytest.approx(1 / (1 + np.exp(-raw)), abs=1e-9)


def test_score_by_patient_id_never_stores_the_id(server, serve_env):
    settings = serve_env["settings"]
    response = httpx.post(
        f"{server['url']}/v1/score",
        json={"patient_id": PATIENT_ID},
        headers=_auth(_token(settings, "score:read")),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["pseudonym"] == serve_env["frame"].loc[0, "patient_pseudonym"]
    assert body["stay_id"] == "stay-0"  # the latest of the patient's two stays
    assert PATIENT_ID not in response.text

    from healthflow.db import connect

    with connect(settings) as connection:
        dumped = connection.execute("SELECT string_agg(t::text, '|') FROM serving.predictions t").fetchone()[0]
    assert PATIENT_ID not in dumped
    assert PATIENT_ID not in server["log"].read_text()


def test_unknown_patient_gets_404_problem(server, serve_env):
    response = httpx.post(
        f"{server['url']}/v1/score",
        json={"pseudonym": "f" * 32, "stay_id": "stay-none"},
        headers=_auth(_token(serve_env["settings"], "score:read")),
        timeout=30,
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "no online features" in response.json()["detail"]


def test_unknown_patient_id_without_stay_gets_404(server, serve_env):
    response = httpx.post(
        f"{server['url']}/v1/score",
        json={"patient_id": "MRN-NOBODY"},
        headers=_auth(_token(serve_env["settings"], "score:read")),
        timeout=30,
    )
    assert response.status_code == 404
    assert "MRN-NOBODY" not in response.text


def test_missing_feature_is_scored_and_flagged(server, serve_env):
    row = serve_env["frame"].iloc[2]
    body = httpx.post(
        f"{server['url']}/v1/score",
        json={"pseudonym": row.patient_pseudonym, "stay_id": row.stay_id},
        headers=_auth(_token(serve_env["settings"], "score:read")),
        timeout=30,
    ).json()
    assert body["missing_features"] == ["hemoglobin"]
    assert body["features"]["hemoglobin"] is None


def test_invalid_body_does_not_echo_patient_id(server, serve_env):
    response = httpx.post(
        f"{server['url']}/v1/score",
        json={"patient_id": PATIENT_ID, "pseudonym": "a" * 32},
        headers=_auth(_token(serve_env["settings"], "score:read")),
        timeout=30,
    )
    assert response.status_code == 400
    assert "exactly one of patient_id or pseudonym" in response.json()["detail"]
    assert PATIENT_ID not in response.text


def test_batch_scores_in_request_order(server, serve_env):
    frame = serve_env["frame"]
    items = [{"pseudonym": row.patient_pseudonym, "stay_id": row.stay_id} for row in frame.iloc[10:14].itertuples()]
    response = httpx.post(
        f"{server['url']}/v1/score/batch",
        json={"items": items},
        headers=_auth(_token(serve_env["settings"], "score:read")),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert [result["stay_id"] for result in response.json()["results"]] == [item["stay_id"] for item in items]


def test_batch_over_limit_rejected(server, serve_env):
    frame = serve_env["frame"]
    items = [{"pseudonym": row.patient_pseudonym, "stay_id": row.stay_id} for row in frame.iloc[20:31].itertuples()]
    response = httpx.post(
        f"{server['url']}/v1/score/batch",
        json={"items": items},
        headers=_auth(_token(serve_env["settings"], "score:read")),
        timeout=30,
    )
    assert response.status_code == 400
    assert "at most 10 patients" in response.json()["detail"]


def test_score_history_filters_and_pages(server, serve_env):
    settings, row = serve_env["settings"], serve_env["frame"].iloc[40]
    for _ in range(3):
        httpx.post(
            f"{server['url']}/v1/score",
            json={"pseudonym": row.patient_pseudonym, "stay_id": row.stay_id},
            headers=_auth(_token(settings, "score:read")),
            timeout=30,
        ).raise_for_status()
    headers = _auth(_token(settings, "audit:read"))
    page = httpx.get(
        f"{server['url']}/v1/scores", params={"pseudonym": row.patient_pseudonym, "limit": 2}, headers=headers
    ).json()
    assert page["total"] == 3
    assert len(page["items"]) == 2
    assert {item["stay_id"] for item in page["items"]} == {row.stay_id}

    level = page["items"][0]["risk_level"]
    other = next(name for name in ("low", "medium", "high") if name != level)
    assert (
        httpx.get(
            f"{server['url']}/v1/scores",
            params={"pseudonym": row.patient_pseudonym, "risk_level": level},
            headers=headers,
        ).json()["total"]
        == 3
    )
    assert (
        httpx.get(
            f"{server['url']}/v1/scores",
            params={"pseudonym": row.patient_pseudonym, "risk_level": other},
            headers=headers,
        ).json()["total"]
        == 0
    )

    after = (row.discharged_at + timedelta(days=1)).isoformat()
    assert (
        httpx.get(
            f"{server['url']}/v1/scores",
            params={"pseudonym": row.patient_pseudonym, "discharged_from": after},
            headers=headers,
        ).json()["total"]
        == 0
    )


def test_score_history_by_patient_id(server, serve_env):
    settings = serve_env["settings"]
    httpx.post(
        f"{server['url']}/v1/score",
        json={"patient_id": PATIENT_ID},
        headers=_auth(_token(settings, "score:read")),
        timeout=30,
    ).raise_for_status()
    page = httpx.get(
        f"{server['url']}/v1/scores", params={"patient_id": PATIENT_ID}, headers=_auth(_token(settings, "audit:read"))
    ).json()
    assert page["total"] >= 1
    assert all(item["patient_pseudonym"] == serve_env["frame"].loc[0, "patient_pseudonym"] for item in page["items"])


def test_scores_are_published_to_kafka(server, serve_env):
    settings, row = serve_env["settings"], serve_env["frame"].iloc[50]
    httpx.post(
        f"{server['url']}/v1/score",
        json={"pseudonym": row.patient_pseudonym, "stay_id": row.stay_id},
        headers=_auth(_token(settings, "score:read")),
        timeout=30,
    ).raise_for_status()
    from healthflow.events import Envelope

    consumer = make_consumer(settings, f"serve-test-{time.time_ns()}", [SCORES])
    found = None
    deadline = time.monotonic() + 30
    try:
        while found is None and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            envelope = Envelope.from_bytes(message.value())
            if envelope.key == row.patient_pseudonym:
                found = envelope
    finally:
        consumer.close()
    assert found is not None
    assert found.event_type == "score"
    assert found.payload["stay_id"] == row.stay_id
    assert set(found.payload["features"]) == {
        "age",
        "length_of_stay_days",
        "prior_inpatient_12m",
        "charlson_index",
        "hemoglobin",
        "sex",
        "admission_type",
    }


def test_model_route_describes_champion(server, serve_env):
    body = httpx.get(f"{server['url']}/v1/model", headers=_auth(_token(serve_env["settings"], "model:read"))).json()
    assert body["name"] == serve_env["model_name"]
    assert body["thresholds"]["high"] == pytest.approx(0.35)
    assert "validation_auroc" in body["metrics"]


def test_health_metrics_and_docs_need_no_token(server):
    assert httpx.get(f"{server['url']}/healthz").status_code == 200
    assert httpx.get(f"{server['url']}/readyz").status_code == 200
    metrics = httpx.get(f"{server['url']}/metrics")
    assert metrics.status_code == 200
    assert "healthflow_scores" in metrics.text
    spec = httpx.get(f"{server['url']}/docs.json").json()
    assert {"/v1/score", "/v1/score/batch", "/v1/scores", "/v1/model"} <= set(spec["paths"])


@pytest.mark.parametrize(
    ("case", "path"),
    [
        ("no token", "/v1/score"),
        ("expired", "/v1/score"),
        ("wrong audience", "/v1/score"),
        ("wrong issuer", "/v1/score"),
        ("alg none", "/v1/score"),
        ("tampered", "/v1/score"),
        ("basic scheme", "/v1/model"),
        ("no token", "/v1/scores"),
    ],
)
def test_token_attack_gets_401_with_challenge(server, serve_env, case, path):
    settings = serve_env["settings"]
    good = _token(settings, "score:read", "model:read")
    header, payload, signature = good.split(".")
    unverified = jwt.decode(good, options={"verify_signature": False})
    tokens = {
        "no token": None,
        "expired": _token(settings, "score:read", iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
        "wrong audience": _token(settings, "score:read", aud="another-api"),
        "wrong issuer": _token(settings, "score:read", iss="https://issuer.invalid"),
        "alg none": f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "tampered": f"{header}.{_segment({**unverified, 'sub': 'admin'})}.{signature}",
    }
    if case == "basic scheme":
        headers = {"Authorization": "Basic dXNlcjpwYXNz"}
    else:
        headers = _auth(tokens[case]) if tokens[case] else {}
    method = httpx.get if path in {"/v1/model", "/v1/scores"} else httpx.post
    kwargs = {} if method is httpx.get else {"json": {"pseudonym": "a" * 32, "stay_id": "s"}}
    response = method(f"{server['url']}{path}", headers=headers, **kwargs)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="healthflow"')
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("path", "scope"), [("/v1/score", "model:read"), ("/v1/model", "score:read"), ("/v1/scores", "score:read")]
)
def test_missing_scope_gets_403(server, serve_env, path, scope):
    headers = _auth(_token(serve_env["settings"], scope))
    if path == "/v1/score":
        response = httpx.post(f"{server['url']}{path}", json={"pseudonym": "a" * 32, "stay_id": "s"}, headers=headers)
    else:
        response = httpx.get(f"{server['url']}{path}", headers=headers)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_new_champion_served_without_restart(server, serve_env):
    """Runs last in this module: it moves the alias, so earlier tests see version 1."""
    from bench.serve_setup import register_mechanics_model

    settings = serve_env["settings"]
    new_version = register_mechanics_model(
        settings, serve_env["model_name"], serve_env["frame"], iterations=30, seed=11
    )
    assert new_version != serve_env["version"]
    headers = _auth(_token(settings, "model:read", "score:read"))
    deadline = time.monotonic() + 120
    served = None
    while time.monotonic() < deadline:
        served = httpx.get(f"{server['url']}/v1/model", headers=headers).json()["version"]
        if served == new_version:
            break
        time.sleep(1)
    assert served == new_version
    row = serve_env["frame"].iloc[5]
    body = httpx.post(
        f"{server['url']}/v1/score",
        json={"pseudonym": row.patient_pseudonym, "stay_id": row.stay_id},
        headers=headers,
        timeout=30,
    ).json()
    assert body["model"]["version"] == new_version
