"""The MLflow pyfunc model: CatBoost + calibrator + feature list, predicting the calibrated probability.

Artifacts of a logged model:

- ``catboost_model`` (``model.cbm``): the CatBoost model in its native format.
- ``model_meta`` (``model_meta.json``): feature names and types, the calibrator, the risk thresholds and
  operating point, and the SHAP expected value on the raw log-odds scale.

The signature declares numeric features as double and categorical ones as string, and MLflow refuses to
cast int64 to double: pass inputs through ``model_inputs`` (or ``training.model.prepare_features``) first.

Serving maps an explanation to the score as: margin = expected_value + sum(SHAP values); probability =
calibrator(margin) by the rule in ``training.calibration``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from training.calibration import Calibrator
from training.model import FeatureTypes, raw_margin

PROBABILITY_COLUMN = "readmission_probability"


class ReadmissionModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]  # mlflow loads pyfunc lazily
    """Return a one-column frame, ``readmission_probability``, the calibrated 30-day readmission probability."""

    def load_context(self, context: Any) -> None:
        from catboost import CatBoostClassifier

        meta = json.loads(Path(context.artifacts["model_meta"]).read_text(encoding="utf-8"))
        self.meta = meta
        self.types = FeatureTypes(
            numeric=tuple(meta["numeric_features"]), categorical=tuple(meta["categorical_features"])
        )
        self.calibrator = Calibrator.from_dict(meta["calibrator"])
        self.model = CatBoostClassifier()
        self.model.load_model(context.artifacts["catboost_model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        margin = raw_margin(self.model, model_input, self.types)
        probability = self.calibrator.probability(margin)
        return pd.DataFrame({PROBABILITY_COLUMN: np.asarray(probability, dtype="float64")}, index=model_input.index)


def write_model_files(
    folder: Path, *, model: Any, types: FeatureTypes, calibrator: Calibrator, meta: dict[str, Any]
) -> dict[str, str]:
    """Write the CatBoost model and the metadata JSON into ``folder``; return the pyfunc artifacts mapping."""
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / "model.cbm"
    model.save_model(str(model_path))
    full_meta = {
        **meta,
        "numeric_features": list(types.numeric),
        "categorical_features": list(types.categorical),
        "feature_types": types.as_dict(),
        "calibrator": calibrator.as_dict(),
        "probability_column": PROBABILITY_COLUMN,
    }
    meta_path = folder / "model_meta.json"
    meta_path.write_text(json.dumps(full_meta, indent=2, sort_keys=True), encoding="utf-8")
    return {"catboost_model": str(model_path), "model_meta": str(meta_path)}


def feature_types_of(loaded_model: Any) -> FeatureTypes:
    """Return the feature types stored in a loaded pyfunc model's metadata."""
    meta = loaded_model.metadata.metadata or {}
    types = meta.get("feature_types")
    if not types:
        raise ValueError("the model's metadata has no feature_types; it was not logged by training.tracking")
    return FeatureTypes(
        numeric=tuple(name for name, kind in types.items() if kind == "numeric"),
        categorical=tuple(name for name, kind in types.items() if kind == "categorical"),
    )


def model_inputs(loaded_model: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame``'s model inputs in the types the logged signature expects (float64 and str)."""
    from training.model import prepare_features

    return prepare_features(frame, feature_types_of(loaded_model))
