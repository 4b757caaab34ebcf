"""PostgreSQL records of monitoring runs (schema ``monitoring``) and ``alert`` events on ``audit.alerts``.

``alert`` event payload: alert_id, report_id, model_name, model_version, kind (drift, fairness,
data_quality), subject, value, limit, message. The event key is the model name (alerts concern a model,
not a patient).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from healthflow.db import jsonb
from healthflow.settings import Settings
from monitoring.alerts import Alert
from monitoring.drift import DriftResult
from monitoring.fairness import FairnessResult
from monitoring.reference import ModelVersionRef
from monitoring.reports import ReportFiles
from monitoring.window import Window

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredRun:
    report_id: int
    alert_ids: list[int]


INSERT_REPORT = """
INSERT INTO monitoring.reports (created_at, window_start, window_end, model_name, model_version, model_run_id,
    reference_rows, current_rows, labelled_rows, labels_known, drift_share, drifted_columns, quality_failures,
    report_dir, html_path, json_path, classification_html_path, summary)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING id
"""


INSERT_ALERT = """
INSERT INTO monitoring.alerts (report_id, created_at, model_name, model_version, kind, subject, value, limit_value,
    message)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING id
"""


def returned_id(cursor: Any) -> int:
    """Return the id of an ``INSERT ... RETURNING id``."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("INSERT ... RETURNING id returned no row")
    return int(row[0])


def save_run(
    settings: Settings,
    *,
    created_at: datetime,
    window: Window,
    model: ModelVersionRef,
    drift: DriftResult,
    fairness: FairnessResult,
    labelled_rows: int,
    quality_failures: int,
    files: ReportFiles,
    summary: dict[str, Any],
    alerts: list[Alert],
) -> StoredRun:
    """Insert the run, its per-column drift, per-group fairness, gaps and alerts in one transaction."""
    from healthflow.db import transaction

    with transaction(settings) as connection:
        report_id = returned_id(
            connection.execute(
                INSERT_REPORT,
                (
                    created_at,
                    window.start,
                    window.end,
                    model.name,
                    model.version,
                    model.run_id,
                    drift.reference_rows,
                    drift.current_rows,
                    labelled_rows,
                    drift.labels_known,
                    drift.drift_share,
                    drift.drifted_columns,
                    quality_failures,
                    str(files.folder),
                    str(files.html),
                    str(files.json),
                    str(files.classification_html) if files.classification_html else None,
                    jsonb(summary),
                ),
            )
        )
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO monitoring.drift_columns VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (report_id, item.column, item.column_type, item.method, item.score, item.threshold, item.drifted)
                    for item in drift.columns
                ],
            )
            cursor.executemany(
                "INSERT INTO monitoring.fairness VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (report_id, item.attribute, item.group, item.count, item.too_small, jsonb(item.metrics))
                    for item in fairness.groups
                ],
            )
            cursor.executemany(
                "INSERT INTO monitoring.fairness_gaps VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (report_id, gap.attribute, gap.metric, gap.difference, gap.ratio, gap.groups_compared)
                    for gap in fairness.gaps
                ],
            )
        alert_ids = [
            returned_id(
                connection.execute(
                    INSERT_ALERT,
                    (
                        report_id,
                        created_at,
                        model.name,
                        model.version,
                        alert.kind,
                        alert.subject,
                        alert.value,
                        alert.limit,
                        alert.message,
                    ),
                )
            )
            for alert in alerts
        ]
    return StoredRun(report_id=report_id, alert_ids=alert_ids)


def set_mlflow_run(settings: Settings, report_id: int, mlflow_run_id: str) -> None:
    from healthflow.db import transaction

    with transaction(settings) as connection:
        connection.execute("UPDATE monitoring.reports SET mlflow_run_id = %s WHERE id = %s", (mlflow_run_id, report_id))


def publish_alerts(
    settings: Settings, *, stored: StoredRun, model: ModelVersionRef, alerts: list[Alert], timeout_seconds: float = 30.0
) -> int:
    """Publish one ``alert`` event per stored alert, wait for the broker's acknowledgement, mark them published.

    Returns the number published. Raises KafkaException when any event was not acknowledged. The alert rows then
    stay with ``published = false`` so a later run or an operator can see what was not sent.
    """
    from healthflow.db import transaction
    from healthflow.events import ALERTS, DeliveryTracker, Envelope, flush_or_raise, make_producer

    if not alerts:
        return 0
    producer = make_producer(settings)
    tracker = DeliveryTracker()
    for alert_id, alert in zip(stored.alert_ids, alerts, strict=True):
        envelope = Envelope(
            event_type="alert",
            key=model.name,
            source="monitoring",
            payload={
                "alert_id": alert_id,
                "report_id": stored.report_id,
                "model_name": model.name,
                "model_version": model.version,
                **alert.to_dict(),
            },
        )
        producer.produce(settings.topic(ALERTS), key=model.name, value=envelope.to_bytes(), on_delivery=tracker)
    flush_or_raise(producer, tracker, timeout_seconds=timeout_seconds)

    with transaction(settings) as connection:
        connection.execute("UPDATE monitoring.alerts SET published = true WHERE id = ANY(%s)", (stored.alert_ids,))
    logger.info("published %d alerts for report %d on %s", len(alerts), stored.report_id, settings.topic(ALERTS))
    return len(alerts)
