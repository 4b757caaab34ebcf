"""Readmission label edges: the (0, 30] window, transfers and planned stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingestion.featurizer.labels import readmission_label

DISCHARGE = datetime(2020, 1, 1, 12, tzinfo=UTC)


def label_for(*stays: tuple[timedelta, bool]) -> int:
    later = [(DISCHARGE + gap, f"stay-{index}", planned) for index, (gap, planned) in enumerate(stays)]
    return readmission_label(discharged_at=DISCHARGE, later_stays=later, window_days=30).label


def test_label_includes_day_30_exactly():
    assert label_for((timedelta(days=30), False)) == 1


def test_label_excludes_just_after_day_30():
    assert label_for((timedelta(days=30, seconds=1), False)) == 0


def test_label_ignores_transfer_at_discharge():
    assert label_for((timedelta(0), False)) == 0


def test_label_ignores_earlier_stays():
    assert label_for((-timedelta(days=5), False)) == 0


def test_label_ignores_planned_stays():
    assert label_for((timedelta(days=3), True)) == 0


def test_label_counts_unplanned_after_planned():
    assert label_for((timedelta(days=3), True), (timedelta(days=20), False)) == 1


def test_label_available_after_window():
    result = readmission_label(discharged_at=DISCHARGE, later_stays=[], window_days=30)
    assert result.available_at == DISCHARGE + timedelta(days=30)
    assert result.days_to_next_stay is None
