"""Date shifting for FHIR date, dateTime and instant values.

Every date of one patient moves by the same whole number of days, derived from the pseudonym key and the
patient's raw id, so every interval inside that patient's record is unchanged. The time of day, the fraction
of a second and the time-zone offset are kept as written, so a dateTime moves by exactly ``days * 86400``
seconds. A partial date (``YYYY`` or ``YYYY-MM``) is shifted as its first day and written back at the same
precision, so intervals between partial dates are only approximate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from healthflow.errors import DeidentificationError
from healthflow.pseudonym import pseudonymise

# FHIR R4 date, dateTime and instant share this shape: a date at year, month or day precision, then an
# optional time with seconds, fraction and a time-zone offset.
_DATE_PATTERN = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?P<time>T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@dataclass(frozen=True)
class FhirDate:
    """A parsed FHIR date-like value: the calendar date, its precision, and the time part as written."""

    value: date
    precision: str  # "year", "month" or "day"
    time: str  # "" or the text from "T" on, time zone included

    def render(self) -> str:
        if self.precision == "year":
            return f"{self.value.year:04d}"
        if self.precision == "month":
            return f"{self.value.year:04d}-{self.value.month:02d}"
        return self.value.isoformat() + self.time


def parse_fhir_date(text: str, *, element: str) -> FhirDate:
    """Parse a FHIR date, dateTime or instant; raise DeidentificationError naming ``element`` if invalid."""
    match = _DATE_PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise DeidentificationError(f"invalid date value in {element}; expected a FHIR date, dateTime or instant")
    year = int(match["year"])
    month = int(match["month"] or 1)
    day = int(match["day"] or 1)
    try:
        value = date(year, month, day)
    except ValueError as error:
        raise DeidentificationError(f"invalid calendar date in {element}") from error
    precision = "day" if match["day"] else "month" if match["month"] else "year"
    return FhirDate(value=value, precision=precision, time=match["time"] or "")


def shift_fhir_date(text: str, days: int, *, element: str) -> str:
    """Return ``text`` moved by ``days`` calendar days, at the same precision, time and time zone."""
    parsed = parse_fhir_date(text, element=element)
    try:
        shifted = parsed.value + timedelta(days=days)
    except OverflowError as error:
        raise DeidentificationError(f"date in {element} cannot be shifted: out of range") from error
    return FhirDate(value=shifted, precision=parsed.precision, time=parsed.time).render()


def year_of(text: str, *, element: str) -> int:
    return parse_fhir_date(text, element=element).value.year


def date_shift_days(key: bytes, patient_id: str, *, min_days: int, max_days: int) -> int:
    """Return the secret shift for one patient, in days, in [-max_days, -min_days] or [min_days, max_days].

    The value comes from HMAC-SHA256(key, "dateshift|" + patient_id), so it is stable across runs and
    cannot be computed without the key.
    """
    if not 0 <= min_days <= max_days:
        raise ValueError(f"date shift range is invalid: min {min_days} days, max {max_days} days")
    number = int(pseudonymise(key, "dateshift", patient_id), 16)
    span = max_days - min_days + 1
    magnitude = min_days + (number >> 1) % span
    return magnitude if number & 1 else -magnitude
