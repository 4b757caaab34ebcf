"""The training stage on a synthetic frame (mechanics only; its metrics are never reported)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from healthflow.errors import InvalidInputError
from healthflow.settings import load_settings
from tests.unit.train_synthetic import SPEC, synthetic_frame
from training.model import raw_margin
from training.pipeline import TrainingResult, train

# MLflow warns about its own type hints when mlflow.pyfunc is first imported; that is not ours to fix.
# shap 0.51 calls matplotlib colormap methods (set_bad, set_over) marked for deprecation, at import time.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning:mlflow.*"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:shap.*"),
]

FAST = {"train_bootstrap_iterations": 20, "train_max_iterations": 150, "train_shap_sample_size": 200}


@pytest.fixture(scope="module")
def result() -> TrainingResult:
    spec = dataclasses.replace(SPEC, split_by_time=False)
    return train(synthetic_frame(), spec=spec, settings=load_settings(**FAST))


def test_race_is_not_a_model_input(result: TrainingResult) -> None:
    assert "race" not in result.types.names
    assert "admission_kind" in result.types.names


def test_race_is_an_input_when_allowed() -> None:
    spec = dataclasses.replace(SPEC, split_by_time=False)
    allowed = train(
        synthetic_frame(1200),
        spec=spec,
        settings=load_settings(train_use_race_as_feature=True, **FAST),
        explain_model=False,
    )
    assert "race" in allowed.types.names


def test_shap_values_add_up_to_raw_margin(result: TrainingResult) -> None:
    explanation = result.explanation
    assert explanation is not None
    assert explanation.max_additivity_error < 1e-6
    margin = explanation.expected_value + explanation.shap_values.sum(axis=1)
    assert np.allclose(margin, raw_margin(result.model, explanation.sample, result.types), atol=1e-6)
    assert list(explanation.importance["feature"]) != []


def test_every_scorer_evaluated(result: TrainingResult) -> None:
    assert set(result.evaluations) == {"model", "logistic_regression", "lace"}
    model_metrics = result.evaluations["model"].metrics
    assert 0.5 < model_metrics["auroc"] <= 1.0
    low, high = result.evaluations["model"].intervals["auroc"]
    assert low <= model_metrics["auroc"] <= high
    assert sum(result.evaluations["model"].confusion.values()) == len(result.split.test)


def test_fairness_reported_per_attribute(result: TrainingResult) -> None:
    assert set(result.fairness.by_group) == {"sex", "race", "ethnicity", "age_band"}
    assert "female" in result.fairness.by_group["sex"].index


def test_fingerprint_describes_training_rows(result: TrainingResult) -> None:
    fingerprint = result.fingerprint
    assert fingerprint["row_count"] == len(result.split.train) + len(result.split.validation)
    assert len(fingerprint["content_sha256"]) == 64
    assert fingerprint["feature_service"] == "synthetic_test_v1"


def test_pyfunc_round_trip_same_probabilities(result: TrainingResult, tmp_path) -> None:
    import mlflow.pyfunc

    from training.pyfunc import PROBABILITY_COLUMN, ReadmissionModel, write_model_files
    from training.tracking import model_metadata

    artifacts = write_model_files(
        tmp_path / "files",
        model=result.model,
        types=result.types,
        calibrator=result.calibrator,
        meta=model_metadata(result),
    )
    mlflow.pyfunc.save_model(tmp_path / "model", python_model=ReadmissionModel(), artifacts=artifacts)
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    predicted = loaded.predict(result.split.test)[PROBABILITY_COLUMN].to_numpy()
    assert np.allclose(predicted, result.test_probability, atol=1e-12)

    meta = json.loads((tmp_path / "files" / "model_meta.json").read_text())
    assert meta["thresholds"]["operating_point"] == pytest.approx(result.thresholds.operating_point)
    assert meta["shap_expected_value"] == pytest.approx(result.expected_value)
    assert meta["feature_types"]["admission_kind"] == "categorical"


def test_missing_feature_column_rejected() -> None:
    frame = synthetic_frame(400).drop(columns=["lab_value"])
    with pytest.raises(InvalidInputError, match="lab_value"):
        train(frame, spec=SPEC, settings=load_settings(**FAST))


def test_non_binary_label_rejected() -> None:
    frame = synthetic_frame(1200)
    frame.loc[frame.index[:5], "readmitted_30d"] = 2
    spec = dataclasses.replace(SPEC, split_by_time=False)
    with pytest.raises(InvalidInputError, match="0 or 1"):
        train(frame, spec=spec, settings=load_settings(**FAST), explain_model=False)
