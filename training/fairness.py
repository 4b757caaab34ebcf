"""Per-group metrics with fairlearn's MetricFrame at the operating point, and the largest between-group gaps."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

GAP_METRICS = ("selection_rate", "tpr", "fpr", "fnr", "auroc")
# These need readmitted rows in the group; the others need only enough rows.
POSITIVE_DEPENDENT = {"tpr", "fnr", "auroc"}
MISSING_GROUP = "unknown"


@dataclass(frozen=True)
class FairnessReport:
    """Per-group metrics by attribute, and for each attribute the largest difference of each metric.

    ``gaps[attribute][metric]`` is max - min over groups that pass the size rules, NaN when fewer than two do.
    """

    by_group: dict[str, pd.DataFrame]
    gaps: dict[str, dict[str, float]]

    def flat_gaps(self) -> dict[str, float]:
        return {
            f"fairness_{attribute}_{metric}_difference": value
            for attribute, values in self.gaps.items()
            for metric, value in values.items()
            if not math.isnan(value)
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "gaps": self.gaps,
            "by_group": {name: table.reset_index().to_dict(orient="records") for name, table in self.by_group.items()},
        }


def _auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, y_score))


def group_metrics(
    *, y_true: np.ndarray, probability: np.ndarray, threshold: float, sensitive_features: pd.Series
) -> pd.DataFrame:
    """Return one row per group: count, positives, selection rate, TPR, FPR, FNR and AUROC."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_negative_rate,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    flagged = (probability >= threshold).astype("int64")
    groups = sensitive_features.astype("object").where(sensitive_features.notna(), MISSING_GROUP).astype(str)
    label_metrics = MetricFrame(
        metrics={
            "count": count,
            "positives": lambda y_true, y_pred: int(np.sum(y_true)),
            "selection_rate": selection_rate,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
            "fnr": false_negative_rate,
        },
        y_true=y_true,
        y_pred=flagged,
        sensitive_features=groups.to_numpy(),
    )
    score_metrics = MetricFrame(
        metrics={"auroc": _auroc}, y_true=y_true, y_pred=probability, sensitive_features=groups.to_numpy()
    )
    table = label_metrics.by_group.join(score_metrics.by_group)
    table.index.name = "group"
    return table


def largest_gaps(
    table: pd.DataFrame, *, min_group_size: int, min_group_positives: int, exclude_unknown: bool = True
) -> dict[str, float]:
    """Return max - min of each gap metric over groups that pass the size rules (and are not unknown)."""
    gaps: dict[str, float] = {}
    large_enough = table["count"] >= min_group_size
    if exclude_unknown:
        large_enough &= table.index != MISSING_GROUP
    enough_positives = large_enough & (table["positives"] >= min_group_positives)
    for metric in GAP_METRICS:
        eligible = enough_positives if metric in POSITIVE_DEPENDENT else large_enough
        values = table.loc[eligible, metric].dropna()
        gaps[metric] = float(values.max() - values.min()) if len(values) >= 2 else float("nan")
    return gaps


def fairness_report(
    *,
    y_true: np.ndarray,
    probability: np.ndarray,
    threshold: float,
    audit: pd.DataFrame,
    attributes: list[str],
    min_group_size: int,
    min_group_positives: int,
    exclude_unknown: bool = True,
) -> FairnessReport:
    """Compute per-group metrics for every audit attribute present in ``audit``; absent ones are logged."""
    by_group: dict[str, pd.DataFrame] = {}
    gaps: dict[str, dict[str, float]] = {}
    for attribute in attributes:
        if attribute not in audit.columns:
            logger.warning("audit attribute %s is not in the test frame; no per-group metrics for it", attribute)
            continue
        table = group_metrics(
            y_true=y_true,
            probability=probability,
            threshold=threshold,
            sensitive_features=audit[attribute].reset_index(drop=True),
        )
        by_group[attribute] = table
        gaps[attribute] = largest_gaps(
            table,
            min_group_size=min_group_size,
            min_group_positives=min_group_positives,
            exclude_unknown=exclude_unknown,
        )
    return FairnessReport(by_group=by_group, gaps=gaps)


def gap_violations(gaps: dict[str, dict[str, float]], *, attributes: list[str], limits: dict[str, float]) -> list[str]:
    """Return a sentence for each gated gap over its limit; an empty list means every gap is within limits.

    A gated attribute with no gap (absent, or fewer than two groups large enough) is not a violation,
    but it is logged, because nothing was checked for it.
    """
    violations = []
    for attribute in attributes:
        values = gaps.get(attribute)
        if values is None:
            logger.warning("fairness gate: attribute %s has no per-group metrics; not checked", attribute)
            continue
        for metric, limit in limits.items():
            value = values.get(metric, float("nan"))
            if math.isnan(value):
                logger.warning("fairness gate: %s %s gap could not be computed; not checked", attribute, metric)
            elif value > limit:
                violations.append(
                    f"{metric} difference across {attribute} groups is {value:.3f}, over the limit {limit:.3f}"
                )
    return violations
