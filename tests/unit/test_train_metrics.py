"""Test-side metrics, calibration measures and operating-point thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from healthflow.errors import InvalidInputError
from training.calibration import Calibrator, choose_calibrator
from training.evaluation import (
    bootstrap_intervals,
    calibration_slope_intercept,
    confusion_at,
    evaluate_scorer,
    point_metrics,
)
from training.thresholds import choose_operating_point, derive_thresholds


def _calibrated_sample(size: int = 20000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probability = 1 / (1 + np.exp(-rng.normal(-2, 1, size)))
    return (rng.random(size) < probability).astype(int), probability


def test_point_metrics_match_sklearn() -> None:
    y_true, probability = _calibrated_sample(2000)
    metrics = point_metrics(y_true=y_true, probability=probability)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y_true, probability))
    assert metrics["auprc"] == pytest.approx(average_precision_score(y_true, probability))
    assert metrics["log_loss"] == pytest.approx(log_loss(y_true, probability), rel=1e-6)
    assert metrics["brier"] == pytest.approx(np.mean((probability - y_true) ** 2))


def test_calibration_slope_near_one_when_calibrated() -> None:
    y_true, probability = _calibrated_sample()
    slope, intercept = calibration_slope_intercept(y_true=y_true, probability=probability)
    assert slope == pytest.approx(1.0, abs=0.08)
    assert intercept == pytest.approx(0.0, abs=0.06)


def test_calibration_slope_below_one_when_overconfident() -> None:
    y_true, probability = _calibrated_sample()
    logit = np.log(probability / (1 - probability))
    overconfident = 1 / (1 + np.exp(-(2 * logit + 2)))
    slope, _ = calibration_slope_intercept(y_true=y_true, probability=overconfident)
    assert slope == pytest.approx(0.5, abs=0.06)


def test_calibration_intercept_shows_overprediction() -> None:
    y_true, probability = _calibrated_sample()
    logit = np.log(probability / (1 - probability))
    too_high = 1 / (1 + np.exp(-(logit + 1)))
    _, intercept = calibration_slope_intercept(y_true=y_true, probability=too_high)
    assert intercept == pytest.approx(-1.0, abs=0.08)


def test_confusion_flags_at_or_above_threshold() -> None:
    confusion = confusion_at(
        y_true=np.array([0, 0, 1, 1, 1]), probability=np.array([0.1, 0.5, 0.5, 0.2, 0.9]), threshold=0.5
    )
    assert confusion == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}


def test_bootstrap_interval_contains_point_estimate() -> None:
    y_true, probability = _calibrated_sample(3000)
    intervals = bootstrap_intervals(y_true=y_true, probability=probability, iterations=100, seed=4)
    point = point_metrics(y_true=y_true, probability=probability)
    for name in ("auroc", "auprc", "brier", "log_loss"):
        low, high = intervals[name]
        assert low < point[name] < high
        assert high - low < 0.2


def test_evaluate_scorer_reports_confusion_rates() -> None:
    y_true, probability = _calibrated_sample(3000)
    evaluation = evaluate_scorer(y_true=y_true, probability=probability, threshold=0.2, iterations=20, seed=1)
    confusion = evaluation.confusion
    assert sum(confusion.values()) == 3000
    assert evaluation.metrics["sensitivity"] == pytest.approx(confusion["tp"] / (confusion["tp"] + confusion["fn"]))
    assert "test_model_auroc_ci_low" in evaluation.flat("test_model")


def test_youden_operating_point_separates_classes() -> None:
    y_true = np.array([0] * 50 + [1] * 50)
    probability = np.concatenate([np.linspace(0.0, 0.4, 50), np.linspace(0.6, 1.0, 50)])
    assert choose_operating_point(
        y_true=y_true, probability=probability, rule="youden", target_sensitivity=0.5
    ) == pytest.approx(0.6)


def test_target_sensitivity_rule_reaches_target() -> None:
    y_true, probability = _calibrated_sample(5000)
    threshold = choose_operating_point(
        y_true=y_true, probability=probability, rule="target_sensitivity", target_sensitivity=0.7
    )
    assert np.mean(probability[y_true == 1] >= threshold) >= 0.7


def test_unknown_operating_point_rule_is_rejected() -> None:
    y_true, probability = _calibrated_sample(500)
    with pytest.raises(InvalidInputError, match="unknown operating point rule"):
        choose_operating_point(y_true=y_true, probability=probability, rule="magic", target_sensitivity=0.5)


def test_risk_levels_follow_validation_quantile() -> None:
    y_true, probability = _calibrated_sample(5000)
    thresholds = derive_thresholds(
        y_true=y_true, probability=probability, rule="youden", target_sensitivity=0.6, high_risk_fraction=0.1
    )
    assert thresholds.medium == thresholds.operating_point
    assert thresholds.high >= thresholds.operating_point
    assert np.mean(probability >= thresholds.high) <= 0.1 + 1e-9 or thresholds.high == thresholds.operating_point
    assert thresholds.risk_level(thresholds.high) == "high"
    assert thresholds.risk_level(thresholds.medium) in {"medium", "high"}
    assert thresholds.risk_level(0.0) == "low"


def test_calibrator_chosen_when_it_lowers_brier() -> None:
    y_true, probability = _calibrated_sample(6000)
    margin = 3 * np.log(probability / (1 - probability)) + 2  # badly scaled raw margin
    choice = choose_calibrator(margin=margin, y_true=y_true, groups=np.arange(len(y_true)) // 2, folds=5, seed=1)
    assert choice.calibrator.method in {"platt", "isotonic"}
    assert choice.validation_brier[choice.calibrator.method] < choice.validation_brier["none"]
    assert choice.calibrator.slope == pytest.approx(1 / 3, abs=0.1) or choice.calibrator.method == "isotonic"


def test_calibrator_round_trips_through_dict() -> None:
    calibrator = Calibrator("isotonic", knots_x=[-2.0, 0.0, 2.0], knots_y=[0.1, 0.3, 0.8])
    restored = Calibrator.from_dict(calibrator.as_dict())
    margin = np.array([-3.0, -1.0, 1.0, 5.0])
    assert np.allclose(restored.probability(margin), [0.1, 0.2, 0.55, 0.8])


def test_calibrator_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown calibration method"):
        Calibrator.from_dict({"method": "magic"})


def test_counted_resample_matches_sklearn() -> None:
    from training.evaluation import _weighted_auroc, _weighted_average_precision

    rng = np.random.default_rng(5)
    y_true = (rng.random(500) < 0.3).astype(int)
    probability = np.round(rng.random(500), 2)  # rounding makes ties
    rows = rng.integers(0, 500, 500)
    scores, group = np.unique(probability, return_inverse=True)
    counts = np.bincount(rows, minlength=500)
    positives = np.bincount(group, weights=counts * y_true, minlength=len(scores))
    negatives = np.bincount(group, weights=counts * (1 - y_true), minlength=len(scores))
    assert _weighted_auroc(positives, negatives) == pytest.approx(roc_auc_score(y_true[rows], probability[rows]))
    assert _weighted_average_precision(positives, negatives) == pytest.approx(
        average_precision_score(y_true[rows], probability[rows])
    )
