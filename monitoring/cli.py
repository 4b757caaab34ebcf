"""CLI of the monitoring stage: `healthflow monitor run`, `healthflow monitor simulate-drift`, `healthflow dashboard`.

Heavy libraries (pandas, Evidently, fairlearn, MLflow, Dash) are imported inside the commands.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import typer

from healthflow.errors import HealthFlowError

if TYPE_CHECKING:
    from healthflow.settings import Settings
    from monitoring.reference import MLflowReferenceSource

logger = logging.getLogger(__name__)

monitor_app = typer.Typer(help="Drift, data quality and fairness audits of the prediction log.", no_args_is_help=True)


def _model_name(settings: Settings, model_name: str | None) -> str:
    return model_name or settings.serve_model_name or settings.serve_feature_service


def _reference_source(settings: Settings) -> MLflowReferenceSource:
    from monitoring.reference import MLflowReferenceSource

    return MLflowReferenceSource(
        settings.mlflow_tracking_uri,
        artifact_path=settings.monitor_reference_artifact,
        download_dir=settings.state_dir / "monitoring" / "reference",
    )


@monitor_app.command("run")
def run(
    window: str = typer.Option(
        None, help="Window length ending now: a number and h, d or w (default: HEALTHFLOW_MONITOR_WINDOW_DAYS)."
    ),
    model_name: str = typer.Option(
        None, help="Registered model (default: HEALTHFLOW_SERVE_MODEL_NAME or the feature service)."
    ),
    model_version: str = typer.Option(None, help="Model version to audit (default: the champion)."),
    fail_on_alert: bool = typer.Option(False, "--fail-on-alert", help="Exit with status 3 when any alert is raised."),
    publish: bool = typer.Option(True, help="Publish alerts as events on audit.alerts."),
) -> None:
    """Compare the window's predictions with the champion's training data; write reports and raise alerts."""
    from datetime import timedelta

    from healthflow.settings import get_settings
    from monitoring.run import run_monitoring
    from monitoring.window import parse_window, window_ending

    settings = get_settings()
    try:
        length = parse_window(window) if window else timedelta(days=settings.monitor_window_days)
        outcome = run_monitoring(
            settings,
            window=window_ending(length),
            model_name=_model_name(settings, model_name),
            model_version=model_version,
            source=_reference_source(settings),
            publish=publish,
        )
    except (HealthFlowError, ConnectionError) as error:
        typer.echo(f"healthflow monitor run: {getattr(error, 'message', error)}", err=True)
        raise typer.Exit(code=2) from None

    audit = outcome.audit
    typer.echo(
        f"report {outcome.report_id}: {outcome.model.name} version {outcome.model.version}, "
        f"{audit.drift.current_rows} predictions ({audit.labelled_rows} labelled) "
        f"vs {audit.drift.reference_rows} reference rows"
    )
    typer.echo(
        f"drift share {audit.drift.drift_share:.2f}; drifted: {', '.join(audit.drift.drifted_columns) or 'none'}"
    )
    typer.echo(f"reports: {outcome.report_dir}")
    typer.echo(f"MLflow run: {outcome.mlflow_run_id or 'not logged (see the warning above)'}")
    for alert in outcome.alerts:
        typer.echo(f"ALERT {alert.kind}: {alert.message}")
    if not outcome.alerts:
        typer.echo("no alerts")
    if fail_on_alert and outcome.alerts:
        raise typer.Exit(code=3)


@monitor_app.command("simulate-drift")
def simulate(
    rows: int = typer.Option(500, min=1, help="Number of stays to score."),
    age_band_steps: int = typer.Option(2, help="Move every age band up this many bands (0: no age shift)."),
    stay_factor: float = typer.Option(1.8, help="Multiply the length of stay by this factor (1: no change)."),
    age_band_column: str = typer.Option("age_band", help="Feature containing the age band."),
    stay_column: str = typer.Option("length_of_stay_days", help="Feature containing the length of stay in days."),
    model_name: str = typer.Option(
        None, help="Registered model (default: HEALTHFLOW_SERVE_MODEL_NAME or the feature service)."
    ),
    model_alias: str = typer.Option("champion", help="Registry alias of the version that scores the stays."),
    seed: int = typer.Option(7, help="Seed of the stay sample."),
) -> None:
    """Score a shifted copy of the champion's training population and log the scores, to demonstrate drift."""
    from healthflow.settings import get_settings
    from monitoring.simulate import Shift, simulate_drift

    settings = get_settings()
    name = _model_name(settings, model_name)
    shift = Shift(
        age_band_column=age_band_column, age_band_steps=age_band_steps, stay_column=stay_column, stay_factor=stay_factor
    )
    try:
        written = simulate_drift(
            settings,
            source=_reference_source(settings),
            model_name=name,
            alias=model_alias,
            rows=rows,
            shift=shift,
            seed=seed,
        )
    except (HealthFlowError, ConnectionError) as error:
        typer.echo(f"healthflow monitor simulate-drift: {getattr(error, 'message', error)}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(
        f"logged {written} simulated scores of {name}; shifted columns: {', '.join(shift.shifted_columns()) or 'none'}"
    )
    typer.echo("run `healthflow monitor run` to see the drift")


def dashboard(
    host: str = typer.Option(None, help="Address to bind (default: HEALTHFLOW_DASHBOARD_HOST)."),
    port: int = typer.Option(None, help="Port to listen on (default: HEALTHFLOW_DASHBOARD_PORT)."),
) -> None:
    """Serve the governance dashboard (English and French); every request needs a token with audit:read."""
    from healthflow.settings import get_settings
    from monitoring.dashboard.app import create_app

    # The lineage tab reads MLflow on every view. MLflow's client retries a refused connection for minutes by
    # default, so the dashboard fails fast instead and shows that the registry is unreachable.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    settings = get_settings()
    app = create_app(settings)
    bind_host, bind_port = host or settings.dashboard_host, port or settings.dashboard_port
    logger.info("dashboard listening on http://%s:%d", bind_host, bind_port)
    app.run(host=bind_host, port=bind_port, debug=False)
