"""Probability calibration on CatBoost's raw log-odds, chosen by the out-of-fold validation Brier score.

A calibrator maps a raw margin m (CatBoost's log-odds, which SHAP values plus the expected value add up to)
to a probability:

- ``none``: p = 1 / (1 + exp(-m)).
- ``platt``: p = 1 / (1 + exp(-(slope * m + intercept))).
- ``isotonic``: p = linear interpolation of m over the knots (x, y), clipped to the first and last knot.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

METHODS = ("none", "platt", "isotonic")


@dataclass(frozen=True)
class Calibrator:
    """A fitted mapping from raw margin to probability; ``as_dict`` is what the model version stores."""

    method: str
    slope: float = 1.0
    intercept: float = 0.0
    knots_x: list[float] = field(default_factory=list)
    knots_y: list[float] = field(default_factory=list)

    def probability(self, margin: np.ndarray) -> np.ndarray:
        margin = np.asarray(margin, dtype="float64")
        if self.method == "isotonic":
            return np.interp(margin, self.knots_x, self.knots_y)
        if self.method == "platt":
            return _sigmoid(self.slope * margin + self.intercept)
        return _sigmoid(margin)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Calibrator:
        if values.get("method") not in METHODS:
            raise ValueError(f"unknown calibration method {values.get('method')!r}; expected one of {METHODS}")
        return cls(**values)


@dataclass(frozen=True)
class CalibrationChoice:
    """The chosen calibrator and the validation Brier score of every method (out-of-fold for fitted ones)."""

    calibrator: Calibrator
    validation_brier: dict[str, float]


def fit_calibrator(method: str, *, margin: np.ndarray, y_true: np.ndarray) -> Calibrator:
    """Fit one calibration method on (margin, label) pairs."""
    if method == "none":
        return Calibrator("none")
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        fitted = LogisticRegression(C=1e6, max_iter=1000).fit(margin.reshape(-1, 1), y_true)
        return Calibrator("platt", slope=float(fitted.coef_[0, 0]), intercept=float(fitted.intercept_[0]))
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        fitted = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(margin, y_true)
        return Calibrator(
            "isotonic",
            knots_x=[float(value) for value in fitted.X_thresholds_],
            knots_y=[float(value) for value in fitted.y_thresholds_],
        )
    raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")


def choose_calibrator(
    *, margin: np.ndarray, y_true: np.ndarray, groups: np.ndarray, folds: int, seed: int
) -> CalibrationChoice:
    """Pick the method with the lowest validation Brier score, then refit it on all validation rows.

    Fitted methods are scored out of fold (folds grouped by patient), so a calibrator is applied only when it
    improves the Brier score on validation rows it did not see.
    """
    from sklearn.model_selection import GroupKFold

    scores = {"none": _brier(y_true, Calibrator("none").probability(margin))}
    splitter = GroupKFold(n_splits=min(folds, len(np.unique(groups))), shuffle=True, random_state=seed)
    fold_rows = list(splitter.split(margin, y_true, groups))
    if any(len(np.unique(y_true[fit_rows])) < 2 for fit_rows, _ in fold_rows):
        # With few validation patients a fold can hold one label value only; no calibrator can be fitted there.
        logger.warning("calibration: a validation fold has one label value; keeping the uncalibrated model")
        return CalibrationChoice(calibrator=Calibrator("none"), validation_brier=scores)
    for method in ("platt", "isotonic"):
        out_of_fold = np.empty_like(margin)
        for fit_rows, score_rows in fold_rows:
            calibrator = fit_calibrator(method, margin=margin[fit_rows], y_true=y_true[fit_rows])
            out_of_fold[score_rows] = calibrator.probability(margin[score_rows])
        scores[method] = _brier(y_true, out_of_fold)

    best = min(scores, key=lambda name: scores[name])
    logger.info("calibration: validation Brier %s; chose %s", scores, best)
    return CalibrationChoice(calibrator=fit_calibrator(best, margin=margin, y_true=y_true), validation_brier=scores)


def _brier(y_true: np.ndarray, probability: np.ndarray) -> float:
    return float(np.mean((probability - y_true) ** 2))


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))
