"""Fairness audit of a prediction window by audit attribute (sex, race, ethnicity, age band), with fairlearn.

For every attribute, each group gets its row count and metrics. A group smaller than ``min_group_size`` is
reported as too small, with no metrics, and is left out of the gaps. Gaps are fairlearn's between-group
difference (largest minus smallest group value) and ratio (smallest over largest) over the groups large
enough. Metrics that need labels (TPR, FPR, FNR, AUROC, calibration) are computed only when ``y_true`` is
given; selection rate and mean score need none.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from healthflow.errors import InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

MISSING_GROUP = "unknown"

# Gaps of these metrics are compared with the fairness gap limit.
GAP_LIMITED_METRICS = ("selection_rate", "tpr", "fpr", "fnr")


@dataclass(frozen=True)
class GroupMetrics:
    """One group of one attribute: its size and metrics (None when too small or undefined, e.g. no positives)."""

    attribute: str
    group: str
    count: int
    too_small: bool
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class Gap:
    """Between-group difference (max - min) and ratio (min / max) of one metric over the large-enough groups."""

    attribute: str
    metric: str
    difference: float | None
    ratio: float | None
    groups_compared: int


@dataclass
class FairnessResult:
    """Per-group metrics and gaps for every audit attribute."""

    groups: list[GroupMetrics]
    gaps: list[Gap]
    labels_known: bool
    min_group_size: int
    metrics: tuple[str, ...] = field(default=())

    def gap(self, attribute: str, metric: str) -> Gap:
        """Return the gap of ``metric`` for ``attribute``; raise KeyError when it was not computed."""
        for item in self.gaps:
            if item.attribute == attribute and item.metric == metric:
                return item
        raise KeyError(f"no gap for {attribute}/{metric}")

    def summary(self) -> dict[str, Any]:
        """Return a JSON-ready summary (group aggregates only)."""
        return {
            "labels_known": self.labels_known,
            "min_group_size": self.min_group_size,
            "groups": [vars(item) for item in self.groups],
            "gaps": [vars(item) for item in self.gaps],
        }


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def true_positive_rate(y_true: Any, y_pred: Any) -> float:
    positives = y_true == 1
    return _rate(int((y_pred[positives] == 1).sum()), int(positives.sum()))


def false_positive_rate(y_true: Any, y_pred: Any) -> float:
    negatives = y_true == 0
    return _rate(int((y_pred[negatives] == 1).sum()), int(negatives.sum()))


def false_negative_rate(y_true: Any, y_pred: Any) -> float:
    positives = y_true == 1
    return _rate(int((y_pred[positives] == 0).sum()), int(positives.sum()))


def area_under_roc(y_true: Any, y_score: Any) -> float:
    """AUROC, or NaN when the group holds only one class (AUROC is undefined there)."""
    from sklearn.metrics import roc_auc_score

    if len(set(y_true.tolist())) < 2:
        return math.nan
    return float(roc_auc_score(y_true, y_score))


def mean_score(y_true: Any, y_score: Any) -> float:
    return float(y_score.mean())


def observed_rate(y_true: Any, y_score: Any) -> float:
    return float(y_true.mean())


def calibration_gap(y_true: Any, y_score: Any) -> float:
    """Mean predicted risk minus observed readmission rate (calibration in the large); positive: over-prediction."""
    return float(y_score.mean() - y_true.mean())


def brier(y_true: Any, y_score: Any) -> float:
    return float(((y_score - y_true) ** 2).mean())


def decision_metric_functions(labels_known: bool) -> dict[str, Callable[..., float]]:
    from fairlearn.metrics import selection_rate

    functions: dict[str, Callable[..., float]] = {"selection_rate": selection_rate}
    if labels_known:
        functions |= {"tpr": true_positive_rate, "fpr": false_positive_rate, "fnr": false_negative_rate}
    return functions


def score_metric_functions(labels_known: bool) -> dict[str, Callable[..., float]]:
    functions: dict[str, Callable[..., float]] = {"mean_score": mean_score}
    if labels_known:
        functions |= {
            "auroc": area_under_roc,
            "observed_rate": observed_rate,
            "calibration_gap": calibration_gap,
            "brier": brier,
        }
    return functions


def check_audit_frame(frame: pd.DataFrame, needed: Sequence[str]) -> None:
    """Raise InvalidInputError when the frame is empty or lacks a needed column."""
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise InvalidInputError(f"the fairness audit frame lacks columns {missing}")
    if frame.empty:
        raise InvalidInputError("the fairness audit frame has no rows")


def _clean(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def fairness_audit(
    frame: pd.DataFrame,
    *,
    y_true: str | None,
    y_pred: str,
    y_score: str,
    sensitive_features: Sequence[str],
    min_group_size: int,
) -> FairnessResult:
    """Audit ``frame`` by each attribute in ``sensitive_features``, one attribute at a time.

    ``y_true`` (0/1 labels; None when labels are not known yet), ``y_pred`` (0/1 decisions) and ``y_score``
    (probability, 0..1) name columns of ``frame``. Missing attribute values form the group ``unknown``.
    """
    if min_group_size < 1:
        raise InvalidInputError(f"min_group_size must be at least 1, not {min_group_size}")
    needed = [y_pred, y_score, *sensitive_features, *([y_true] if y_true else [])]
    check_audit_frame(frame, needed)
    labels_known = y_true is not None
    truth = frame[y_true].astype(int) if labels_known else frame[y_pred].astype(int)
    if not set(truth.unique()) <= {0, 1} or not set(frame[y_pred].astype(int).unique()) <= {0, 1}:
        raise InvalidInputError("labels and decisions must be 0 or 1")
    scores = frame[y_score].astype(float)
    if scores.isna().any() or not scores.between(0, 1).all():
        raise InvalidInputError("scores must be probabilities between 0 and 1 with no missing value")

    groups: list[GroupMetrics] = []
    gaps: list[Gap] = []
    for attribute in sensitive_features:
        attribute_groups, attribute_gaps = audit_attribute(
            frame,
            attribute=attribute,
            truth=truth,
            decisions=frame[y_pred].astype(int),
            scores=scores,
            labels_known=labels_known,
            min_group_size=min_group_size,
        )
        groups += attribute_groups
        gaps += attribute_gaps

    metrics = tuple(decision_metric_functions(labels_known)) + tuple(score_metric_functions(labels_known))
    return FairnessResult(
        groups=groups, gaps=gaps, labels_known=labels_known, min_group_size=min_group_size, metrics=metrics
    )


def audit_attribute(
    frame: pd.DataFrame,
    *,
    attribute: str,
    truth: pd.Series,
    decisions: pd.Series,
    scores: pd.Series,
    labels_known: bool,
    min_group_size: int,
) -> tuple[list[GroupMetrics], list[Gap]]:
    """Return the groups and gaps of one attribute; small groups are listed but not computed."""
    from fairlearn.metrics import MetricFrame

    values = frame[attribute].astype("string").fillna(MISSING_GROUP).astype(str)
    counts = values.value_counts()
    large = sorted(group for group, count in counts.items() if count >= min_group_size)
    mask = values.isin(large)

    by_group: dict[str, dict[str, float | None]] = {group: {} for group in large}
    gaps: list[Gap] = []
    if large:
        frames = [
            MetricFrame(
                metrics=decision_metric_functions(labels_known),
                y_true=truth[mask].to_numpy(),
                y_pred=decisions[mask].to_numpy(),
                sensitive_features=values[mask].to_numpy(),
            ),
            MetricFrame(
                metrics=score_metric_functions(labels_known),
                y_true=truth[mask].to_numpy(),
                y_pred=scores[mask].to_numpy(),
                sensitive_features=values[mask].to_numpy(),
            ),
        ]
        for metric_frame in frames:
            table = metric_frame.by_group
            for metric in table.columns:
                for group in large:
                    by_group[group][metric] = _clean(table.loc[group, metric])
            if len(large) >= 2:
                gaps += group_gaps(metric_frame, attribute=attribute, groups_compared=len(large))

    groups = [
        GroupMetrics(
            attribute=attribute,
            group=str(group),
            count=int(count),
            too_small=group not in by_group,
            metrics=by_group.get(group, {}),
        )
        for group, count in sorted(counts.items())
    ]
    too_small = [item.group for item in groups if item.too_small]
    if too_small:
        logger.info(
            "fairness: %s groups below %d rows reported as too small: %d", attribute, min_group_size, len(too_small)
        )
    return groups, gaps


def group_gaps(metric_frame: Any, *, attribute: str, groups_compared: int) -> list[Gap]:
    """Return fairlearn's between-group difference and ratio of every metric in ``metric_frame``."""
    differences = metric_frame.difference(method="between_groups", errors="coerce")
    minimum = metric_frame.group_min(errors="coerce")
    maximum = metric_frame.group_max(errors="coerce")
    defined = metric_frame.by_group.notna().sum()
    gaps = []
    for metric in differences.index:
        if defined[metric] < 2:
            # A rate undefined in all but one group (for example TPR where only one group has readmissions)
            # has no gap; pandas would report 0.
            gaps.append(
                Gap(
                    attribute=attribute,
                    metric=str(metric),
                    difference=None,
                    ratio=None,
                    groups_compared=groups_compared,
                )
            )
            continue
        largest = float(maximum[metric])
        # A ratio over a zero maximum is undefined (every group has rate 0): report None, not a division error.
        ratio = float(minimum[metric]) / largest if largest and not math.isnan(largest) else math.nan
        gaps.append(
            Gap(
                attribute=attribute,
                metric=str(metric),
                difference=_clean(differences[metric]),
                ratio=_clean(ratio),
                groups_compared=groups_compared,
            )
        )
    return gaps
