"""MLflow record of a monitoring run, linked to the audited model version.

One run per `monitor run` in the experiment ``monitor_experiment``, tagged with the model name, version and
training run id. The report files are its artifacts and the drift share, alert count and fairness gaps its
metrics. The model version gets the tag ``monitoring.last_run_id`` pointing back at it. MLflow is a side
channel here: the reports and database rows are the record, so a failure logs a WARNING and returns None.
"""

from __future__ import annotations

import logging
import re

from healthflow.settings import Settings
from monitoring.drift import DriftResult
from monitoring.fairness import FairnessResult
from monitoring.reference import ModelVersionRef
from monitoring.reports import ReportFiles

logger = logging.getLogger(__name__)

UNSAFE_METRIC_CHARACTERS = re.compile(r"[^A-Za-z0-9_\-./ ]")


def metric_name(*parts: str) -> str:
    """Join ``parts`` into an MLflow metric name, replacing characters MLflow rejects."""
    return UNSAFE_METRIC_CHARACTERS.sub("_", ".".join(parts))


def log_to_mlflow(
    settings: Settings,
    *,
    model: ModelVersionRef,
    report_id: int,
    drift: DriftResult,
    fairness: FairnessResult,
    alert_count: int,
    files: ReportFiles,
) -> str | None:
    """Log the run to MLflow and tag the model version; return the MLflow run id, or None on failure."""
    from mlflow.exceptions import MlflowException

    import mlflow
    from mlflow import MlflowClient

    try:
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        experiment = mlflow.set_experiment(settings.monitor_experiment)
        client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        run = client.create_run(
            experiment.experiment_id,
            run_name=f"monitor-{model.name}-v{model.version}-{report_id}",
            tags={
                "healthflow.model_name": model.name,
                "healthflow.model_version": model.version,
                "healthflow.model_run_id": model.run_id,
                "healthflow.report_id": str(report_id),
                "healthflow.labels_known": str(drift.labels_known).lower(),
            },
        )
        run_id = run.info.run_id
        client.log_metric(run_id, "drift_share", drift.drift_share)
        client.log_metric(run_id, "drifted_columns", len(drift.drifted_columns))
        client.log_metric(run_id, "current_rows", drift.current_rows)
        client.log_metric(run_id, "alerts", alert_count)
        for gap in fairness.gaps:
            if gap.difference is not None:
                client.log_metric(run_id, metric_name("gap", gap.attribute, gap.metric), gap.difference)
        for path in sorted(files.folder.iterdir()):
            client.log_artifact(run_id, str(path), artifact_path="monitoring")
        client.set_terminated(run_id)
        if model.run_id:
            client.set_model_version_tag(model.name, model.version, "monitoring.last_run_id", run_id)
    except (MlflowException, OSError) as error:
        logger.warning(
            "monitoring report %d not logged to MLflow at %s: %s", report_id, settings.mlflow_tracking_uri, error
        )
        return None
    return run_id
