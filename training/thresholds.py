"""Operating point and risk-level thresholds, derived from calibrated validation probabilities only.

Rule (stored with every model version, so serving never contains these numbers as constants):

- operating point: ``youden`` takes the validation threshold that maximises TPR - FPR; ``target_sensitivity``
  takes the highest validation threshold whose TPR is at least the target.
- risk level ``low`` is below the operating point, ``medium`` from the operating point, and ``high`` from the
  score above which the top ``high_risk_fraction`` of validation stays fall (raised to the operating point
  when that quantile is lower). A probability p is flagged (predicted readmission) when p >= operating point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from healthflow.errors import InvalidInputError


@dataclass(frozen=True)
class RiskThresholds:
    """Calibrated-probability thresholds: medium starts at ``medium``, high at ``high``; ``rule`` describes them."""

    operating_point: float
    medium: float
    high: float
    rule: str

    def risk_level(self, probability: float) -> str:
        if probability >= self.high:
            return "high"
        if probability >= self.medium:
            return "medium"
        return "low"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_operating_point(
    *, y_true: np.ndarray, probability: np.ndarray, rule: str, target_sensitivity: float
) -> float:
    """Return the operating-point probability on validation data by the named rule (see module docstring)."""
    from sklearn.metrics import roc_curve

    if len(np.unique(y_true)) < 2:
        raise InvalidInputError("validation labels hold one class only; no operating point can be chosen")
    fpr, tpr, thresholds = roc_curve(y_true, probability)
    # roc_curve's first threshold is +inf (nothing flagged); it is never an operating point.
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    if rule == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    if rule == "target_sensitivity":
        reaching = np.flatnonzero(tpr >= target_sensitivity)
        return float(thresholds[reaching[0]])
    raise InvalidInputError(f"unknown operating point rule {rule!r}; expected youden or target_sensitivity")


def derive_thresholds(
    *,
    y_true: np.ndarray,
    probability: np.ndarray,
    rule: str,
    target_sensitivity: float,
    high_risk_fraction: float,
) -> RiskThresholds:
    """Derive the operating point and the medium/high risk thresholds from validation data."""
    operating_point = choose_operating_point(
        y_true=y_true, probability=probability, rule=rule, target_sensitivity=target_sensitivity
    )
    high = max(float(np.quantile(probability, 1 - high_risk_fraction)), operating_point)
    description = (
        f"operating point: {rule}"
        + (f" (validation TPR >= {target_sensitivity})" if rule == "target_sensitivity" else " (max TPR - FPR)")
        + f" on validation data; medium from the operating point; high from the top {high_risk_fraction:.0%}"
        " of validation scores, at least the operating point"
    )
    return RiskThresholds(operating_point=operating_point, medium=operating_point, high=high, rule=description)
