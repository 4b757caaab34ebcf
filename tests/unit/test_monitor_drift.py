"""Drift and data quality of a window against its reference, on generated stays."""

import numpy as np
import pandas as pd
import pytest

from healthflow.errors import InvalidInputError
from monitoring.drift import drift_report, split_column_types
from monitoring.quality import quality_checks

# Evidently's first import and each report take seconds on two cores.
pytestmark = pytest.mark.slow

FEATURES = ["age", "length_of_stay", "charlson_index", "emergency_admission", "sex"]


def make_stays(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(62, 12, rows).round(),
            "length_of_stay": rng.gamma(2.0, 2.5, rows).round(1),
            "charlson_index": rng.poisson(2.0, rows),
            "emergency_admission": rng.integers(0, 2, rows),
            "sex": rng.choice(["female", "male"], rows),
            "label": rng.integers(0, 2, rows),
            "probability": rng.random(rows),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return make_stays(1500, seed=1)


def test_drift_same_frame_finds_none(reference):
    result = drift_report(reference, reference.copy(), columns=FEATURES)

    assert result.drifted_columns == []
    assert result.drift_share == 0.0
    assert [item.column for item in result.columns] == FEATURES


def test_drift_finds_exactly_shifted_columns(reference):
    current = make_stays(800, seed=2)
    current["age"] = current["age"] + 12
    current["length_of_stay"] = current["length_of_stay"] * 1.8

    result = drift_report(reference, current, columns=FEATURES)

    assert sorted(result.drifted_columns) == ["age", "length_of_stay"]
    assert result.drift_share == pytest.approx(2 / 5)


def test_drift_adds_classification_when_labels_known(reference):
    current = make_stays(400, seed=3)

    with_labels = drift_report(reference, current, columns=FEATURES, target="label", score="probability")
    current["label"] = current["label"].astype(float)
    current.loc[0, "label"] = np.nan
    without_labels = drift_report(reference, current, columns=FEATURES, target="label", score="probability")

    assert with_labels.labels_known is True
    assert without_labels.labels_known is False
    metric_types = {metric["config"]["type"] for metric in with_labels.classification_snapshot.dict()["metrics"]}
    assert "evidently:metric_v2:RocAuc" in metric_types
    assert without_labels.classification_snapshot is None


def test_drift_rejects_missing_column(reference):
    current = reference.drop(columns=["age"])

    with pytest.raises(InvalidInputError, match="current frame lacks columns"):
        drift_report(reference, current, columns=FEATURES)


def test_drift_rejects_empty_window(reference):
    with pytest.raises(InvalidInputError, match="no rows"):
        drift_report(reference, reference.iloc[0:0], columns=FEATURES)


def test_column_types_treat_flags_as_categories(reference):
    numerical, categorical = split_column_types(reference, FEATURES)

    assert numerical == ["age", "length_of_stay", "charlson_index"]
    assert categorical == ["emergency_admission", "sex"]


def test_quality_flags_missing_share_rise(reference):
    current = reference.copy()
    current.loc[current.index[:600], "charlson_index"] = np.nan

    checks = quality_checks(reference, current, columns=FEATURES, missing_share_limit=0.2)
    failed = [(check.column, check.check) for check in checks if not check.passed]

    assert failed == [("charlson_index", "missing_share")]


def test_quality_flags_absent_column(reference):
    checks = quality_checks(reference, reference.drop(columns=["sex"]), columns=FEATURES, missing_share_limit=0.2)
    failed = [(check.column, check.check) for check in checks if not check.passed]

    assert failed == [("sex", "column_present")]
