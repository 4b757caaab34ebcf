"""Gated promotion with registry aliases: ``challenger`` for every promoted version, ``champion`` through gates.

Gates, in order:

1. performance: the challenger's AUROC on its own test set is higher than the current champion's AUROC on
   that same test set (the champion's pyfunc is loaded and scored; nothing is retrained). With no champion
   yet, this gate passes.
   NOTE: the comparison is fair only when the champion never trained on those test patients, which holds when
   both versions were split with the same seed and rule from the same patients. A champion trained under
   another split may have seen some of them, which favours the champion.
2. fairness: every gated gap of the challenger (``train_fairness_gate_attributes`` x
   ``train_fairness_gap_limits``, from its run's metrics) is within its limit.

Aliases are used because registry stages are deprecated since MLflow 2.9.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from healthflow.errors import InvalidInputError, NotFoundError
from healthflow.settings import Settings
from training.fairness import gap_violations

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class GateDecision:
    """The outcome of the gates; ``failures`` names each failed gate in a sentence."""

    promoted: bool
    challenger_auroc: float
    champion_auroc: float | None
    champion_version: str | None
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.promoted:
            against = (
                f"beats champion version {self.champion_version} ({self.champion_auroc:.4f})"
                if self.champion_version
                else "no champion before"
            )
            return f"promoted to champion: AUROC {self.challenger_auroc:.4f}, {against}, fairness gaps within limits"
        return "not promoted: " + "; ".join(self.failures)


def decide(
    *,
    challenger_auroc: float,
    champion_auroc: float | None,
    champion_version: str | None,
    fairness_gaps: dict[str, dict[str, float]],
    gate_attributes: list[str],
    gap_limits: dict[str, float],
) -> GateDecision:
    """Apply the performance gate then the fairness gate; pure, so the rules are testable without a registry."""
    failures = []
    if champion_auroc is not None and not challenger_auroc > champion_auroc:
        failures.append(
            f"performance gate failed: AUROC {challenger_auroc:.4f} does not beat champion version "
            f"{champion_version} with {champion_auroc:.4f} on the same test set"
        )
    violations = gap_violations(fairness_gaps, attributes=gate_attributes, limits=gap_limits)
    if violations:
        failures.append("fairness gate failed: " + "; ".join(violations))
    return GateDecision(
        promoted=not failures,
        challenger_auroc=challenger_auroc,
        champion_auroc=champion_auroc,
        champion_version=champion_version,
        failures=failures,
    )


def fairness_gaps_from_metrics(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """Rebuild ``{attribute: {metric: gap}}`` from run metrics named ``fairness_<attribute>_<metric>_difference``."""
    from training.fairness import GAP_METRICS

    gaps: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if not (key.startswith("fairness_") and key.endswith("_difference")):
            continue
        body = key[len("fairness_") : -len("_difference")]
        for metric in GAP_METRICS:
            if body.endswith("_" + metric):
                gaps.setdefault(body[: -len(metric) - 1], {})[metric] = float(value)
                break
    return gaps


def promote(settings: Settings, *, name: str, version: str) -> GateDecision:
    """Give ``version`` the challenger alias, run the gates and move champion to it when they pass.

    Tags the version with the decision (``promotion.decision``, ``promotion.failures``). Raises NotFoundError
    when the version does not exist.
    """
    from mlflow.exceptions import MlflowException

    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient()
    try:
        model_version = client.get_model_version(name, version)
    except MlflowException as error:
        raise NotFoundError(f"registered model {name} has no version {version}: {error.message}") from error
    client.set_registered_model_alias(name, CHALLENGER, version)

    champion = _current_champion(client, name)
    run_id = model_version.run_id
    if run_id is None:
        raise NotFoundError(
            f"registered model {name} version {version} has no run; it cannot be evaluated for promotion"
        )
    features, y_test = load_test_set(client, run_id=run_id)
    challenger_auroc = _auroc_of(f"models:/{name}/{version}", features, y_test)
    champion_auroc = None
    if champion is not None and champion.version != version:
        champion_auroc = _auroc_of(f"models:/{name}@{CHAMPION}", features, y_test)

    run_metrics = client.get_run(run_id).data.metrics
    decision = decide(
        challenger_auroc=challenger_auroc,
        champion_auroc=champion_auroc,
        champion_version=None if champion is None or champion.version == version else champion.version,
        fairness_gaps=fairness_gaps_from_metrics(run_metrics),
        gate_attributes=settings.train_fairness_gate_attributes,
        gap_limits=settings.train_fairness_gap_limits,
    )
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promotion.decision", "champion" if decision.promoted else "rejected")
    client.set_model_version_tag(name, version, "promotion.failures", " | ".join(decision.failures) or "none")
    if champion_auroc is not None:
        client.set_model_version_tag(name, version, "promotion.champion_auroc_same_test", f"{champion_auroc:.6f}")
    logger.info("promotion of %s version %s: %s", name, version, decision.summary())
    return decision


def _current_champion(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        # MLflow raises the same exception type for "no such alias" and other lookup errors; a registered
        # model without a champion is the normal first-promotion case.
        logger.info("registered model %s has no champion yet", name)
        return None


def load_test_set(client: Any, *, run_id: str) -> tuple[Any, np.ndarray]:
    """Download a run's test set artifact; return (feature frame, 0/1 labels)."""
    import pandas as pd

    from training.tracking import TEST_SET_ARTIFACT

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, TEST_SET_ARTIFACT, tmp)
        except Exception as error:  # noqa: BLE001 - the artifact store raises many types; all mean "not there"
            raise InvalidInputError(
                f"run {run_id} has no {TEST_SET_ARTIFACT}; retrain with `healthflow train` to get a comparable version"
            ) from error
        frame = pd.read_parquet(Path(path))
    label = frame.columns[-1]
    return frame.drop(columns=[label]), frame[label].to_numpy().astype("int64")


def _auroc_of(model_uri: str, features: Any, y_true: np.ndarray) -> float:
    import mlflow.pyfunc
    from sklearn.metrics import roc_auc_score

    from training.pyfunc import model_inputs

    model = mlflow.pyfunc.load_model(model_uri)
    probability = np.asarray(model.predict(model_inputs(model, features))).reshape(len(features), -1)[:, 0]
    auroc = float(roc_auc_score(y_true, probability))
    if math.isnan(auroc):
        raise InvalidInputError(f"AUROC of {model_uri} is undefined on the test set")
    return auroc
