"""Small readers for FHIR R4 JSON values: dateTimes, references and codings."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any


def parse_datetime(text: str | None) -> datetime | None:
    """Parse a FHIR date or dateTime ("2019", "2019-05", "2019-05-02", "2019-05-02T10:00:00+02:00") as UTC.

    A partial date means its first instant, and a dateTime without an offset is read as UTC. Returns None for
    None or an empty string; raises ValueError for text that is not a FHIR date.
    """
    if not text:
        return None
    if len(text) == 4:
        return datetime(int(text), 1, 1, tzinfo=UTC)
    if len(text) == 7:
        return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def reference_id(reference: dict[str, Any] | None) -> str | None:
    """Return the target id of a Reference: "Encounter/abc", "urn:uuid:abc" and full URLs all give "abc"."""
    if not reference or not reference.get("reference"):
        return None
    text = str(reference["reference"])
    if text.startswith("urn:uuid:"):
        return text[len("urn:uuid:") :]
    return text.rstrip("/").split("/")[-1]


def codings(concept: dict[str, Any] | None) -> Iterator[tuple[str, str]]:
    """Yield (system, code) for each coding of a CodeableConcept that has both."""
    for coding in (concept or {}).get("coding") or []:
        system, code = coding.get("system"), coding.get("code")
        if system and code:
            yield str(system), str(code)


def first_code(concept: dict[str, Any] | None) -> str | None:
    """Return the code of the first coding of a CodeableConcept, or None."""
    for coding in (concept or {}).get("coding") or []:
        if coding.get("code"):
            return str(coding["code"])
    return None


def period_bounds(resource: dict[str, Any], element: str) -> tuple[datetime | None, datetime | None]:
    """Return (start, end) of ``element`` as a Period, or of ``element`` + "DateTime" as one instant."""
    period = resource.get(f"{element}Period")
    if period is None and element == "period":
        period = resource.get("period")
    if period:
        return parse_datetime(period.get("start")), parse_datetime(period.get("end"))
    instant = parse_datetime(resource.get(f"{element}DateTime"))
    return instant, instant
