"""Training against the real MLflow server: logging, registry aliases, gated promotion, round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from healthflow.settings import Settings
from tests.unit.train_synthetic import SPEC, synthetic_frame
from training.pipeline import TrainingResult, train

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning:mlflow.*"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:shap.*"),
]

SYNTHETIC_SPEC = dataclasses.replace(SPEC, split_by_time=False)
FAST = {
    "train_bootstrap_iterations": 20,
    "train_max_iterations": 150,
    "train_shap_sample_size": 200,
    "train_fairness_min_group_size": 20,
    "train_fairness_min_group_positives": 5,
    "train_fairness_gap_limits": {"fnr": 1.0},
}


def _settings(settings: Settings, **overrides: object) -> Settings:
    return settings.model_copy(update={**FAST, **overrides})


def _name(settings: Settings, topic: str) -> str:
    return f"train_test_{topic}_{settings.kafka_topic_prefix.strip('.')}"


def _train(settings: Settings, spec=SYNTHETIC_SPEC) -> TrainingResult:
    return train(synthetic_frame(), spec=spec, settings=settings)


def test_champion_round_trip_same_probabilities(settings: Settings) -> None:
    import mlflow.pyfunc

    from mlflow import MlflowClient
    from training.promotion import promote
    from training.pyfunc import model_inputs
    from training.tracking import log_training

    settings = _settings(settings)
    result = _train(settings)
    logged = log_training(result, settings=settings, model_name=_name(settings, "roundtrip"))
    decision = promote(settings, name=logged.registered_model_name, version=logged.version)
    assert decision.promoted, decision.summary()

    client = MlflowClient(settings.mlflow_tracking_uri)
    assert client.get_model_version_by_alias(logged.registered_model_name, "champion").version == logged.version
    assert client.get_model_version_by_alias(logged.registered_model_name, "challenger").version == logged.version

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{logged.registered_model_name}@champion")
    predicted = loaded.predict(model_inputs(loaded, result.split.test)).iloc[:, 0].to_numpy()
    assert np.allclose(predicted, result.test_probability, atol=1e-12)


def test_version_leads_to_run_metrics_and_artifacts(settings: Settings) -> None:
    from mlflow import MlflowClient
    from training.tracking import log_training

    settings = _settings(settings)
    result = _train(settings)
    logged = log_training(result, settings=settings, model_name=_name(settings, "lineage"))

    client = MlflowClient(settings.mlflow_tracking_uri)
    version = client.get_model_version(logged.registered_model_name, logged.version)
    assert version.run_id == logged.run_id
    assert float(version.tags["operating_point"]) == pytest.approx(result.thresholds.operating_point, abs=1e-6)
    assert version.tags["data.content_sha256"] == result.fingerprint["content_sha256"]

    run = client.get_run(logged.run_id)
    assert run.data.metrics["test_model_auroc"] == pytest.approx(result.evaluations["model"].metrics["auroc"])
    assert "test_logistic_regression_auroc_ci_low" in run.data.metrics
    assert run.data.tags["data.content_sha256"] == result.fingerprint["content_sha256"]
    assert run.data.tags["healthflow.git_commit"]
    artifacts = {
        item.path for folder in ("evaluation", "shap", "data") for item in client.list_artifacts(logged.run_id, folder)
    }
    assert "evaluation/calibration.png" in artifacts
    assert "shap/shap_beeswarm.png" in artifacts
    assert "shap/importance.csv" in artifacts
    assert "data/fingerprint.json" in artifacts


def test_worse_model_does_not_become_champion(settings: Settings) -> None:
    from mlflow import MlflowClient
    from training.promotion import promote
    from training.tracking import log_training

    settings = _settings(settings)
    name = _name(settings, "worse")
    good = log_training(_train(settings), settings=settings, model_name=name)
    assert promote(settings, name=name, version=good.version).promoted

    # Same rows and split, but only the noise feature: a weaker model on the same test set.
    weak_spec = dataclasses.replace(SYNTHETIC_SPEC, numeric_features=("lab_value",), categorical_features=("sex",))
    weak = log_training(_train(settings, weak_spec), settings=settings, model_name=name)
    decision = promote(settings, name=name, version=weak.version)

    assert not decision.promoted
    assert "performance gate failed" in decision.failures[0]
    client = MlflowClient(settings.mlflow_tracking_uri)
    assert client.get_model_version_by_alias(name, "champion").version == good.version
    assert client.get_model_version_by_alias(name, "challenger").version == weak.version
    assert client.get_model_version(name, weak.version).tags["promotion.decision"] == "rejected"


def test_unfair_model_does_not_become_champion(settings: Settings) -> None:
    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient
    from training.promotion import promote
    from training.tracking import log_training

    strict = _settings(settings, train_fairness_gap_limits={"fnr": 0.0, "fpr": 0.0})
    name = _name(strict, "unfair")
    logged = log_training(_train(strict), settings=strict, model_name=name)
    decision = promote(strict, name=name, version=logged.version)

    assert not decision.promoted
    assert any(failure.startswith("fairness gate failed") for failure in decision.failures)
    with pytest.raises(MlflowException):
        MlflowClient(strict.mlflow_tracking_uri).get_model_version_by_alias(name, "champion")
