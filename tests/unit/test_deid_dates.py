from __future__ import annotations

from datetime import datetime

import pytest

from healthflow.errors import DeidentificationError
from ingestion.deid.dates import date_shift_days, parse_fhir_date, shift_fhir_date


def test_shift_keeps_time_and_zone() -> None:
    assert shift_fhir_date("2019-03-01T23:37:54.530+02:00", 30, element="x") == "2019-03-31T23:37:54.530+02:00"


def test_shift_moves_instant_by_whole_days() -> None:
    before = datetime.fromisoformat("2012-10-19T23:37:54-05:00")
    after = datetime.fromisoformat(shift_fhir_date("2012-10-19T23:37:54-05:00", -400, element="x"))
    assert (after - before).total_seconds() == -400 * 86400


def test_shift_crosses_leap_day() -> None:
    assert shift_fhir_date("2020-02-28", 1, element="x") == "2020-02-29"
    assert shift_fhir_date("2020-02-28", 2, element="x") == "2020-03-01"


def test_shift_keeps_partial_precision() -> None:
    assert shift_fhir_date("1990", 400, element="x") == "1991"
    assert shift_fhir_date("1990-12", 40, element="x") == "1991-01"


@pytest.mark.parametrize("value", ["1990-13-01", "1990-02-30", "yesterday", "90-01-01", "2019-01-01T25"])
def test_invalid_date_is_rejected(value: str) -> None:
    with pytest.raises(DeidentificationError, match="Patient.birthDate"):
        shift_fhir_date(value, 10, element="Patient.birthDate")


def test_invalid_date_message_hides_value() -> None:
    with pytest.raises(DeidentificationError) as raised:
        parse_fhir_date("1956-08-33", element="Patient.birthDate")
    assert "1956" not in str(raised.value)


def test_offset_is_stable_and_keyed() -> None:
    first = date_shift_days(b"key", "patient-1", min_days=30, max_days=365)
    assert first == date_shift_days(b"key", "patient-1", min_days=30, max_days=365)
    others = {date_shift_days(b"other", f"patient-{i}", min_days=30, max_days=365) for i in range(50)}
    assert len(others) > 40


def test_offset_stays_in_range_both_signs() -> None:
    offsets = [date_shift_days(b"key", f"p{i}", min_days=30, max_days=40) for i in range(400)]
    assert all(30 <= abs(offset) <= 40 for offset in offsets)
    assert any(offset < 0 for offset in offsets)
    assert any(offset > 0 for offset in offsets)


def test_offset_rejects_inverted_range() -> None:
    with pytest.raises(ValueError, match="invalid"):
        date_shift_days(b"key", "p", min_days=50, max_days=10)
