"""SHAP explanations with TreeExplainer on the CatBoost model, on its raw log-odds scale.

For every row, expected_value + sum(SHAP values) equals CatBoost's raw margin; the model version stores
expected_value so that serving can return per-feature contributions that add up to the margin it calibrates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.model import FeatureTypes, prepare_features

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Explanation:
    """SHAP values of a sample (rows x features), the exact expected value and the global importance table."""

    expected_value: float
    shap_values: np.ndarray
    sample: pd.DataFrame
    importance: pd.DataFrame
    max_additivity_error: float


def explain(model: Any, frame: pd.DataFrame, *, types: FeatureTypes, sample_size: int, seed: int) -> Explanation:
    """Explain a seeded sample of ``frame``; the expected value comes from the model, not the sample."""
    import shap
    from catboost import Pool

    from training.model import raw_margin

    sample = frame.sample(n=min(sample_size, len(frame)), random_state=seed)
    inputs = prepare_features(sample, types)
    explainer = shap.TreeExplainer(model)
    values = np.asarray(explainer.shap_values(Pool(inputs, cat_features=list(types.categorical))), dtype="float64")
    expected_value = float(np.ravel(explainer.expected_value)[0])

    margin = raw_margin(model, sample, types)
    additivity_error = float(np.max(np.abs(expected_value + values.sum(axis=1) - margin)))
    importance = (
        pd.DataFrame({"feature": types.names, "mean_abs_shap": np.abs(values).mean(axis=0)})
        .sort_values("mean_abs_shap", ascending=False)
        .reset_index(drop=True)
    )
    logger.info(
        "SHAP on %s rows: expected value %.4f, largest additivity error %.2e",
        len(sample),
        expected_value,
        additivity_error,
    )
    return Explanation(
        expected_value=expected_value,
        shap_values=values,
        sample=inputs,
        importance=importance,
        max_additivity_error=additivity_error,
    )


def save_shap_plots(explanation: Explanation, folder: Path) -> list[Path]:
    """Write the global importance bar plot and the beeswarm plot as PNG; a failing plot logs a WARNING."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    written = []
    folder.mkdir(parents=True, exist_ok=True)
    explanation_object = shap.Explanation(
        values=explanation.shap_values,
        base_values=np.full(len(explanation.sample), explanation.expected_value),
        data=_plot_data(explanation.sample),
        feature_names=list(explanation.sample.columns),
    )
    for name, draw in (
        ("shap_importance.png", lambda: shap.plots.bar(explanation_object, max_display=20, show=False)),
        ("shap_beeswarm.png", lambda: shap.plots.beeswarm(explanation_object, max_display=20, show=False)),
    ):
        path = folder / name
        try:
            plt.figure()
            draw()
            plt.tight_layout()
            plt.savefig(path, dpi=110, bbox_inches="tight")
            written.append(path)
        except Exception as error:  # noqa: BLE001 - a plot is a side channel and must not stop training
            logger.warning("SHAP plot %s failed: %s; the run goes on without it", name, error)
        finally:
            plt.close("all")
    return written


def _plot_data(sample: pd.DataFrame) -> np.ndarray:
    """Return feature values for plot colouring: categorical columns as category codes, numeric as is."""
    coded = sample.copy()
    for name in coded.columns:
        if coded[name].dtype == object:
            coded[name] = coded[name].astype("category").cat.codes.astype("float64")
    return coded.to_numpy(dtype="float64")
