"""One training run end to end: load the training set, train, log and register, optionally promote."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from healthflow.errors import InvalidInputError
from healthflow.settings import Settings

logger = logging.getLogger(__name__)


def load_training_frame(settings: Settings, *, feature_service: str, uci_zip: Path | None = None) -> Any:
    """Return the training frame: Feast point-in-time retrieval, or the UCI archive read directly."""
    if uci_zip is not None:
        if feature_service != "readmission_uci_v1":
            raise InvalidInputError(f"--uci-zip only applies to readmission_uci_v1, not {feature_service}")
        from ingestion.uci.adapter import load_uci

        if settings.pseudonym_key is None:
            raise InvalidInputError("HEALTHFLOW_PSEUDONYM_KEY is not set; the UCI patient ids cannot be pseudonymised")
        return load_uci(uci_zip, settings.pseudonym_key.get_secret_value().encode("utf-8"))

    from ingestion.featurizer.training_set import get_training_frame

    return get_training_frame(settings, feature_service)


def run_training(
    settings: Settings,
    *,
    feature_service: str,
    uci_zip: Path | None = None,
    model_name: str | None = None,
    promote_after: bool = False,
) -> dict[str, Any]:
    """Train, log and register one model; return a JSON-ready summary (metrics, version, timings)."""
    from training.pipeline import train
    from training.specs import spec_for
    from training.tracking import log_training

    spec = spec_for(feature_service)
    started = time.perf_counter()
    frame = load_training_frame(settings, feature_service=feature_service, uci_zip=uci_zip)
    load_seconds = time.perf_counter() - started

    result = train(frame, spec=spec, settings=settings)
    log_started = time.perf_counter()
    logged = log_training(result, settings=settings, model_name=model_name)
    result.timings["log_seconds"] = time.perf_counter() - log_started
    result.timings["load_seconds"] = load_seconds

    summary: dict[str, Any] = {
        "feature_service": feature_service,
        "registered_model": logged.registered_model_name,
        "version": logged.version,
        "run_id": logged.run_id,
        "model_uri": logged.model_uri,
        "validation_auroc": result.validation_auroc,
        "test_metrics": {name: item.metrics for name, item in result.evaluations.items()},
        "test_ci95": {name: item.intervals for name, item in result.evaluations.items()},
        "confusion_at_operating_point": result.evaluations["model"].confusion,
        "thresholds": result.thresholds.as_dict(),
        "calibration": {"method": result.calibrator.method, "validation_brier": result.calibration.validation_brier},
        "fairness_gaps": result.fairness.gaps,
        "fingerprint": result.fingerprint,
        "timings_seconds": result.timings,
    }
    if promote_after:
        from training.promotion import promote

        decision = promote(settings, name=logged.registered_model_name, version=logged.version)
        summary["promotion"] = {"promoted": decision.promoted, "summary": decision.summary()}
    return summary
