"""The MLflow tracking server: PostgreSQL backend store, artifacts served from a local folder."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import httpx

from healthflow.settings import Settings
from healthflow.stack.processes import read_pid, start_detached, stop_process, wait_until

logger = logging.getLogger(__name__)

NAME = "mlflow"


def home_dir(settings: Settings) -> Path:
    return (settings.state_dir / "mlflow").resolve()


def log_file(settings: Settings) -> Path:
    return home_dir(settings) / "mlflow.log"


def start(settings: Settings) -> None:
    """Start ``mlflow server`` on the tracking URI's host and port; the backend URI goes by environment, not argv."""
    if is_healthy(settings):
        return
    address = urlparse(settings.mlflow_tracking_uri)
    artifacts = home_dir(settings) / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["MLFLOW_BACKEND_STORE_URI"] = settings.sqlalchemy_url(settings.pg_mlflow_database)
    env["MLFLOW_ARTIFACTS_DESTINATION"] = str(artifacts)
    if read_pid(settings.state_dir, NAME) is None:
        start_detached(
            NAME,
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                address.hostname or "127.0.0.1",
                "--port",
                str(address.port or 5000),
                "--workers",
                "1",
            ],
            state_dir=settings.state_dir,
            log_file=log_file(settings),
            env=env,
        )
    wait_until(
        lambda: is_healthy(settings), what="MLflow tracking server", timeout_seconds=300, log_file=log_file(settings)
    )


def stop(settings: Settings) -> bool:
    return stop_process(settings.state_dir, NAME, timeout_seconds=30)


def is_healthy(settings: Settings) -> bool:
    try:
        response = httpx.get(f"{settings.mlflow_tracking_uri}/health", timeout=3)
    except httpx.HTTPError:
        return False
    return response.status_code == 200
