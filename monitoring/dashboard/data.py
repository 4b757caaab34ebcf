"""The dashboard's data: aggregates read from PostgreSQL and the MLflow registry, never a patient row.

Every query groups (by day, by report, by group) or reads the monitoring tables, which hold aggregates only.
Lineage reads MLflow; when MLflow cannot be reached, the tab falls back to the versions seen in the
prediction log and shows a notice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from healthflow.settings import Settings

logger = logging.getLogger(__name__)

# Scores are summarised per day by these quantiles (a box per day), so no single score leaves the database.
SCORE_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)

VOLUME_SQL = """
SELECT date_trunc('day', scored_at) AS day, count(*) AS predictions,
       percentile_cont(ARRAY[0.1, 0.25, 0.5, 0.75, 0.9]) WITHIN GROUP (ORDER BY probability) AS quantiles,
       avg(probability) AS mean_score
FROM serving.predictions
WHERE scored_at >= now() - make_interval(days => %(days)s)
GROUP BY 1 ORDER BY 1
"""

VERSIONS_SQL = """
SELECT model_name, model_version, run_id, count(*) AS predictions, max(scored_at) AS last_scored_at
FROM serving.predictions
GROUP BY 1, 2, 3 ORDER BY max(scored_at) DESC
"""

LATEST_REPORT_SQL = """
SELECT id, created_at, window_start, window_end, model_name, model_version, model_run_id, mlflow_run_id,
       reference_rows, current_rows, labelled_rows, labels_known, drift_share, drifted_columns, quality_failures,
       summary -> 'limits' AS limits
FROM monitoring.reports ORDER BY created_at DESC, id DESC LIMIT 1
"""


@dataclass
class DashboardData:
    """Everything the four tabs show; lists of plain dicts, ready for plotly."""

    daily: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] | None = None
    drift_columns: list[dict[str, Any]] = field(default_factory=list)
    fairness_groups: list[dict[str, Any]] = field(default_factory=list)
    gap_history: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    registry_versions: list[dict[str, Any]] = field(default_factory=list)
    registry_error: str | None = None
    champion: dict[str, Any] | None = None


def _rows(connection: Any, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    cursor = connection.execute(query, params or {})
    names = [item.name for item in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def load_dashboard_data(settings: Settings, *, days: int = 30, with_registry: bool = True) -> DashboardData:
    """Read the aggregates of the last ``days`` days and the latest monitoring report."""
    from healthflow.db import connect

    data = DashboardData()
    with connect(settings) as connection:
        data.daily = _rows(connection, VOLUME_SQL, {"days": days})
        data.versions = _rows(connection, VERSIONS_SQL)
        latest = _rows(connection, LATEST_REPORT_SQL)
        data.report = latest[0] if latest else None
        if data.report is not None:
            report_id = {"report_id": data.report["id"]}
            data.drift_columns = _rows(
                connection,
                "SELECT column_name, column_type, method, score, threshold, drifted FROM monitoring.drift_columns"
                " WHERE report_id = %(report_id)s ORDER BY drifted DESC, column_name",
                report_id,
            )
            data.fairness_groups = _rows(
                connection,
                "SELECT attribute, group_value, row_count, too_small, metrics FROM monitoring.fairness"
                " WHERE report_id = %(report_id)s ORDER BY attribute, group_value",
                report_id,
            )
        data.gap_history = _rows(
            connection,
            "SELECT r.created_at, g.attribute, g.metric, g.difference FROM monitoring.fairness_gaps g"
            " JOIN monitoring.reports r ON r.id = g.report_id WHERE g.difference IS NOT NULL"
            " AND r.created_at >= now() - make_interval(days => %(days)s) ORDER BY r.created_at",
            {"days": days},
        )
        data.alerts = _rows(
            connection,
            "SELECT created_at, kind, subject, value, limit_value, model_version FROM monitoring.alerts"
            " ORDER BY created_at DESC LIMIT 20",
        )
    if with_registry:
        data.registry_versions, data.registry_error = registry_versions(settings)
        if data.versions and data.registry_error is None:
            served = data.versions[0]["model_name"]
            data.champion = next(
                (row for row in data.registry_versions if row["name"] == served and "champion" in row["aliases"]), None
            )
    return data


def fingerprint_of(values: dict[str, str]) -> str:
    """Return the data hash among a version's or run's tags (a key naming a fingerprint or a SHA-256), or ''."""
    for key, value in sorted(values.items()):
        if "fingerprint" in key or key.endswith("sha256"):
            return str(value)
    return ""


def registry_versions(settings: Settings) -> tuple[list[dict[str, Any]], str | None]:
    """Return the registered model versions with run id, aliases and data fingerprint; or an error text."""
    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    versions = []
    aliases: dict[str, dict[str, str]] = {}
    try:
        for version in client.search_model_versions(max_results=100):
            # Search results carry no aliases (MLflow 3.17), so they are read once per registered model.
            if version.name not in aliases:
                aliases[version.name] = dict(client.get_registered_model(version.name).aliases or {})
            fingerprint = fingerprint_of(version.tags or {})
            if not fingerprint and version.run_id:
                run = client.get_run(version.run_id)
                fingerprint = fingerprint_of({**run.data.params, **run.data.tags})
            versions.append(
                {
                    "name": version.name,
                    "version": str(version.version),
                    "run_id": version.run_id or "",
                    "aliases": sorted(
                        alias for alias, number in aliases[version.name].items() if str(number) == str(version.version)
                    ),
                    "fingerprint": fingerprint,
                    "created_at": version.creation_timestamp,
                }
            )
    except (MlflowException, OSError) as error:
        logger.warning("dashboard lineage: MLflow at %s not readable: %s", settings.mlflow_tracking_uri, error)
        return [], f"MLflow at {settings.mlflow_tracking_uri} is not reachable"
    return versions, None
