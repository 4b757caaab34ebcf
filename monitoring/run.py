"""One monitoring run: reference vs window drift, data quality, fairness, reports, records and alerts.

``monitor_window`` works on frames and returns the results without side effects. ``run_monitoring`` loads
the frames (the champion's training frame through a ReferenceSource, the prediction log window from
PostgreSQL), then writes the reports, the database rows, the MLflow run and the ``audit.alerts`` events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from healthflow.errors import InvalidInputError
from healthflow.settings import Settings
from monitoring.alerts import Alert, drift_alerts, fairness_alerts, quality_alerts
from monitoring.drift import DriftResult, drift_report
from monitoring.fairness import FairnessResult, fairness_audit
from monitoring.quality import QualityCheck, quality_checks
from monitoring.reference import ModelVersionRef, ReferenceSource
from monitoring.window import LABEL, SCORE, Window, load_window

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

DECISION = "decision"
# Risk levels at or above the model's operating point: training sets "medium" to start at the operating
# point, so medium and high are the positive decisions the fairness rates count.
POSITIVE_RISK_LEVELS = ("medium", "high")
# Reference columns that are never compared, even if a feature JSON carried them.
NON_FEATURE_COLUMNS = frozenset({LABEL, SCORE, "risk_level", "scored_at", "model_name", "model_version", "run_id"})


@dataclass
class WindowAudit:
    """The results of one window, before anything is written."""

    columns: list[str]
    drift: DriftResult
    checks: list[QualityCheck]
    fairness: FairnessResult
    alerts: list[Alert]
    labelled_rows: int


@dataclass
class MonitoringOutcome:
    """Result of one `monitor run`: the audit, the report location, the MLflow run and the alerts raised."""

    model: ModelVersionRef
    window: Window
    audit: WindowAudit
    report_id: int
    report_dir: str
    mlflow_run_id: str | None
    alerts_published: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def alerts(self) -> list[Alert]:
        return self.audit.alerts


def feature_columns(reference: pd.DataFrame, current: pd.DataFrame, features: list[str] | None = None) -> list[str]:
    """Return the model inputs to compare: ``features`` when given, else the columns both frames share."""
    if features is not None:
        return features
    shared = [column for column in current.columns if column in reference.columns and column not in NON_FEATURE_COLUMNS]
    if not shared:
        raise InvalidInputError("the window and the reference share no feature column; check the reference artifact")
    return shared


def decisions(window_frame: pd.DataFrame) -> pd.Series:
    """Return 1 where the logged risk level is at or above the operating point, else 0."""
    return window_frame["risk_level"].isin(POSITIVE_RISK_LEVELS).astype(int)


def monitor_window(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    settings: Settings,
    features: list[str] | None = None,
) -> WindowAudit:
    """Audit ``current`` (the prediction window: features, probability, risk_level, label, audit attributes).

    Labels count as known when every row has one; then the ClassificationPreset runs and the fairness audit
    includes TPR, FPR, FNR, AUROC and calibration.
    """
    if len(current) < settings.monitor_min_window_rows:
        raise InvalidInputError(
            f"the window contains {len(current)} predictions, fewer than HEALTHFLOW_MONITOR_MIN_WINDOW_ROWS="
            f"{settings.monitor_min_window_rows}; widen it with --window"
        )
    columns = feature_columns(reference, current, features)
    labelled_rows = int(current[LABEL].notna().sum()) if LABEL in current.columns else 0
    labels_known = labelled_rows == len(current)

    drift = drift_report(reference, current, columns=columns, target=LABEL, score=SCORE)
    checks = quality_checks(
        reference, current, columns=columns, missing_share_limit=settings.monitor_missing_share_limit
    )
    audit_frame = current.assign(**{DECISION: decisions(current)})
    for attribute in settings.monitor_fairness_attributes:
        if attribute not in audit_frame.columns:
            audit_frame[attribute] = None
    fairness = fairness_audit(
        audit_frame,
        y_true=LABEL if labels_known else None,
        y_pred=DECISION,
        y_score=SCORE,
        sensitive_features=settings.monitor_fairness_attributes,
        min_group_size=settings.monitor_min_group_size,
    )
    alerts = [
        *drift_alerts(drift, drift_share_limit=settings.monitor_drift_share_limit),
        *fairness_alerts(
            fairness,
            fairness_gap_limit=settings.monitor_fairness_gap_limit,
            attributes=settings.monitor_fairness_alert_attributes,
        ),
        *quality_alerts(checks),
    ]
    return WindowAudit(
        columns=columns, drift=drift, checks=checks, fairness=fairness, alerts=alerts, labelled_rows=labelled_rows
    )


def run_summary(*, model: ModelVersionRef, window: Window, audit: WindowAudit, settings: Settings) -> dict[str, Any]:
    """Return the JSON summary of a run: limits in force, drift, quality checks and alerts (aggregates only)."""
    return {
        "model": vars(model),
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        "limits": {
            "drift_share": settings.monitor_drift_share_limit,
            "fairness_gap": settings.monitor_fairness_gap_limit,
            "min_group_size": settings.monitor_min_group_size,
            "missing_share": settings.monitor_missing_share_limit,
        },
        "labelled_rows": audit.labelled_rows,
        "drift": audit.drift.summary(),
        "quality_checks": [vars(check) for check in audit.checks],
        "alerts": [alert.to_dict() for alert in audit.alerts],
    }


def run_monitoring(
    settings: Settings,
    *,
    window: Window,
    model_name: str,
    model_version: str | None,
    source: ReferenceSource,
    publish: bool = True,
) -> MonitoringOutcome:
    """Run the monitoring of ``model_name`` (the champion unless ``model_version``) over ``window``."""
    from monitoring.reports import report_folder, write_reports
    from monitoring.store import publish_alerts, save_run, set_mlflow_run
    from monitoring.tracking import log_to_mlflow

    model = source.resolve(model_name, model_version)
    reference = source.load(model)
    loaded = load_window(settings, window, model_name=model.name)
    current = loaded.frame
    if current.empty:
        raise InvalidInputError(
            f"no predictions of model {model.name} between {window.start.isoformat()} and {window.end.isoformat()}; "
            "widen the window with --window or score some stays first"
        )
    features = [name for name in loaded.features if name in reference.columns]
    audit = monitor_window(reference, current, settings=settings, features=features or None)

    created_at = datetime.now(UTC)
    summary = run_summary(model=model, window=window, audit=audit, settings=settings)
    files = write_reports(
        report_folder(settings, created_at),
        drift_snapshot=audit.drift.snapshot,
        classification_snapshot=audit.drift.classification_snapshot,
        summary=summary,
        fairness=audit.fairness.summary(),
    )
    stored = save_run(
        settings,
        created_at=created_at,
        window=window,
        model=model,
        drift=audit.drift,
        fairness=audit.fairness,
        labelled_rows=audit.labelled_rows,
        quality_failures=sum(not check.passed for check in audit.checks),
        files=files,
        summary=summary,
        alerts=audit.alerts,
    )
    mlflow_run_id = log_to_mlflow(
        settings,
        model=model,
        report_id=stored.report_id,
        drift=audit.drift,
        fairness=audit.fairness,
        alert_count=len(audit.alerts),
        files=files,
    )
    if mlflow_run_id:
        set_mlflow_run(settings, stored.report_id, mlflow_run_id)
    published = publish_alerts(settings, stored=stored, model=model, alerts=audit.alerts) if publish else 0
    logger.info(
        "monitoring report %d for %s version %s: drift share %.2f, %d alerts",
        stored.report_id,
        model.name,
        model.version,
        audit.drift.drift_share,
        len(audit.alerts),
    )
    return MonitoringOutcome(
        model=model,
        window=window,
        audit=audit,
        report_id=stored.report_id,
        report_dir=str(files.folder),
        mlflow_run_id=mlflow_run_id,
        alerts_published=published,
    )
