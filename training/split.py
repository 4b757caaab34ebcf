"""Patient- and time-grouped splits: no patient on two sides, and the held-out side after the kept side in time."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from healthflow.errors import InvalidInputError
from training.spec import TrainingSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holdout:
    """One cut of a frame. ``cutoff`` is the UTC time from which rows are held out, None for a patient-only cut."""

    kept: pd.DataFrame
    held: pd.DataFrame
    cutoff: pd.Timestamp | None
    dropped_rows: int


@dataclass(frozen=True)
class Split:
    """Train (model fitting), validation (early stopping, calibration, thresholds) and test sides."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    test_cutoff: pd.Timestamp | None
    validation_cutoff: pd.Timestamp | None
    dropped_rows: int


def split_by_patient_and_time(
    frame: pd.DataFrame, *, spec: TrainingSpec, test_fraction: float, validation_fraction: float, seed: int
) -> Split:
    """Split into train, validation and test sides with no patient on two sides.

    Where every row has an event time, the test side holds the patients whose first stay is at or after the
    (1 - test_fraction) quantile of event times; the train side keeps the other patients' stays before that
    cut-off, so every test stay is after every train stay. A train stay whose label becomes known at or after
    the cut-off is dropped, because its outcome lies in the test period. Without event times the cut is a
    seeded random choice of patients. The validation side is cut from the train side by the same rule.
    """
    if frame.empty:
        raise InvalidInputError(f"training frame for {spec.feature_service} is empty")
    outer = holdout_patients(frame, spec=spec, fraction=test_fraction, seed=seed)
    inner = holdout_patients(outer.kept, spec=spec, fraction=validation_fraction, seed=seed + 1)
    for name, side in (("train", inner.kept), ("validation", inner.held), ("test", outer.held)):
        if side.empty or side[spec.label_column].nunique() < 2:
            raise InvalidInputError(
                f"the {name} side of {spec.feature_service} has {len(side)} rows and not both label values; "
                "the frame is too small or too uniform to train on"
            )
    logger.info(
        "split %s: train %s rows, validation %s rows, test %s rows, %s rows dropped at time cut-offs",
        spec.feature_service, len(inner.kept), len(inner.held), len(outer.held),
        outer.dropped_rows + inner.dropped_rows,
    )
    return Split(
        train=inner.kept,
        validation=inner.held,
        test=outer.held,
        test_cutoff=outer.cutoff,
        validation_cutoff=inner.cutoff,
        dropped_rows=outer.dropped_rows + inner.dropped_rows,
    )


def holdout_patients(frame: pd.DataFrame, *, spec: TrainingSpec, fraction: float, seed: int) -> Holdout:
    """Hold out about ``fraction`` of the rows, whole patients only (see split_by_patient_and_time)."""
    if spec.split_by_time and spec.time_column and frame[spec.time_column].notna().all():
        return _holdout_by_time(frame, spec=spec, fraction=fraction)
    if spec.split_by_time and spec.time_column:
        logger.warning(
            "%s has stays without %s; splitting %s by patient only, without a time order",
            spec.feature_service, spec.time_column, spec.feature_service,
        )
    return _holdout_at_random(frame, spec=spec, fraction=fraction, seed=seed)


def _holdout_by_time(frame: pd.DataFrame, *, spec: TrainingSpec, fraction: float) -> Holdout:
    times = pd.to_datetime(frame[spec.time_column], utc=True)
    cutoff = times.quantile(1 - fraction)
    first_stay = times.groupby(frame[spec.patient_column]).transform("min")
    held_mask = first_stay >= cutoff

    kept_mask = ~held_mask & (times < cutoff)
    if spec.label_available_column:
        label_known = pd.to_datetime(frame[spec.label_available_column], utc=True)
        kept_mask &= label_known.isna() | (label_known < cutoff)
    dropped = int((~held_mask & ~kept_mask).sum())
    return Holdout(kept=frame[kept_mask], held=frame[held_mask], cutoff=cutoff, dropped_rows=dropped)


def _holdout_at_random(frame: pd.DataFrame, *, spec: TrainingSpec, fraction: float, seed: int) -> Holdout:
    patients = frame[spec.patient_column].drop_duplicates().to_numpy()
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    held_patients = set(patients[: max(1, round(len(patients) * fraction))])
    held_mask = frame[spec.patient_column].isin(held_patients)
    return Holdout(kept=frame[~held_mask], held=frame[held_mask], cutoff=None, dropped_rows=0)
