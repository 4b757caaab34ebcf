"""A clearly synthetic training frame for mechanics tests only; no metric from it is ever reported."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.spec import TrainingSpec

SPEC = TrainingSpec(
    feature_service="synthetic_test_v1",
    patient_column="patient_id",
    stay_column="stay_id",
    label_column="readmitted_30d",
    numeric_features=("prior_stays", "length_of_stay", "lab_value"),
    categorical_features=("admission_kind", "sex", "race"),
    time_column="event_timestamp",
    label_available_column="label_available_at",
    audit_columns=("sex", "race", "ethnicity", "age_band"),
    lace_column="lace_score",
)


def synthetic_frame(rows: int = 3000, *, seed: int = 7, with_time: bool = True) -> pd.DataFrame:
    """Return ``rows`` synthetic stays of about rows/2 patients whose label depends on prior_stays and kind."""
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, rows // 2, rows)
    prior = rng.poisson(1.0, rows).astype(float)
    length = rng.integers(1, 15, rows).astype(float)
    lab = rng.normal(0, 1, rows)
    lab[rng.random(rows) < 0.1] = np.nan
    kind = rng.choice(["emergency", "elective", "urgent"], rows)
    margin = -2.2 + 0.6 * prior + 0.08 * length + np.where(kind == "emergency", 0.5, 0.0)
    label = (rng.random(rows) < 1 / (1 + np.exp(-margin))).astype(int)
    start = pd.Timestamp("2020-01-01", tz="UTC")
    times = start + pd.to_timedelta(rng.integers(0, 3 * 365, rows), unit="D")
    return pd.DataFrame(
        {
            "patient_id": [f"p{value}" for value in patients],
            "stay_id": [f"s{index}" for index in range(rows)],
            "event_timestamp": times if with_time else pd.NaT,
            "label_available_at": times + pd.Timedelta(days=30),
            "readmitted_30d": label,
            "prior_stays": prior,
            "length_of_stay": length,
            "lab_value": lab,
            "admission_kind": kind,
            "sex": rng.choice(["female", "male"], rows),
            "race": rng.choice(["white", "black", "asian", None], rows, p=[0.6, 0.25, 0.1, 0.05]),
            "ethnicity": rng.choice(["hispanic", "not-hispanic"], rows),
            "age_band": rng.choice(["40-59", "60-79", "80+"], rows),
            "lace_score": (length.clip(0, 7) + np.where(kind == "emergency", 3, 0) + prior).astype(float),
        }
    )
