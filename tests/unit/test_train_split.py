"""Patient- and time-grouped splits."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from healthflow.errors import InvalidInputError
from tests.unit.train_synthetic import SPEC, synthetic_frame
from training.split import split_by_patient_and_time


def _split(frame: pd.DataFrame, spec=SPEC):
    return split_by_patient_and_time(frame, spec=spec, test_fraction=0.2, validation_fraction=0.2, seed=3)


def test_split_keeps_each_patient_on_one_side() -> None:
    split = _split(synthetic_frame())
    train, validation, test = (set(side["patient_id"]) for side in (split.train, split.validation, split.test))
    assert not train & test
    assert not train & validation
    assert not validation & test


def test_split_puts_test_after_train_in_time() -> None:
    split = _split(synthetic_frame())
    assert split.test_cutoff is not None
    assert split.train["event_timestamp"].max() < split.test["event_timestamp"].min()
    assert split.validation["event_timestamp"].max() < split.test["event_timestamp"].min()
    assert split.train["event_timestamp"].max() < split.validation["event_timestamp"].min()


def test_split_drops_train_rows_labelled_after_cutoff() -> None:
    split = _split(synthetic_frame())
    assert split.train["label_available_at"].max() < split.test_cutoff
    assert split.dropped_rows > 0


def test_split_without_times_is_by_patient_only() -> None:
    spec = dataclasses.replace(SPEC, split_by_time=False)
    frame = synthetic_frame()
    split = _split(frame, spec)
    assert split.test_cutoff is None
    assert split.dropped_rows == 0
    assert len(split.train) + len(split.validation) + len(split.test) == len(frame)
    assert not set(split.train["patient_id"]) & set(split.test["patient_id"])


def test_split_is_seeded() -> None:
    spec = dataclasses.replace(SPEC, split_by_time=False)
    first = _split(synthetic_frame(), spec)
    second = _split(synthetic_frame(), spec)
    assert first.test["stay_id"].tolist() == second.test["stay_id"].tolist()


def test_split_rejects_empty_frame() -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        _split(synthetic_frame().iloc[:0])


def test_split_rejects_single_class_side() -> None:
    frame = synthetic_frame()
    frame["readmitted_30d"] = 0
    with pytest.raises(InvalidInputError, match="not both label values"):
        _split(frame)
