"""Log a training result to MLflow: one run per training, one registered model per feature service.

Run layout (artifact paths):

- ``model/``: the pyfunc model (``training.pyfunc.ReadmissionModel``) with signature and input example.
- ``data/fingerprint.json``: feature service, row count, patient count, time range, content hash.
- ``model_inputs/features.json``, ``model_inputs/thresholds.json``, ``model_inputs/calibration.json``.
- ``evaluation/metrics.json`` and the calibration, ROC and confusion-matrix plots.
- ``evaluation/test_set.parquet``: the test side without patient, stay or time columns, label last. Promotion
  scores the champion on these rows.
- ``reference/training_frame.parquet``: the train side (pseudonymised keys, features, audit attributes, label),
  the reference of monitoring's drift reports.
- ``fairness/fairness.json``: per-group metrics and gaps.
- ``shap/importance.csv``, ``shap/shap_importance.png``, ``shap/shap_beeswarm.png``, ``shap/expected_value.json``.

The registered version carries tags with the test metrics, thresholds, operating point, expected value and
data hash, so the registry alone describes a version and links to its run.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healthflow.settings import Settings
from training.fingerprint import git_commit
from training.pipeline import TrainingResult

logger = logging.getLogger(__name__)

TEST_SET_ARTIFACT = "evaluation/test_set.parquet"
# Monitoring reads this path (setting monitor_reference_artifact) as the drift reference.
REFERENCE_ARTIFACT = "reference/training_frame.parquet"
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class LoggedModel:
    """Identifiers of a logged training run: run, experiment, model URI and registered version."""

    run_id: str
    experiment_id: str
    model_uri: str
    registered_model_name: str
    version: str


def registered_model_name(feature_service: str, suffix: str = "") -> str:
    """Return the registered model name of a feature service (one registered model per feature service)."""
    return f"{feature_service}{suffix}"


def model_metadata(result: TrainingResult) -> dict[str, Any]:
    """Return what serving needs beside the model: thresholds, operating point, expected value, types."""
    return {
        "feature_service": result.spec.feature_service,
        "thresholds": result.thresholds.as_dict(),
        "operating_point": result.thresholds.operating_point,
        "shap_expected_value": result.expected_value,
        "shap_scale": "CatBoost raw log-odds; margin = expected value + sum of SHAP values; "
        "probability = calibrator(margin)",
        "feature_types": result.types.as_dict(),
        "calibrator": result.calibrator.as_dict(),
        "best_iteration": int(result.model.get_best_iteration()),
    }


def log_training(
    result: TrainingResult,
    *,
    settings: Settings,
    model_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> LoggedModel:
    """Log ``result`` as one MLflow run, register its model and tag the new version."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    name = model_name or registered_model_name(result.spec.feature_service)
    experiment = mlflow.set_experiment(f"healthflow-{result.spec.feature_service}")
    commit = git_commit()

    with mlflow.start_run(run_name=f"train-{result.spec.feature_service}") as run, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mlflow.set_tags(_run_tags(result, commit=commit) | (extra_tags or {}))
        mlflow.log_params(_run_params(result, settings))
        mlflow.log_metrics(_run_metrics(result))
        _log_documents(result, folder)
        _log_plots(result, folder)
        _log_test_set(result, folder)
        _log_training_frame(result, folder)
        model_info = _log_pyfunc(result, folder)

    version = _register(result, model_uri=model_info.model_uri, name=name, run_id=run.info.run_id, commit=commit)
    logger.info(
        "logged run %s and registered %s version %s (test AUROC %.4f)",
        run.info.run_id,
        name,
        version,
        result.evaluations["model"].metrics["auroc"],
    )
    return LoggedModel(
        run_id=run.info.run_id,
        experiment_id=experiment.experiment_id,
        model_uri=model_info.model_uri,
        registered_model_name=name,
        version=version,
    )


def _run_tags(result: TrainingResult, *, commit: str) -> dict[str, str]:
    fingerprint = result.fingerprint
    return {
        "healthflow.stage": "training",
        "healthflow.feature_service": result.spec.feature_service,
        "healthflow.git_commit": commit,
        "mlflow.source.git.commit": commit,
        "data.feature_service": str(fingerprint["feature_service"]),
        "data.row_count": str(fingerprint["row_count"]),
        "data.time_min": str(fingerprint["time_min"]),
        "data.time_max": str(fingerprint["time_max"]),
        "data.content_sha256": str(fingerprint["content_sha256"]),
    }


def _run_params(result: TrainingResult, settings: Settings) -> dict[str, Any]:
    return {
        "feature_service": result.spec.feature_service,
        "iterations_max": result.params.iterations,
        "best_iteration": int(result.model.get_best_iteration()),
        "learning_rate": result.params.learning_rate,
        "depth": result.params.depth,
        "class_weighting": result.params.class_weighting,
        "max_ctr_complexity": result.params.max_ctr_complexity,
        "early_stopping_rounds": result.params.early_stopping_rounds,
        "random_seed": result.params.seed,
        "calibration_method": result.calibrator.method,
        "operating_point_rule": settings.train_operating_point_rule,
        "operating_point": round(result.thresholds.operating_point, 6),
        "risk_threshold_medium": round(result.thresholds.medium, 6),
        "risk_threshold_high": round(result.thresholds.high, 6),
        "split_by_time": result.spec.split_by_time,
        "test_fraction": settings.train_test_fraction,
        "validation_fraction": settings.train_validation_fraction,
        "rows_train": len(result.split.train),
        "rows_validation": len(result.split.validation),
        "rows_test": len(result.split.test),
        "rows_dropped_at_cutoffs": result.split.dropped_rows,
        "feature_count": len(result.types.names),
        "use_race_as_feature": settings.train_use_race_as_feature,
        "bootstrap_iterations": settings.train_bootstrap_iterations,
        "fairness_gap_limits": json.dumps(settings.train_fairness_gap_limits, sort_keys=True),
        "fairness_gate_attributes": ",".join(settings.train_fairness_gate_attributes),
    }


def _run_metrics(result: TrainingResult) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name, evaluation in result.evaluations.items():
        metrics.update(evaluation.flat(f"test_{name}"))
    metrics.update(result.fairness.flat_gaps())
    metrics.update({f"validation_brier_{name}": value for name, value in result.calibration.validation_brier.items()})
    metrics["validation_auroc"] = result.validation_auroc
    metrics.update({f"time_{name}": value for name, value in result.timings.items()})
    if result.explanation is not None:
        metrics["shap_expected_value"] = result.explanation.expected_value
        metrics["shap_max_additivity_error"] = result.explanation.max_additivity_error
    return {name: float(value) for name, value in metrics.items() if np.isfinite(value)}


def _log_documents(result: TrainingResult, folder: Path) -> None:
    import mlflow
    from training.evaluation import summarize

    mlflow.log_dict(result.fingerprint, "data/fingerprint.json")
    mlflow.log_dict(
        {"features": result.types.names, "types": result.types.as_dict(), "label": result.spec.label_column},
        "model_inputs/features.json",
    )
    mlflow.log_dict(result.thresholds.as_dict(), "model_inputs/thresholds.json")
    mlflow.log_dict(
        {"chosen": result.calibrator.as_dict(), "validation_brier": result.calibration.validation_brier},
        "model_inputs/calibration.json",
    )
    mlflow.log_dict(summarize(result.evaluations), "evaluation/metrics.json")
    mlflow.log_dict(_json_safe(result.fairness.as_dict()), "fairness/fairness.json")
    if result.explanation is not None:
        mlflow.log_dict(
            {"expected_value": result.explanation.expected_value, "scale": "CatBoost raw log-odds"},
            "shap/expected_value.json",
        )
        importance_path = folder / "importance.csv"
        result.explanation.importance.to_csv(importance_path, index=False)
        mlflow.log_artifact(str(importance_path), "shap")


def _log_plots(result: TrainingResult, folder: Path) -> None:
    import mlflow
    from training.explain import save_shap_plots
    from training.plots import save_calibration_plot, save_confusion_plot, save_roc_plot

    y_test = result.split.test[result.spec.label_column].to_numpy().astype("int64")
    probabilities = {"catboost": result.test_probability, **result.baseline_probabilities}
    plots = [
        save_calibration_plot(folder / "plots" / "calibration.png", y_true=y_test, probabilities=probabilities),
        save_roc_plot(folder / "plots" / "roc.png", y_true=y_test, probabilities=probabilities),
        save_confusion_plot(
            folder / "plots" / "confusion_matrix.png",
            confusion=result.evaluations["model"].confusion,
            threshold=result.thresholds.operating_point,
        ),
    ]
    for path in plots:
        if path is not None:
            mlflow.log_artifact(str(path), "evaluation")
    if result.explanation is not None:
        for path in save_shap_plots(result.explanation, folder / "shap"):
            mlflow.log_artifact(str(path), "shap")


def _log_test_set(result: TrainingResult, folder: Path) -> None:
    """Store the test side without patient, stay and time columns, label last.

    Every other column is kept, so a champion trained on other columns of the same feature service can
    still be scored on it.
    """
    import mlflow

    spec = result.spec
    dropped = {spec.patient_column, spec.stay_column, spec.time_column, spec.label_available_column, spec.label_column}
    columns = [name for name in result.split.test.columns if name not in dropped] + [spec.label_column]
    path = folder / "test_set.parquet"
    result.split.test[columns].reset_index(drop=True).to_parquet(path, index=False)
    mlflow.log_artifact(str(path), "evaluation")


def _log_training_frame(result: TrainingResult, folder: Path) -> None:
    """Store the train side (pseudonymised keys, features, audit attributes, label) as the drift reference.

    Monitoring compares production windows with this frame; it contains no identifiable data, because training
    only ever sees pseudonyms and de-identified features.
    """
    import mlflow

    path = folder / "training_frame.parquet"
    result.split.train.reset_index(drop=True).to_parquet(path, index=False)
    mlflow.log_artifact(str(path), REFERENCE_ARTIFACT.rsplit("/", 1)[0])


def _log_pyfunc(result: TrainingResult, folder: Path) -> Any:
    from mlflow.models import infer_signature

    import mlflow
    from training.model import prepare_features
    from training.pyfunc import ReadmissionModel, write_model_files

    meta = model_metadata(result)
    artifacts = write_model_files(
        folder / "model_files", model=result.model, types=result.types, calibrator=result.calibrator, meta=meta
    )
    example = prepare_features(result.split.validation.head(5), result.types).reset_index(drop=True)
    python_model = ReadmissionModel()
    signature = infer_signature(
        example, pd.DataFrame({"readmission_probability": np.zeros(len(example), dtype="float64")})
    )
    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=python_model,
        artifacts=artifacts,
        signature=signature,
        input_example=example,
        metadata=_json_safe(meta),
        pip_requirements=_pip_requirements(),
    )


def _register(result: TrainingResult, *, model_uri: str, name: str, run_id: str, commit: str) -> str:
    import mlflow
    from mlflow import MlflowClient

    version = mlflow.register_model(model_uri, name, tags={"healthflow.run_id": run_id})
    client = MlflowClient()
    metrics = result.evaluations["model"].metrics
    tags = {
        "feature_service": result.spec.feature_service,
        "run_id": run_id,
        "git_commit": commit,
        "data.content_sha256": str(result.fingerprint["content_sha256"]),
        "test_auroc": f"{metrics['auroc']:.6f}",
        "test_auprc": f"{metrics['auprc']:.6f}",
        "test_brier": f"{metrics['brier']:.6f}",
        "test_calibration_slope": f"{metrics['calibration_slope']:.6f}",
        "operating_point": f"{result.thresholds.operating_point:.6f}",
        "risk_threshold_medium": f"{result.thresholds.medium:.6f}",
        "risk_threshold_high": f"{result.thresholds.high:.6f}",
        "risk_threshold_rule": result.thresholds.rule,
        "shap_expected_value": "" if result.expected_value is None else f"{result.expected_value:.10f}",
        "calibration_method": result.calibrator.method,
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.update_model_version(
        name,
        version.version,
        description=(
            f"CatBoost on {result.spec.feature_service}; test AUROC {metrics['auroc']:.4f}; run {run_id}; "
            f"data hash {str(result.fingerprint['content_sha256'])[:12]}"
        ),
    )
    return str(version.version)


def _pip_requirements() -> list[str]:
    # NOTE: the pyfunc class lives in this project's ``training`` package, which is not on PyPI, so loading
    # the model needs the project installed (as serving is); these pins cover only the third-party packages.
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("mlflow", "catboost", "pandas", "numpy", "scikit-learn")]


def _json_safe(value: Any) -> Any:
    """Replace NaN and infinities with None, recursively, because JSON has no NaN."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
