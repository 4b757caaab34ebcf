"""Baselines scored beside CatBoost: a logistic regression on the same features, and the LACE score."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from training.model import FeatureTypes, prepare_features

logger = logging.getLogger(__name__)


def fit_logistic_baseline(*, train: pd.DataFrame, y_train: np.ndarray, types: FeatureTypes, seed: int) -> Any:
    """Fit a class-balanced logistic regression: median-imputed scaled numerics, one-hot categories.

    Categories seen in fewer than 20 train rows share one infrequent level, so rare codes do not overfit.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), list(types.numeric)),
            (
                "categorical",
                OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20),
                list(types.categorical),
            ),
        ]
    )
    model = make_pipeline(columns, LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    model.fit(prepare_features(train, types), y_train)
    return model


def logistic_probability(model: Any, frame: pd.DataFrame, types: FeatureTypes) -> np.ndarray:
    return np.asarray(model.predict_proba(prepare_features(frame, types))[:, 1], dtype="float64")


def lace_probability(
    *, validation_scores: pd.Series, y_validation: np.ndarray, test_scores: pd.Series
) -> np.ndarray | None:
    """Map LACE scores to probabilities with a logistic fit on validation rows (monotone, so AUROC is the
    raw score's). Returns None when the score is missing on most validation rows; a missing test score gets
    the validation readmission rate.
    """
    from training.calibration import fit_calibrator

    present_validation = validation_scores.notna().to_numpy()
    if present_validation.mean() < 0.5:
        logger.warning("LACE score is missing for most validation stays; the LACE baseline is skipped")
        return None
    calibrator = fit_calibrator(
        "platt",
        margin=validation_scores.to_numpy()[present_validation].astype("float64"),
        y_true=y_validation[present_validation],
    )
    probability = np.full(len(test_scores), float(np.mean(y_validation)))
    present = test_scores.notna().to_numpy()
    probability[present] = calibrator.probability(test_scores.to_numpy()[present].astype("float64"))
    return probability
