"""Demographic generalisation shared by the FHIR featurizer and the UCI adapter: age bands and sex."""

from __future__ import annotations

# Ages above 89 form one band, as in the HIPAA Safe Harbor rule and the de-identified zone.
OLDEST_BAND_START = 90
UNKNOWN = "unknown"


def age_band(age_years: int | None) -> str:
    """Return the 10-year band of an age in whole years ("0-9", ..., "80-89", "90+"), or "unknown"."""
    if age_years is None or age_years < 0:
        return UNKNOWN
    if age_years >= OLDEST_BAND_START:
        return f"{OLDEST_BAND_START}+"
    start = age_years // 10 * 10
    return f"{start}-{start + 9}"


def normalise_sex(value: str | None) -> str:
    """Return "female", "male", "other" or "unknown" for a FHIR gender or a source's sex label."""
    text = (value or "").strip().lower()
    if text in {"female", "f"}:
        return "female"
    if text in {"male", "m"}:
        return "male"
    if text == "other":
        return "other"
    return UNKNOWN
