"""The governance dashboard on real data, in headless Chromium: tabs, languages, token checks, screenshots."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from healthflow.db import drop_database, ensure_database
from monitoring.reference import FrameReferenceSource, ModelVersionRef
from monitoring.run import run_monitoring
from monitoring.simulate import Shift, shift_population
from monitoring.window import window_ending
from serving.auth import AUDIT_READ, SCORE_READ
from serving.tokens import create_token
from tests.integration.test_monitor_run import make_population, seed_window

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def dashboard_settings(stack_settings, template_database, tmp_path_factory):
    """A database holding a shifted window of scores and one monitoring report of it."""
    database = f"test_dash_{uuid.uuid4().hex[:8]}"
    ensure_database(stack_settings, database, template=template_database)
    settings = stack_settings.model_copy(
        update={
            "pg_database": database,
            "state_dir": tmp_path_factory.mktemp("dashboard-state"),
            "monitor_experiment": f"test-dashboard-{uuid.uuid4().hex[:8]}",
        }
    )
    model = ModelVersionRef(name=f"dash-model-{uuid.uuid4().hex[:6]}", version="3", run_id="")
    end = datetime.now(UTC)
    shifted = shift_population(make_population(400, seed=21), shift=Shift(age_band_steps=2, stay_factor=1.8))
    seed_window(settings, shifted, model=model, end=end, label_known_at=end - timedelta(hours=1))
    run_monitoring(
        settings,
        window=window_ending(timedelta(days=1), end=end),
        model_name=model.name,
        model_version=None,
        source=FrameReferenceSource(make_population(1500, seed=1), model=model),
        publish=False,
    )
    yield settings, model
    drop_database(stack_settings, database)


@pytest.fixture(scope="module")
def dashboard_url(dashboard_settings):
    from werkzeug.serving import make_server

    from monitoring.dashboard.app import create_app

    settings, _ = dashboard_settings
    server = make_server("127.0.0.1", 0, create_app(settings).server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def token(dashboard_settings):
    settings, _ = dashboard_settings
    return create_token(settings, subject="governance-test", scopes=[AUDIT_READ], ttl_seconds=900)


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed: apt-get install -y chromium chromium-driver")
    from monitoring.screenshots import chromium

    with chromium() as driver:
        yield driver


def test_dashboard_rejects_request_without_token(dashboard_url):
    response = httpx.get(dashboard_url + "/")
    callback = httpx.post(dashboard_url + "/_dash-update-component", json={})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert callback.status_code == 401


def test_dashboard_health_is_open_and_empty(dashboard_url):
    response = httpx.get(dashboard_url + "/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_dashboard_rejects_token_without_audit_scope(dashboard_settings, dashboard_url):
    settings, _ = dashboard_settings
    scoring_token = create_token(settings, subject="clinical-system", scopes=[SCORE_READ], ttl_seconds=300)

    response = httpx.get(dashboard_url + "/", headers={"Authorization": f"Bearer {scoring_token}"})
    forged = httpx.get(dashboard_url + "/", headers={"Authorization": "Bearer not-a-jwt"})

    assert response.status_code == 403
    assert forged.status_code == 401


def test_dashboard_accepts_bearer_header(dashboard_url, token):
    response = httpx.get(dashboard_url + "/", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_dashboard_serves_report_with_token_only(dashboard_settings, dashboard_url, token):
    from healthflow.db import connect

    settings, _ = dashboard_settings
    with connect(settings) as connection:
        report_id = connection.execute("SELECT max(id) FROM monitoring.reports").fetchone()[0]
    path = f"{dashboard_url}/reports/{report_id}/drift.html"

    allowed = httpx.get(path, headers={"Authorization": f"Bearer {token}"})
    rejected = httpx.get(path)
    other_file = httpx.get(
        f"{dashboard_url}/reports/{report_id}/summary.json", headers={"Authorization": f"Bearer {token}"}
    )

    assert allowed.status_code == 200
    assert "length_of_stay_days" in allowed.text
    assert rejected.status_code == 401
    assert other_file.status_code == 404


def test_dashboard_moves_query_token_to_cookie(browser, dashboard_url, token):
    from monitoring.dashboard.app import COOKIE_NAME
    from monitoring.screenshots import open_dashboard

    open_dashboard(browser, dashboard_url, token)
    cookie = browser.get_cookie(COOKIE_NAME)

    assert "token=" not in browser.current_url
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"


def test_dashboard_tabs_render_with_data(browser, dashboard_settings, dashboard_url, token):
    from monitoring.screenshots import open_dashboard, open_tab, wait_for

    _, model = dashboard_settings
    open_dashboard(browser, dashboard_url, token)

    overview = open_tab(browser, "overview")
    wait_for(browser, "#volume-graph .main-svg")
    assert f"{model.name} v{model.version}" in overview.text
    assert "drift" in wait_for(browser, "#alerts-table").text

    open_tab(browser, "fairness")
    wait_for(browser, "#fairness-sex .main-svg")
    wait_for(browser, "#gaps-race .main-svg")
    assert "Limit" in wait_for(browser, "#gaps-sex").text

    open_tab(browser, "drift")
    wait_for(browser, "#drift-graph .main-svg")
    drift_table = wait_for(browser, "#drift-table")
    assert "length_of_stay_days" in drift_table.text
    assert wait_for(browser, "#report-link").get_attribute("href").endswith("/drift.html")

    open_tab(browser, "lineage")
    assert model.name in wait_for(browser, "#versions-table").text
    assert wait_for(browser, "#mlflow-link").get_attribute("href").startswith("http://127.0.0.1")


def test_dashboard_language_switch_changes_labels(browser, dashboard_url, token):
    from monitoring.screenshots import choose_language, open_dashboard, open_tab, wait_for

    open_dashboard(browser, dashboard_url, token)
    assert wait_for(browser, "#tab-drift").text == "Drift"

    choose_language(browser, "fr")

    assert wait_for(browser, "#tab-drift", text="Dérive").text == "Dérive"
    assert wait_for(browser, "#title").text == "Gouvernance des modèles HealthFlow"
    drift = open_tab(browser, "drift")
    assert "Score de dérive par variable" in wait_for(browser, "#drift-graph", text="Score de dérive").text
    assert "Ouvrir le rapport Evidently complet" in drift.text


def test_dashboard_screenshots_of_every_tab(browser, dashboard_url, token, tmp_path):
    from monitoring.screenshots import capture_tabs, open_dashboard

    open_dashboard(browser, dashboard_url, token)
    paths = capture_tabs(browser, tmp_path)

    assert sorted(path.name for path in paths) == sorted(
        f"{tab}-{language}.png" for tab in ("overview", "fairness", "drift", "lineage") for language in ("en", "fr")
    )
    assert all(path.stat().st_size > 20_000 for path in paths)
