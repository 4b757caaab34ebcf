"""``stack up | down | status | env``: the three services in dependency order.

A service whose ``*_managed`` setting is false is not started or stopped here; it is only checked, so an
existing PostgreSQL, Kafka or MLflow given by environment variables is used as it is.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from healthflow.db import prepare_platform_databases
from healthflow.events import ensure_topics
from healthflow.settings import Settings
from healthflow.stack import kafka, mlflow_server, postgres
from healthflow.stack.processes import read_pid, stop_process

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    managed: bool
    address: str
    healthy: bool
    pid: int | None
    log: Path | None


def up(settings: Settings) -> None:
    """Start every managed service (idempotent), create databases and topics, and wait until all are healthy."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)

    if settings.pg_managed:
        postgres.start(settings)
    else:
        _require(
            postgres.is_healthy(settings),
            "PostgreSQL",
            f"{settings.pg_host}:{settings.pg_port}",
            "HEALTHFLOW_PG_HOST/PORT",
        )
        prepare_platform_databases(settings)

    if settings.kafka_managed:
        kafka.start(settings)
    else:
        _require(
            kafka.is_healthy(settings), "Kafka", settings.kafka_bootstrap_servers, "HEALTHFLOW_KAFKA_BOOTSTRAP_SERVERS"
        )
    ensure_topics(settings)

    if settings.mlflow_managed:
        mlflow_server.start(settings)
    else:
        _require(
            mlflow_server.is_healthy(settings), "MLflow", settings.mlflow_tracking_uri, "HEALTHFLOW_MLFLOW_TRACKING_URI"
        )
    logger.info("stack is up")


def _require(healthy: bool, name: str, address: str, variable: str) -> None:
    if not healthy:
        raise ConnectionError(
            f"{name} at {address} is not reachable; it is configured as external, so start it or fix {variable}"
        )


# Platform services that `make demo` leaves running in the background; `stack down` stops them first.
DEMO_SERVICES = ("dashboard", "scoring", "ingest-http")


def down(settings: Settings) -> list[str]:
    """Stop the demo's services, then the managed services in reverse order; return the names that were running."""
    stopped = [name for name in DEMO_SERVICES if stop_process(settings.state_dir, name)]
    if settings.mlflow_managed and mlflow_server.stop(settings):
        stopped.append("mlflow")
    if settings.kafka_managed and kafka.stop(settings):
        stopped.append("kafka")
    if settings.pg_managed and postgres.stop(settings):
        stopped.append("postgres")
    return stopped


def status(settings: Settings) -> list[ServiceStatus]:
    mlflow_address = urlparse(settings.mlflow_tracking_uri)
    return [
        ServiceStatus(
            "postgres",
            settings.pg_managed,
            f"{settings.pg_host}:{settings.pg_port}",
            postgres.is_healthy(settings),
            postgres.server_pid(settings) if settings.pg_managed else None,
            postgres.log_file(settings) if settings.pg_managed else None,
        ),
        ServiceStatus(
            "kafka",
            settings.kafka_managed,
            settings.kafka_bootstrap_servers,
            kafka.is_healthy(settings),
            read_pid(settings.state_dir, kafka.NAME) if settings.kafka_managed else None,
            kafka.log_file(settings) if settings.kafka_managed else None,
        ),
        ServiceStatus(
            "mlflow",
            settings.mlflow_managed,
            f"{mlflow_address.hostname}:{mlflow_address.port}",
            mlflow_server.is_healthy(settings),
            read_pid(settings.state_dir, mlflow_server.NAME) if settings.mlflow_managed else None,
            mlflow_server.log_file(settings) if settings.mlflow_managed else None,
        ),
    ]


def env_lines(settings: Settings) -> list[str]:
    """Return shell export lines for the stack's addresses; the database password is included only in dev."""
    values = {
        "HEALTHFLOW_PG_HOST": settings.pg_host,
        "HEALTHFLOW_PG_PORT": str(settings.pg_port),
        "HEALTHFLOW_PG_USER": settings.pg_user,
        "HEALTHFLOW_PG_DATABASE": settings.pg_database,
        "HEALTHFLOW_PG_FEAST_DATABASE": settings.pg_feast_database,
        "HEALTHFLOW_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "HEALTHFLOW_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
    }
    # libpq's own variables, so `psql` with no arguments opens the platform's database.
    values.update(
        PGHOST=settings.pg_host, PGPORT=str(settings.pg_port), PGUSER=settings.pg_user, PGDATABASE=settings.pg_database
    )
    if settings.profile == "dev" and settings.pg_password is not None:
        values["HEALTHFLOW_PG_PASSWORD"] = settings.pg_password.get_secret_value()
        values["PGPASSWORD"] = settings.pg_password.get_secret_value()
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
