"""Alert rules: pure functions from audit results and named limits to alerts.

A drift alert fires when the drifted share of feature columns is over ``drift_share_limit``; a fairness alert
fires for each attribute and metric whose between-group difference is over ``fairness_gap_limit``; a data
quality alert fires for each failed quality check. Storing alerts and publishing ``audit.alerts`` events is
done by ``monitoring.store`` and ``monitoring.run``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from monitoring.drift import DriftResult
from monitoring.fairness import GAP_LIMITED_METRICS, FairnessResult
from monitoring.quality import QualityCheck

DRIFT = "drift"
FAIRNESS = "fairness"
DATA_QUALITY = "data_quality"


@dataclass(frozen=True)
class Alert:
    """One limit crossed: its kind, what it is about, the measured value and the limit."""

    kind: str
    subject: str
    value: float
    limit: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def drift_alerts(result: DriftResult, *, drift_share_limit: float) -> list[Alert]:
    """Return one alert when the drifted share of columns is over ``drift_share_limit`` (0..1)."""
    if result.drift_share <= drift_share_limit:
        return []
    drifted = ", ".join(result.drifted_columns)
    return [
        Alert(
            kind=DRIFT,
            subject="features",
            value=result.drift_share,
            limit=drift_share_limit,
            message=(
                f"{len(result.drifted_columns)} of {len(result.columns)} feature columns drifted "
                f"(share {result.drift_share:.2f}, limit {drift_share_limit:.2f}): {drifted}"
            ),
        )
    ]


def fairness_alerts(
    result: FairnessResult,
    *,
    fairness_gap_limit: float,
    attributes: Sequence[str] | None = None,
    metrics: Sequence[str] = GAP_LIMITED_METRICS,
) -> list[Alert]:
    """Return one alert per attribute and metric whose difference is over ``fairness_gap_limit``.

    ``attributes`` limits the alerts to those audit attributes; None raises them for every attribute.
    """
    alerts = []
    for gap in result.gaps:
        if attributes is not None and gap.attribute not in attributes:
            continue
        if gap.metric not in metrics or gap.difference is None or gap.difference <= fairness_gap_limit:
            continue
        alerts.append(
            Alert(
                kind=FAIRNESS,
                subject=f"{gap.attribute}/{gap.metric}",
                value=gap.difference,
                limit=fairness_gap_limit,
                message=(
                    f"{gap.metric} differs by {gap.difference:.3f} between {gap.attribute} groups "
                    f"(limit {fairness_gap_limit:.3f}, {gap.groups_compared} groups compared)"
                ),
            )
        )
    return alerts


def quality_alerts(checks: Iterable[QualityCheck]) -> list[Alert]:
    """Return one alert per failed data quality check."""
    return [
        Alert(
            kind=DATA_QUALITY,
            subject=f"{check.column}/{check.check}",
            value=check.value,
            limit=check.limit,
            message=check.message,
        )
        for check in checks
        if not check.passed
    ]
