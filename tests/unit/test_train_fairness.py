"""Per-group metrics and fairness gaps at the operating point."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from training.fairness import fairness_report, gap_violations, group_metrics, largest_gaps


def _two_groups() -> tuple[np.ndarray, np.ndarray, pd.Series]:
    # Group a: every positive flagged. Group b: half the positives missed.
    y_true = np.array([1, 1, 0, 0] * 50 + [1, 1, 0, 0] * 50)
    probability = np.array([0.9, 0.9, 0.1, 0.6] * 50 + [0.9, 0.2, 0.1, 0.1] * 50)
    groups = pd.Series(["a"] * 200 + ["b"] * 200)
    return y_true, probability, groups


def test_group_metrics_per_group_rates() -> None:
    y_true, probability, groups = _two_groups()
    table = group_metrics(y_true=y_true, probability=probability, threshold=0.5, sensitive_features=groups)
    assert table.loc["a", "fnr"] == pytest.approx(0.0)
    assert table.loc["b", "fnr"] == pytest.approx(0.5)
    assert table.loc["a", "fpr"] == pytest.approx(0.5)
    assert table.loc["b", "fpr"] == pytest.approx(0.0)
    assert table.loc["a", "count"] == 200
    assert table.loc["b", "positives"] == 100


def test_largest_gaps_are_max_minus_min() -> None:
    y_true, probability, groups = _two_groups()
    table = group_metrics(y_true=y_true, probability=probability, threshold=0.5, sensitive_features=groups)
    gaps = largest_gaps(table, min_group_size=10, min_group_positives=5)
    assert gaps["fnr"] == pytest.approx(0.5)
    assert gaps["fpr"] == pytest.approx(0.5)
    assert gaps["selection_rate"] == pytest.approx(0.75 - 0.25)


def test_small_groups_left_out_of_gaps() -> None:
    y_true, probability, groups = _two_groups()
    table = group_metrics(y_true=y_true, probability=probability, threshold=0.5, sensitive_features=groups)
    gaps = largest_gaps(table, min_group_size=201, min_group_positives=5)
    assert math.isnan(gaps["fnr"])


def test_missing_attribute_value_becomes_unknown_group() -> None:
    y_true, probability, groups = _two_groups()
    groups = groups.where(groups.index % 7 != 0, None)
    report = fairness_report(
        y_true=y_true,
        probability=probability,
        threshold=0.5,
        audit=pd.DataFrame({"race": groups}),
        attributes=["race", "sex"],
        min_group_size=10,
        min_group_positives=5,
    )
    assert "unknown" in report.by_group["race"].index
    assert "sex" not in report.gaps
    assert report.flat_gaps()["fairness_race_fnr_difference"] > 0


def test_gap_violations_name_metric_and_attribute() -> None:
    gaps = {"race": {"fnr": 0.15, "fpr": 0.05}, "sex": {"fnr": 0.02, "fpr": float("nan")}}
    violations = gap_violations(gaps, attributes=["race", "sex"], limits={"fnr": 0.10, "fpr": 0.10})
    assert violations == ["fnr difference across race groups is 0.150, over the limit 0.100"]


def test_gap_violations_empty_within_limits() -> None:
    gaps = {"race": {"fnr": 0.05, "fpr": 0.05}}
    assert gap_violations(gaps, attributes=["race", "ethnicity"], limits={"fnr": 0.10, "fpr": 0.10}) == []


def test_unknown_group_left_out_of_gaps() -> None:
    y_true, probability, groups = _two_groups()
    groups = groups.replace({"b": "unknown"})
    table = group_metrics(y_true=y_true, probability=probability, threshold=0.5, sensitive_features=groups)
    assert math.isnan(largest_gaps(table, min_group_size=10, min_group_positives=5)["fnr"])
    counted = largest_gaps(table, min_group_size=10, min_group_positives=5, exclude_unknown=False)
    assert counted["fnr"] == pytest.approx(0.5)
