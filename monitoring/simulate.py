"""Drift simulation: score a shifted copy of the training population and log it like production scores.

``shift_population`` is pure: it moves the age band up by whole bands and multiplies the length of stay.
``simulate_drift`` samples stays from the champion's reference frame, shifts them, scores them with the
champion (the same model class the API serves) and writes the scores to ``serving.predictions`` with
lineage ``{"simulation": ...}``, so `monitor run` then detects the drift and raises the alert. Each simulated
score keeps the stay's pseudonym and stay id, so the audit attributes and labels still join from
``features.stays``; only the model inputs are shifted.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from healthflow.errors import InvalidInputError
from healthflow.settings import Settings
from monitoring.reference import CHAMPION_ALIAS, ReferenceSource

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

FIRST_NUMBER = re.compile(r"\d+")
SIMULATION_SUBJECT = "monitor-simulate-drift"


@dataclass(frozen=True)
class Shift:
    """Shift of the simulated population: age band up by ``age_band_steps``, stay length times ``stay_factor``."""

    age_band_column: str = "age_band"
    age_band_steps: int = 2
    stay_column: str = "length_of_stay_days"
    stay_factor: float = 1.8

    def shifted_columns(self) -> list[str]:
        columns = []
        if self.age_band_steps:
            columns.append(self.age_band_column)
        if self.stay_factor != 1:
            columns.append(self.stay_column)
        return columns


def band_order(bands: list[str]) -> list[str]:
    """Sort age band labels by their first number (``18-44`` before ``65-74`` before ``90+``)."""

    def lower_bound(band: str) -> int:
        match = FIRST_NUMBER.search(band)
        if match is None:
            raise InvalidInputError(f"age band {band!r} contains no number, so the bands cannot be ordered")
        return int(match.group())

    return sorted(set(bands), key=lower_bound)


def shift_population(frame: pd.DataFrame, *, shift: Shift) -> pd.DataFrame:
    """Return a copy of ``frame`` with the age band moved up (capped at the oldest band) and stays lengthened."""
    for column in shift.shifted_columns():
        if column not in frame.columns:
            raise InvalidInputError(
                f"the population lacks column {column!r}; choose the column to shift with an option"
            )
    if shift.stay_factor <= 0:
        raise InvalidInputError(f"stay factor must be positive, not {shift.stay_factor}")

    shifted = frame.copy()
    if shift.age_band_steps:
        bands = band_order([str(value) for value in frame[shift.age_band_column].dropna()])
        position = {band: index for index, band in enumerate(bands)}
        top = len(bands) - 1

        def move(value: Any) -> Any:
            if value is None or str(value) not in position:
                return value
            return bands[min(max(position[str(value)] + shift.age_band_steps, 0), top)]

        shifted[shift.age_band_column] = frame[shift.age_band_column].map(move)
    if shift.stay_factor != 1:
        shifted[shift.stay_column] = frame[shift.stay_column] * shift.stay_factor
    return shifted


def simulate_drift(
    settings: Settings,
    *,
    source: ReferenceSource,
    model_name: str,
    rows: int,
    shift: Shift,
    seed: int,
    alias: str = CHAMPION_ALIAS,
    end: datetime | None = None,
    spread: timedelta = timedelta(hours=12),
) -> int:
    """Score ``rows`` shifted reference stays with the version at ``alias`` and log them; return the number written.

    ``scored_at`` times are spread evenly over ``spread`` before ``end`` (default now, UTC), so the scores fall
    inside a default window.
    """
    from serving.model_handle import load_champion
    from serving.prediction_log import PredictionLog, PredictionRecord

    if rows < 1:
        raise InvalidInputError(f"rows must be at least 1, not {rows}")
    model = load_champion(settings.mlflow_tracking_uri, model_name, alias)
    reference = source.load(source.resolve(model_name, model.identity.version))
    sample = reference.sample(n=rows, replace=len(reference) < rows, random_state=seed).reset_index(drop=True)
    shifted = shift_population(sample, shift=shift)

    missing = [name for name in model.feature_names if name not in shifted.columns]
    if missing:
        raise InvalidInputError(f"the reference lacks model features {missing}; it is not this model's training frame")
    inputs = [{name: none_if_missing(row[name]) for name in model.feature_names} for row in shifted.to_dict("records")]
    probabilities = model.predict_proba(inputs)

    end = end or datetime.now(UTC)
    step = spread / rows
    lineage = {"simulation": {"age_band_steps": shift.age_band_steps, "stay_factor": shift.stay_factor, "seed": seed}}
    records = [
        PredictionRecord(
            scored_at=end - spread + step * index,
            patient_pseudonym=str(sample.get("patient_pseudonym", sample.index.astype(str))[index]),
            stay_id=str(sample.get("stay_id", sample.index.astype(str))[index]),
            feature_service=settings.serve_feature_service,
            model_name=model.identity.name,
            model_version=model.identity.version,
            run_id=model.identity.run_id,
            probability=float(probabilities[index]),
            risk_level=model.thresholds.risk_level(float(probabilities[index])),
            features=inputs[index],
            missing_features=[name for name, value in inputs[index].items() if value is None],
            lineage=lineage,
            discharged_at=None,
            request_subject=SIMULATION_SUBJECT,
        )
        for index in range(rows)
    ]
    log = PredictionLog(settings, publish_to_kafka=False)
    try:
        log.write(records)
    finally:
        log.close()
    logger.info("simulated %d shifted scores of %s version %s", rows, model.identity.name, model.identity.version)
    return rows


def none_if_missing(value: Any) -> Any:
    """Return None for NaN and NA so the features JSON contains null, and plain Python numbers otherwise."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value
