"""The governance dashboard: a Dash app whose every request needs a bearer token with scope ``audit:read``.

Token transport: an ``Authorization: Bearer`` header, or, for a browser, ``?token=...`` on the first page
load. A valid query token is moved into an HttpOnly, SameSite=Strict cookie and the browser is redirected to
the same address without it, so the token stays out of the address bar, the history and later requests'
URLs. Every later request (Dash's JSON callbacks and script bundles included) is checked through the cookie.
Tokens are verified by ``serving.auth.TokenVerifier`` (the scoring API's rules: pinned algorithm; ``exp``,
``iss``, ``aud`` and ``sub`` required).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from healthflow.settings import Settings

logger = logging.getLogger(__name__)

# The only path served without a token.
HEALTH_PATH = "/healthz"

COOKIE_NAME = "healthflow_dashboard_token"
REPORT_FILES = ("drift.html", "classification.html")
TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s]+")


class TokenRedactingFilter(logging.Filter):
    """Replace ``token=...`` in request log lines (werkzeug logs each request's URL) with ``token=<redacted>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                TOKEN_IN_URL.sub(r"\1<redacted>", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = TOKEN_IN_URL.sub(r"\1<redacted>", record.msg)
        return True


def create_app(settings: Settings, *, load_data: Any = None) -> Any:
    """Build the Dash app. ``load_data(settings)`` returns DashboardData (default: PostgreSQL and MLflow)."""
    import flask
    from dash import Dash, Input, Output

    from healthflow.errors import PermissionDeniedError
    from monitoring.dashboard import layout
    from monitoring.dashboard.data import load_dashboard_data
    from monitoring.dashboard.i18n import translate
    from serving.auth import AUDIT_READ, TokenError, TokenVerifier, bearer_token

    verifier = TokenVerifier.from_settings(settings)
    load = load_data or load_dashboard_data
    limits = layout.Limits(
        drift_share=settings.monitor_drift_share_limit,
        fairness_gap=settings.monitor_fairness_gap_limit,
        min_group_size=settings.monitor_min_group_size,
    )
    mlflow_ui = (settings.mlflow_ui_url or settings.mlflow_tracking_uri).rstrip("/")
    logging.getLogger("werkzeug").addFilter(TokenRedactingFilter())

    server = flask.Flask(__name__)

    @server.before_request
    def require_audit_token() -> Any:
        if flask.request.path == HEALTH_PATH:
            return None  # liveness for schedulers and compose healthchecks; it returns no data
        query_token = flask.request.args.get("token")
        try:
            token = (
                bearer_token(flask.request.headers.get("Authorization"))
                or query_token
                or flask.request.cookies.get(COOKIE_NAME)
            )
            principal = verifier.verify(token)
            principal.require(AUDIT_READ)
        except TokenError as error:
            response = flask.make_response({"detail": error.message}, 401)
            response.headers["WWW-Authenticate"] = error.www_authenticate
            return response
        except PermissionDeniedError as error:
            return flask.make_response({"detail": error.message}, 403)

        if query_token and flask.request.method == "GET":
            arguments = {key: value for key, value in flask.request.args.items() if key != "token"}
            target = flask.request.path + (f"?{urlencode(arguments)}" if arguments else "")
            redirect = flask.redirect(target, code=303)
            # The cookie lives as long as the token, so an expired token is not kept by the browser either.
            redirect.set_cookie(
                COOKIE_NAME,
                query_token,
                httponly=True,
                samesite="Strict",
                secure=flask.request.is_secure,
                max_age=max(int(principal.expires_at.timestamp() - time.time()), 0),
            )
            return redirect
        return None

    @server.after_request
    def no_store(response: Any) -> Any:
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @server.route(HEALTH_PATH)
    def health() -> Any:
        return {"status": "ok"}

    @server.route("/reports/<int:report_id>/<name>")
    def report_file(report_id: int, name: str) -> Any:
        if name not in REPORT_FILES:
            flask.abort(404)
        folder = report_dir(settings, report_id)
        if folder is None or not (folder / name).is_file():
            flask.abort(404)
        return flask.send_file(folder / name, mimetype="text/html")

    # Dash 4 accepts a Flask server and update_title=None (no "Updating..." title), though its hints say otherwise.
    app = Dash(
        __name__,
        server=server,  # type: ignore[arg-type]
        title="HealthFlow",
        suppress_callback_exceptions=True,
        update_title=None,  # type: ignore[arg-type]
    )
    app.layout = layout.page

    @app.callback(
        Output("title", "children"),
        Output("language-label", "children"),
        *[Output(f"tab-{name}", "label") for name in layout.TABS],
        Input("language", "value"),
    )
    def relabel(language: str) -> tuple[str, ...]:
        return (
            translate(language, "title"),
            translate(language, "language"),
            *[translate(language, f"tab_{name}") for name in layout.TABS],
        )

    @app.callback(Output("tab-content", "children"), Input("tabs", "value"), Input("language", "value"))
    def render(tab: str, language: str) -> Any:
        data = load(settings, with_registry=tab in ("overview", "lineage"))
        if tab == "fairness":
            return layout.fairness_tab(data, language, limits)
        if tab == "drift":
            return layout.drift_tab(data, language, limits)
        if tab == "lineage":
            return layout.lineage_tab(data, language, mlflow_ui)
        return layout.overview_tab(data, language)

    return app


def report_dir(settings: Settings, report_id: int) -> Path | None:
    """Return the folder of report ``report_id`` when it lies under the reports root, else None."""
    from healthflow.db import connect
    from monitoring.reports import reports_root

    with connect(settings) as connection:
        row = connection.execute("SELECT report_dir FROM monitoring.reports WHERE id = %s", (report_id,)).fetchone()
    if row is None:
        return None
    folder = Path(row[0]).resolve()
    root = reports_root(settings).resolve()
    # The path comes from the database; serve nothing outside the reports root even if a row was altered.
    return folder if folder.is_relative_to(root) else None
