"""The last laboratory values before discharge (LOINC), converted to one unit each, with abnormal flags.

Reference intervals are fixed adult intervals in common US laboratory use; an Observation's own
``referenceRange`` (low/high in the same unit) takes precedence when present. Hemoglobin uses the
sex-specific lower limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingestion.featurizer.fhir_values import parse_datetime

LOINC = "http://loinc.org"


@dataclass(frozen=True)
class LabDefinition:
    """One lab feature: the LOINC codes that count for it, its unit, unit conversions and reference interval."""

    name: str
    loinc_codes: frozenset[str]
    unit: str
    # Multiply a value in the key unit by the factor to get ``unit``; the unit itself has factor 1.
    conversions: dict[str, float]
    low: float
    high: float
    low_female: float | None = None


LABS = (
    # 718-7 Hemoglobin [Mass/volume] in Blood; 30313-1 and 20509-6 are other methods for the same value.
    LabDefinition(
        "hemoglobin",
        frozenset({"718-7", "30313-1", "20509-6"}),
        "g/dL",
        {"g/dL": 1.0, "g/L": 0.1, "mmol/L": 1.611},
        low=13.5,
        high=17.5,
        low_female=12.0,
    ),
    # 2951-2 Sodium [Moles/volume] in Serum or Plasma; 2947-0 in Blood.
    LabDefinition(
        "sodium",
        frozenset({"2951-2", "2947-0"}),
        "mmol/L",
        {"mmol/L": 1.0, "meq/L": 1.0, "mEq/L": 1.0},
        low=135.0,
        high=145.0,
    ),
    # 2160-0 Creatinine [Mass/volume] in Serum or Plasma; 38483-4 in Blood.
    LabDefinition(
        "creatinine",
        frozenset({"2160-0", "38483-4"}),
        "mg/dL",
        {"mg/dL": 1.0, "umol/L": 1 / 88.42, "µmol/L": 1 / 88.42},
        low=0.6,
        high=1.3,
    ),
    # 2345-7 Glucose [Mass/volume] in Serum or Plasma; 2339-0 in Blood. Non-fasting interval.
    LabDefinition(
        "glucose", frozenset({"2345-7", "2339-0"}), "mg/dL", {"mg/dL": 1.0, "mmol/L": 18.016}, low=70.0, high=140.0
    ),
    # 4548-4 Hemoglobin A1c/Hemoglobin.total in Blood; 17856-6 by HPLC. 6.5 % and above is the ADA diabetes cut-off.
    LabDefinition("hba1c", frozenset({"4548-4", "17856-6"}), "%", {"%": 1.0}, low=4.0, high=6.4),
)

LAB_BY_CODE = {code: lab for lab in LABS for code in lab.loinc_codes}


@dataclass(frozen=True)
class LabValue:
    """A lab value in its definition's unit, the time it was taken (UTC) and the Observation's id."""

    name: str
    value: float
    effective_at: datetime
    abnormal: bool
    observation_id: str


def read_lab(observation: dict[str, Any], *, sex: str) -> LabValue | None:
    """Return the lab value an Observation carries, or None when it is not one of LABS or has no usable value.

    A value in a unit with no known conversion is skipped (None), not guessed.
    """
    lab = next(
        (
            LAB_BY_CODE[coding.get("code")]
            for coding in (observation.get("code") or {}).get("coding") or []
            if coding.get("system") == LOINC and coding.get("code") in LAB_BY_CODE
        ),
        None,
    )
    if lab is None or observation.get("status") in {"entered-in-error", "cancelled"}:
        return None
    quantity = observation.get("valueQuantity") or {}
    effective_at = parse_datetime(observation.get("effectiveDateTime")) or parse_datetime(
        (observation.get("effectivePeriod") or {}).get("start")
    )
    factor = lab.conversions.get(str(quantity.get("unit") or quantity.get("code") or ""))
    if quantity.get("value") is None or effective_at is None or factor is None:
        return None

    value = float(quantity["value"]) * factor
    low, high = _interval(lab, observation, sex=sex)
    return LabValue(lab.name, value, effective_at, not low <= value <= high, str(observation.get("id", "")))


def _interval(lab: LabDefinition, observation: dict[str, Any], *, sex: str) -> tuple[float, float]:
    low = lab.low_female if sex == "female" and lab.low_female is not None else lab.low
    high = lab.high
    for reference in observation.get("referenceRange") or []:
        unit_ok = (reference.get("low") or reference.get("high") or {}).get("unit") in (None, lab.unit)
        if unit_ok and (reference.get("low") or {}).get("value") is not None:
            low = float(reference["low"]["value"])
        if unit_ok and (reference.get("high") or {}).get("value") is not None:
            high = float(reference["high"]["value"])
    return low, high


def last_values_before(values: list[LabValue], cutoff: datetime, *, earliest: datetime) -> dict[str, LabValue]:
    """Return, per lab name, the latest value taken in [earliest, cutoff]; ties go to the larger Observation id."""
    latest: dict[str, LabValue] = {}
    for value in values:
        if not earliest <= value.effective_at <= cutoff:
            continue
        current = latest.get(value.name)
        if current is None or (value.effective_at, value.observation_id) > (
            current.effective_at,
            current.observation_id,
        ):
            latest[value.name] = value
    return latest
