"""CatBoost fitting with native categorical features, class weights and early stopping on validation data."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from healthflow.errors import InvalidInputError

logger = logging.getLogger(__name__)

# CatBoost rejects NaN in categorical columns, so a missing category becomes this explicit level.
MISSING_CATEGORY = "__missing__"


@dataclass(frozen=True)
class FeatureTypes:
    """Model inputs in their order: numeric columns (float64) then categorical columns (str)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def as_dict(self) -> dict[str, str]:
        return {**{name: "numeric" for name in self.numeric}, **{name: "categorical" for name in self.categorical}}


@dataclass(frozen=True)
class BoostingParams:
    """CatBoost settings; ``class_weighting`` is none, balanced or sqrt_balanced."""

    iterations: int
    learning_rate: float
    depth: int
    early_stopping_rounds: int
    class_weighting: str
    max_ctr_complexity: int
    seed: int

    def catboost_kwargs(self) -> dict[str, Any]:
        weights = {"none": None, "balanced": "Balanced", "sqrt_balanced": "SqrtBalanced"}[self.class_weighting]
        kwargs: dict[str, Any] = {
            "iterations": self.iterations,
            "learning_rate": self.learning_rate,
            "depth": self.depth,
            "loss_function": "Logloss",
            "eval_metric": "Logloss",
            "max_ctr_complexity": self.max_ctr_complexity,
            "random_seed": self.seed,
            "thread_count": -1,
            "allow_writing_files": False,
            "verbose": False,
        }
        if weights:
            kwargs["auto_class_weights"] = weights
        return kwargs


def prepare_features(frame: pd.DataFrame, types: FeatureTypes) -> pd.DataFrame:
    """Return the model inputs in order: numeric as float64 (missing is NaN), categorical as str."""
    missing = [name for name in types.names if name not in frame.columns]
    if missing:
        raise InvalidInputError(f"input lacks feature columns {missing}")
    prepared = pd.DataFrame(index=frame.index)
    for name in types.numeric:
        try:
            prepared[name] = pd.to_numeric(frame[name], errors="raise").astype("float64")
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"feature {name} must be numeric: {error}") from error
    for name in types.categorical:
        column = frame[name].astype("object")
        prepared[name] = column.where(column.notna(), MISSING_CATEGORY).astype(str)
    return prepared


def fit_catboost(
    *,
    train: pd.DataFrame,
    y_train: np.ndarray,
    validation: pd.DataFrame,
    y_validation: np.ndarray,
    types: FeatureTypes,
    params: BoostingParams,
) -> Any:
    """Fit a CatBoostClassifier, stopping early on the validation log loss and keeping the best iteration."""
    from catboost import CatBoostClassifier, Pool

    train_pool = Pool(prepare_features(train, types), label=y_train, cat_features=list(types.categorical))
    validation_pool = Pool(
        prepare_features(validation, types), label=y_validation, cat_features=list(types.categorical)
    )
    model = CatBoostClassifier(**params.catboost_kwargs())
    model.fit(
        train_pool,
        eval_set=validation_pool,
        use_best_model=True,
        early_stopping_rounds=params.early_stopping_rounds,
    )
    logger.info(
        "CatBoost kept iteration %s of at most %s, validation log loss %.4f",
        model.get_best_iteration(),
        params.iterations,
        model.get_best_score()["validation"]["Logloss"],
    )
    return model


def raw_margin(model: Any, frame: pd.DataFrame, types: FeatureTypes) -> np.ndarray:
    """Return CatBoost's raw log-odds (before calibration) for each row."""
    from catboost import Pool

    pool = Pool(prepare_features(frame, types), cat_features=list(types.categorical))
    return np.asarray(model.predict(pool, prediction_type="RawFormulaVal"), dtype="float64")
