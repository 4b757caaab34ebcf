"""Test-side metrics: discrimination, calibration, the confusion matrix at the operating point, bootstrap CIs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Probabilities are clipped to [EPSILON, 1 - EPSILON] before logs and logits, so a 0 or 1 stays finite.
EPSILON = 1e-6
BOOTSTRAP_METRICS = ("auroc", "auprc", "brier", "log_loss")


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one scorer on one side; ``intervals`` maps a metric to its bootstrap 95% (low, high)."""

    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    confusion: dict[str, int] = field(default_factory=dict)

    def flat(self, prefix: str) -> dict[str, float]:
        """Return ``{prefix}_{metric}`` plus ``_ci_low``/``_ci_high`` entries, for MLflow metrics."""
        values = {f"{prefix}_{name}": value for name, value in self.metrics.items()}
        for name, (low, high) in self.intervals.items():
            values[f"{prefix}_{name}_ci_low"] = low
            values[f"{prefix}_{name}_ci_high"] = high
        values.update({f"{prefix}_{name}": float(count) for name, count in self.confusion.items()})
        return values


def point_metrics(*, y_true: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """Return AUROC, AUPRC, Brier score and log loss (natural log) of probabilities against 0/1 labels."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    clipped = np.clip(probability, EPSILON, 1 - EPSILON)
    return {
        "auroc": float(roc_auc_score(y_true, probability)),
        "auprc": float(average_precision_score(y_true, probability)),
        "brier": float(np.mean((probability - y_true) ** 2)),
        "log_loss": float(-np.mean(y_true * np.log(clipped) + (1 - y_true) * np.log(1 - clipped))),
    }


def calibration_slope_intercept(*, y_true: np.ndarray, probability: np.ndarray) -> tuple[float, float]:
    """Return the calibration slope and the calibration-in-the-large intercept.

    The slope is the coefficient of logit(p) in a logistic regression of the label on logit(p); 1 is ideal.
    The intercept is fitted with logit(p) as an offset (slope fixed at 1); 0 is ideal.
    """
    from sklearn.linear_model import LogisticRegression

    logit = _logit(probability)
    slope = float(LogisticRegression(C=1e6, max_iter=1000).fit(logit.reshape(-1, 1), y_true).coef_[0, 0])

    # One-parameter Newton iterations for the intercept with a fixed offset.
    intercept = 0.0
    for _ in range(50):
        fitted = 1.0 / (1.0 + np.exp(-(logit + intercept)))
        gradient = float(np.sum(y_true - fitted))
        curvature = float(np.sum(fitted * (1 - fitted)))
        step = gradient / max(curvature, 1e-12)
        intercept += step
        if abs(step) < 1e-10:
            break
    return slope, intercept


def confusion_at(*, y_true: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, int]:
    """Return tn, fp, fn, tp with a stay flagged when its probability is at least ``threshold``."""
    flagged = probability >= threshold
    positive = y_true == 1
    return {
        "tn": int(np.sum(~flagged & ~positive)),
        "fp": int(np.sum(flagged & ~positive)),
        "fn": int(np.sum(~flagged & positive)),
        "tp": int(np.sum(flagged & positive)),
    }


def bootstrap_intervals(
    *, y_true: np.ndarray, probability: np.ndarray, iterations: int, seed: int
) -> dict[str, tuple[float, float]]:
    """Return percentile 95% intervals of each bootstrap metric over ``iterations`` row resamples.

    A resample is drawn as per-row counts, and the metrics are computed from the counts on rows sorted once by
    score, which gives the same values as recomputing on the resampled rows but without a sort per resample.
    A resample that draws one class only is skipped, since AUROC is undefined for it.
    """
    y_true = np.asarray(y_true, dtype="float64")
    probability = np.asarray(probability, dtype="float64")
    scores, group = np.unique(probability, return_inverse=True)
    clipped = np.clip(probability, EPSILON, 1 - EPSILON)
    row_log_loss = -(y_true * np.log(clipped) + (1 - y_true) * np.log(1 - clipped))
    row_brier = (probability - y_true) ** 2

    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in BOOTSTRAP_METRICS}
    size = len(y_true)
    for _ in range(iterations):
        counts = np.bincount(rng.integers(0, size, size), minlength=size).astype("float64")
        positives = np.bincount(group, weights=counts * y_true, minlength=len(scores))
        negatives = np.bincount(group, weights=counts * (1 - y_true), minlength=len(scores))
        total_positive, total_negative = positives.sum(), negatives.sum()
        if total_positive == 0 or total_negative == 0:
            continue
        draws["auroc"].append(_weighted_auroc(positives, negatives))
        draws["auprc"].append(_weighted_average_precision(positives, negatives))
        draws["brier"].append(float(np.dot(counts, row_brier) / size))
        draws["log_loss"].append(float(np.dot(counts, row_log_loss) / size))
    return {
        name: (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))
        for name, values in draws.items()
        if values
    }


def _weighted_auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """AUROC from positive and negative counts per distinct score, scores ascending; ties count one half."""
    negatives_below = np.cumsum(negatives) - negatives
    pairs = np.dot(positives, negatives_below + 0.5 * negatives)
    return float(pairs / (positives.sum() * negatives.sum()))


def _weighted_average_precision(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Average precision (sklearn's step definition) from counts per distinct score, scores ascending."""
    positives, negatives = positives[::-1], negatives[::-1]
    true_positives = np.cumsum(positives)
    flagged = true_positives + np.cumsum(negatives)
    precision = np.divide(true_positives, flagged, out=np.zeros_like(flagged), where=flagged > 0)
    return float(np.dot(positives, precision) / positives.sum())


def evaluate_scorer(
    *, y_true: np.ndarray, probability: np.ndarray, threshold: float | None, iterations: int, seed: int
) -> Evaluation:
    """Evaluate one scorer: point metrics, calibration slope/intercept, bootstrap CIs and, given a threshold,
    the confusion matrix with sensitivity, specificity and PPV."""
    y_true = np.asarray(y_true, dtype="int64")
    probability = np.asarray(probability, dtype="float64")
    metrics = point_metrics(y_true=y_true, probability=probability)
    slope, intercept = calibration_slope_intercept(y_true=y_true, probability=probability)
    metrics.update(calibration_slope=slope, calibration_intercept=intercept, prevalence=float(y_true.mean()))

    confusion: dict[str, int] = {}
    if threshold is not None:
        confusion = confusion_at(y_true=y_true, probability=probability, threshold=threshold)
        metrics["sensitivity"] = confusion["tp"] / max(confusion["tp"] + confusion["fn"], 1)
        metrics["specificity"] = confusion["tn"] / max(confusion["tn"] + confusion["fp"], 1)
        metrics["ppv"] = confusion["tp"] / max(confusion["tp"] + confusion["fp"], 1)
    intervals = bootstrap_intervals(y_true=y_true, probability=probability, iterations=iterations, seed=seed)
    return Evaluation(metrics=metrics, intervals=intervals, confusion=confusion)


def _logit(probability: np.ndarray) -> np.ndarray:
    clipped = np.clip(probability, EPSILON, 1 - EPSILON)
    return np.log(clipped / (1 - clipped))


def summarize(evaluations: dict[str, Evaluation]) -> dict[str, Any]:
    """Return a JSON-ready table of every scorer's metrics and intervals."""
    return {
        name: {"metrics": item.metrics, "ci95": item.intervals, "confusion": item.confusion}
        for name, item in evaluations.items()
    }
