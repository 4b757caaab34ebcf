"""Patient- and time-grouped splits: no patient on two sides, and the held-out side after the kept side in time."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

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

    Where every row has an event time, the test side contains the patients whose first stay is at or after the
    (1 - test_fraction) quantile of the patients' first-stay times. The train side keeps the other patients'
    stays before that cut-off, so every test stay is after every train stay. A train stay whose label becomes
    known at or after the cut-off is dropped, because its outcome lies in the test period. Without event times
    the cut is a seeded random choice of patients, stratified by whether a patient was ever readmitted. The
    validation side is cut from the train side by the same rule. When the time rule leaves a side with one
    label value, the whole split is made at random by patient instead, and ``test_cutoff`` is None.
    """
    if frame.empty:
        raise InvalidInputError(f"training frame for {spec.feature_service} is empty")
    outer, inner = _split_once(
        frame, spec=spec, test_fraction=test_fraction, validation_fraction=validation_fraction, seed=seed
    )
    if outer.cutoff is not None and _one_label_side(outer, inner, spec) is not None:
        # NOTE: a small frame (the demo's few dozen patients) cannot always be split by time with both label
        # values on every side. The split then falls back to patients at random, and the run records
        # test_cutoff = None, which shows a reader of the run that the test side is not later than the train side.
        logger.warning(
            "%s: the time-ordered split leaves the %s side with one label value; splitting by patient at random",
            spec.feature_service,
            _one_label_side(outer, inner, spec),
        )
        random_spec = replace(spec, split_by_time=False)
        outer, inner = _split_once(
            frame, spec=random_spec, test_fraction=test_fraction, validation_fraction=validation_fraction, seed=seed
        )
    side = _one_label_side(outer, inner, spec)
    if side is not None:
        sizes = {"train": len(inner.kept), "validation": len(inner.held), "test": len(outer.held)}
        raise InvalidInputError(
            f"the {side} side of {spec.feature_service} has {sizes[side]} rows and not both label values; "
            "the frame is too small or too uniform to train on"
        )
    logger.info(
        "split %s: train %s rows, validation %s rows, test %s rows, %s rows dropped at time cut-offs",
        spec.feature_service,
        len(inner.kept),
        len(inner.held),
        len(outer.held),
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


def _split_once(
    frame: pd.DataFrame, *, spec: TrainingSpec, test_fraction: float, validation_fraction: float, seed: int
) -> tuple[Holdout, Holdout]:
    outer = holdout_patients(frame, spec=spec, fraction=test_fraction, seed=seed)
    inner = holdout_patients(outer.kept, spec=spec, fraction=validation_fraction, seed=seed + 1)
    return outer, inner


def _one_label_side(outer: Holdout, inner: Holdout, spec: TrainingSpec) -> str | None:
    """Return the name of the first side that is empty or has one label value, or None when all have both."""
    for name, side in (("train", inner.kept), ("validation", inner.held), ("test", outer.held)):
        if side.empty or side[spec.label_column].nunique() < 2:
            return name
    return None


def holdout_patients(frame: pd.DataFrame, *, spec: TrainingSpec, fraction: float, seed: int) -> Holdout:
    """Hold out about ``fraction`` of the rows, whole patients only (see split_by_patient_and_time)."""
    if spec.split_by_time and spec.time_column and frame[spec.time_column].notna().all():
        return _holdout_by_time(frame, spec=spec, fraction=fraction)
    if spec.split_by_time and spec.time_column:
        logger.warning(
            "%s has stays without %s; splitting %s by patient only, without a time order",
            spec.feature_service,
            spec.time_column,
            spec.feature_service,
        )
    return _holdout_at_random(frame, spec=spec, fraction=fraction, seed=seed)


def _holdout_by_time(frame: pd.DataFrame, *, spec: TrainingSpec, fraction: float) -> Holdout:
    times = pd.to_datetime(frame[spec.time_column], utc=True)
    first_stay = times.groupby(frame[spec.patient_column]).transform("min")
    # The quantile is taken over patients' first stays, not over all stays, so about ``fraction`` of the
    # patients are held out even when early patients have long histories of many stays.
    first_stay_per_patient = first_stay.groupby(frame[spec.patient_column]).first()
    cutoff = first_stay_per_patient.quantile(1 - fraction)
    held_mask = first_stay >= cutoff

    kept_mask = ~held_mask & (times < cutoff)
    if spec.label_available_column:
        label_known = pd.to_datetime(frame[spec.label_available_column], utc=True)
        kept_mask &= label_known.isna() | (label_known < cutoff)
    dropped = int((~held_mask & ~kept_mask).sum())
    return Holdout(kept=frame[kept_mask], held=frame[held_mask], cutoff=cutoff, dropped_rows=dropped)


def _holdout_at_random(frame: pd.DataFrame, *, spec: TrainingSpec, fraction: float, seed: int) -> Holdout:
    """Hold out a seeded random ``fraction`` of patients, drawn separately among patients with and without a
    readmission, so both sides keep both label values even when readmissions cluster in a few patients."""
    has_positive = frame.groupby(spec.patient_column)[spec.label_column].max()
    rng = np.random.default_rng(seed)
    held_patients: set = set()
    for label_value in (0, 1):
        patients = has_positive.index[has_positive == label_value].to_numpy()
        if len(patients) == 0:
            continue
        rng.shuffle(patients)
        held_patients.update(patients[: max(1, round(len(patients) * fraction))])
    held_mask = frame[spec.patient_column].isin(held_patients)
    return Holdout(kept=frame[~held_mask], held=frame[held_mask], cutoff=None, dropped_rows=0)
