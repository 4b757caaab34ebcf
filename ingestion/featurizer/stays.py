"""Index inpatient stays of one patient and their features known at discharge.

``build_patient_rows`` is pure: it takes every resource of one patient (any order, any mix of versions) and
returns one row per discharged inpatient stay. Only the latest version of each resource counts, so replays
and late resources give the same rows as an in-order load.

No look-ahead: each feature uses resources dated at or before discharge. Status fields that describe the
present rather than the time of discharge (a Condition's clinicalStatus, a MedicationRequest "stopped") are
ignored; dates decide instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ingestion.featurizer import charlson
from ingestion.featurizer.demographics import UNKNOWN, age_band, normalise_sex
from ingestion.featurizer.fhir_values import codings, first_code, parse_datetime, period_bounds, reference_id
from ingestion.featurizer.labels import readmission_label
from ingestion.featurizer.labs import LABS, last_values_before, read_lab
from ingestion.featurizer.scores import hospital_score, lace_score

# Encounter.class codes (v3 ActCode) for inpatient stays: inpatient encounter, inpatient acute, non-acute.
INPATIENT_CLASSES = frozenset({"IMP", "ACUTE", "NONAC"})
EMERGENCY_CLASSES = frozenset({"EMER"})
# Encounter.priority codes (v3 ActPriority): elective and routine mean planned; emergency, urgent and stat mean acute.
PLANNED_PRIORITIES = frozenset({"EL", "R"})
EMERGENCY_PRIORITIES = frozenset({"EM", "UR", "S"})
# Encounter.type codes that mark a planned admission in data without priority. Synthea v2.4 uses
# SNOMED CT 183495009 "Non-urgent orthopedic admission" for its elective joint replacements.
PLANNED_ADMISSION_TYPES = frozenset({"183495009"})
# Encounter.hospitalization.admitSource code (HL7 admit-source) for admissions from the emergency department.
EMERGENCY_ADMIT_SOURCES = frozenset({"emd"})
# Statuses of an encounter that never took place or is not over.
SKIPPED_ENCOUNTER_STATUSES = frozenset(
    {"planned", "cancelled", "entered-in-error", "in-progress", "arrived", "triaged"}
)
VOID_STATUSES = frozenset({"entered-in-error", "cancelled", "draft", "not-done", "refuted"})
MALIGNANT_CATEGORIES = frozenset({"malignancy", "metastatic_solid_tumor"})

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class FeaturizerConfig:
    """Windows of the featurizer, in days unless named otherwise; the defaults match the settings."""

    short_lookback_days: int = 182
    long_lookback_days: int = 365
    readmission_window_days: int = 30
    ed_to_admission_hours: float = 24.0
    lab_lookback_days: int = 365
    medication_lookback_days: int = 365


@dataclass(frozen=True)
class SourceResource:
    """One de-identified resource and where it came from.

    ``lineage`` contains ``resource_type``, ``pseudo_id``, ``version``, and when read from the deid zone
    ``deid_id`` and ``batch_id``.
    """

    resource: dict[str, Any]
    lineage: dict[str, Any]


@dataclass
class _Encounter:
    id: str
    start: datetime
    end: datetime | None
    inpatient: bool
    emergency_visit: bool
    planned: bool
    emergency_priority: bool
    disposition: str
    source: SourceResource


@dataclass
class _PatientRecord:
    patient: SourceResource | None = None
    encounters: list[_Encounter] = field(default_factory=list)
    by_type: dict[str, list[SourceResource]] = field(default_factory=dict)


def latest_versions(records: Iterable[SourceResource]) -> list[SourceResource]:
    """Keep the highest version of each (resource type, id); sort the result by type and id.

    Two records with the same version are ordered by their deid row id, so the choice is deterministic.
    """
    best: dict[tuple[str, str], SourceResource] = {}
    for record in records:
        key = (record.resource.get("resourceType", ""), str(record.resource.get("id", "")))
        current = best.get(key)
        if current is None or _version_key(record) > _version_key(current):
            best[key] = record
    return [best[key] for key in sorted(best)]


def _version_key(record: SourceResource) -> tuple[int, int]:
    return int(record.lineage.get("version") or 0), int(record.lineage.get("deid_id") or 0)


def build_patient_rows(
    patient_pseudonym: str, records: Iterable[SourceResource], config: FeaturizerConfig | None = None
) -> list[dict[str, Any]]:
    """Return one row per discharged inpatient stay of one patient, sorted by discharge time and stay id.

    Each row has ``patient_pseudonym``, ``stay_id``, ``admitted_at`` and ``discharged_at`` (UTC), ``label``,
    ``label_available_at``, ``days_to_next_stay``, and the dicts ``features``, ``audit`` and ``lineage``.
    A stay during which the patient died gives no row, because there is no discharge to predict from.
    """
    config = config or FeaturizerConfig()
    record = _index_patient(latest_versions(records))
    demographics = _demographics(record.patient)
    stays = sorted((e for e in record.encounters if e.inpatient and e.end is not None), key=lambda e: (e.start, e.id))
    deceased_at = parse_datetime((record.patient.resource if record.patient else {}).get("deceasedDateTime"))

    rows = []
    for stay in stays:
        assert stay.end is not None
        if deceased_at is not None and deceased_at <= stay.end:
            continue
        rows.append(_stay_row(patient_pseudonym, stay, stays, record, demographics, config))
    rows.sort(key=lambda row: (row["discharged_at"], row["stay_id"]))
    return rows


def _index_patient(records: list[SourceResource]) -> _PatientRecord:
    patient_record = _PatientRecord()
    for record in records:
        resource_type = record.resource.get("resourceType")
        if resource_type == "Patient":
            patient_record.patient = record
        elif resource_type == "Encounter":
            encounter = _read_encounter(record)
            if encounter is not None:
                patient_record.encounters.append(encounter)
        else:
            patient_record.by_type.setdefault(str(resource_type), []).append(record)
    return patient_record


def _read_encounter(record: SourceResource) -> _Encounter | None:
    resource = record.resource
    if resource.get("status") in SKIPPED_ENCOUNTER_STATUSES:
        return None
    start, end = period_bounds(resource, "period")
    if start is None:
        return None
    class_code = str((resource.get("class") or {}).get("code") or "")
    priority = first_code(resource.get("priority"))
    type_codes = {code for concept in resource.get("type") or [] for _, code in codings(concept)}
    hospitalization = resource.get("hospitalization") or {}
    admit_source = first_code(hospitalization.get("admitSource"))
    return _Encounter(
        id=str(resource.get("id", "")),
        start=start,
        end=end,
        inpatient=class_code in INPATIENT_CLASSES,
        emergency_visit=class_code in EMERGENCY_CLASSES,
        planned=priority in PLANNED_PRIORITIES or bool(type_codes & PLANNED_ADMISSION_TYPES),
        emergency_priority=priority in EMERGENCY_PRIORITIES or admit_source in EMERGENCY_ADMIT_SOURCES,
        disposition=first_code(hospitalization.get("dischargeDisposition")) or UNKNOWN,
        source=record,
    )


def _demographics(patient: SourceResource | None) -> dict[str, Any]:
    resource = patient.resource if patient else {}
    return {
        "birth_date": parse_datetime(resource.get("birthDate")),
        "sex": normalise_sex(resource.get("gender")),
        "race": _us_core_category(resource, "us-core-race"),
        "ethnicity": _us_core_category(resource, "us-core-ethnicity"),
    }


def _us_core_category(patient: dict[str, Any], name: str) -> str:
    """Return the OMB category display (or the text) of a us-core race or ethnicity extension."""
    for extension in patient.get("extension") or []:
        if not str(extension.get("url", "")).endswith(f"/{name}"):
            continue
        parts = extension.get("extension") or []
        for part in parts:
            if part.get("url") == "ombCategory" and (part.get("valueCoding") or {}).get("display"):
                return str(part["valueCoding"]["display"])
        for part in parts:
            if part.get("url") == "text" and part.get("valueString"):
                return str(part["valueString"])
    return UNKNOWN


def _stay_row(
    patient_pseudonym: str,
    stay: _Encounter,
    stays: list[_Encounter],
    record: _PatientRecord,
    demographics: dict[str, Any],
    config: FeaturizerConfig,
) -> dict[str, Any]:
    assert stay.end is not None
    used: list[SourceResource] = [stay.source]
    if record.patient is not None:
        used.append(record.patient)

    age = _age_in_years(demographics["birth_date"], stay.start)
    length_of_stay = (stay.end - stay.start).total_seconds() / SECONDS_PER_DAY
    history = _history(stay, record.encounters, config, used)
    condition_count, condition_codes = _active_conditions(record.by_type.get("Condition", []), stay.end, used)
    charlson_categories = charlson.categories_of(condition_codes)
    medications = _active_medications(record.by_type.get("MedicationRequest", []), stay.end, config, used)
    procedures = _stay_procedures(record.by_type.get("Procedure", []), stay, used)
    labs = _labs(record.by_type.get("Observation", []), stay.end, demographics["sex"], config, used)
    cci = charlson.charlson_index(charlson_categories)

    features: dict[str, Any] = {
        "age_at_admission": age,
        "age_band": age_band(age),
        "sex": demographics["sex"],
        "length_of_stay_days": round(length_of_stay, 4),
        "emergency_admission": int(history["emergency_admission"]),
        "prior_inpatient_6m": history["inpatient_short"],
        "prior_inpatient_12m": history["inpatient_long"],
        "prior_ed_6m": history["ed_short"],
        "prior_ed_12m": history["ed_long"],
        "charlson_index": cci,
        "active_conditions": condition_count,
        "active_medications": medications,
        "procedures_during_stay": procedures,
        "discharge_disposition": stay.disposition,
    }
    for lab in LABS:
        value = labs.get(lab.name)
        features[f"{lab.name}_last"] = None if value is None else round(value.value, 4)
        features[f"{lab.name}_abnormal"] = None if value is None else int(value.abnormal)
    features["lace_score"] = lace_score(
        length_of_stay_days=length_of_stay,
        emergency_admission=history["emergency_admission"],
        charlson_index=cci,
        ed_visits_6m=history["ed_short"],
    )
    features["hospital_score"] = hospital_score(
        hemoglobin_g_per_dl=features["hemoglobin_last"],
        # NOTE: FHIR data rarely names the discharging service, so an active cancer diagnosis replaces
        # HOSPITAL's "discharge from an oncology service".
        oncology_discharge=bool(charlson_categories & MALIGNANT_CATEGORIES),
        sodium_mmol_per_l=features["sodium_last"],
        procedure_during_stay=procedures > 0,
        emergency_admission=history["emergency_admission"],
        admissions_12m=history["inpatient_long"],
        length_of_stay_days=length_of_stay,
    )

    later = [(other.start, other.id, other.planned) for other in stays if other.id != stay.id]
    readmission = readmission_label(
        discharged_at=stay.end, later_stays=later, window_days=config.readmission_window_days
    )
    if readmission.next_stay_id is not None:
        used.extend(other.source for other in stays if other.id == readmission.next_stay_id)

    return {
        "patient_pseudonym": patient_pseudonym,
        "stay_id": stay.id,
        "admitted_at": stay.start,
        "discharged_at": stay.end,
        "label": readmission.label,
        "label_available_at": readmission.available_at,
        "days_to_next_stay": None if readmission.days_to_next_stay is None else round(readmission.days_to_next_stay, 4),
        "features": features,
        "audit": {
            "race": demographics["race"],
            "ethnicity": demographics["ethnicity"],
            "sex": demographics["sex"],
            "age_band": age_band(age),
        },
        "lineage": _lineage(used),
    }


def _age_in_years(birth_date: datetime | None, on: datetime) -> int | None:
    if birth_date is None:
        return None
    years = on.year - birth_date.year
    if (on.month, on.day) < (birth_date.month, birth_date.day):
        years -= 1
    return max(years, 0)


def _history(
    stay: _Encounter, encounters: list[_Encounter], config: FeaturizerConfig, used: list[SourceResource]
) -> dict[str, Any]:
    """Count earlier stays and ED visits, and decide whether the admission came through the ED."""
    short_start = stay.start - timedelta(days=config.short_lookback_days)
    long_start = stay.start - timedelta(days=config.long_lookback_days)
    ed_link_start = stay.start - timedelta(hours=config.ed_to_admission_hours)

    admitting_ed: _Encounter | None = None
    for encounter in encounters:
        # The ED visit that led to this admission ends within the link window (or runs into the stay).
        visit_end = encounter.end or encounter.start
        linked = encounter.emergency_visit and encounter.start <= stay.start and visit_end >= ed_link_start
        if linked and (admitting_ed is None or (encounter.start, encounter.id) > (admitting_ed.start, admitting_ed.id)):
            admitting_ed = encounter

    counts = {"inpatient_short": 0, "inpatient_long": 0, "ed_short": 0, "ed_long": 0}
    for encounter in encounters:
        if encounter.id == stay.id or encounter is admitting_ed or not long_start <= encounter.start < stay.start:
            continue
        if encounter.inpatient:
            kind = "inpatient"
        elif encounter.emergency_visit:
            kind = "ed"
        else:
            continue
        counts[f"{kind}_long"] += 1
        counts[f"{kind}_short"] += int(encounter.start >= short_start)
        used.append(encounter.source)
    if admitting_ed is not None:
        used.append(admitting_ed.source)
    return {**counts, "emergency_admission": stay.emergency_priority or admitting_ed is not None}


def _active_conditions(
    conditions: list[SourceResource], discharged_at: datetime, used: list[SourceResource]
) -> tuple[int, set[tuple[str, str]]]:
    """Find the conditions with onset at or before discharge and not yet abated.

    Returns the number of distinct conditions (by first coding) and all their (code system, code) pairs, with
    the systems named as in ``charlson.SYSTEM_URIS``.
    """
    distinct: set[tuple[str, str]] = set()
    active: set[tuple[str, str]] = set()
    for record in conditions:
        resource = record.resource
        if first_code(resource.get("verificationStatus")) in VOID_STATUSES:
            continue
        onset = period_bounds(resource, "onset")[0] or parse_datetime(resource.get("recordedDate"))
        abated = period_bounds(resource, "abatement")
        abated_at = abated[1] or abated[0]
        if onset is None or onset > discharged_at or (abated_at is not None and abated_at <= discharged_at):
            continue
        pairs = [(charlson.SYSTEM_URIS.get(system, system), code) for system, code in codings(resource.get("code"))]
        if pairs:
            distinct.add(pairs[0])
            active.update(pairs)
            used.append(record)
    return len(distinct), active


def _active_medications(
    requests: list[SourceResource], discharged_at: datetime, config: FeaturizerConfig, used: list[SourceResource]
) -> int:
    """Count distinct medications requested in the lookback window up to discharge and not ended before it.

    NOTE: Synthea's MedicationRequest has no end date, so a long-term medication first ordered before the
    lookback window is missed, and a short course ordered inside it counts even if it ended.
    """
    earliest = discharged_at - timedelta(days=config.medication_lookback_days)
    medications: set[str] = set()
    for record in requests:
        resource = record.resource
        authored = parse_datetime(resource.get("authoredOn"))
        if resource.get("status") in VOID_STATUSES or authored is None or not earliest <= authored <= discharged_at:
            continue
        validity_end = parse_datetime(((resource.get("dispenseRequest") or {}).get("validityPeriod") or {}).get("end"))
        if validity_end is not None and validity_end <= discharged_at:
            continue
        code = first_code(resource.get("medicationCodeableConcept")) or reference_id(
            resource.get("medicationReference")
        )
        if code:
            medications.add(code)
            used.append(record)
    return len(medications)


def _stay_procedures(procedures: list[SourceResource], stay: _Encounter, used: list[SourceResource]) -> int:
    """Count procedures linked to the stay or performed between admission and discharge."""
    assert stay.end is not None
    count = 0
    for record in procedures:
        resource = record.resource
        if resource.get("status") in VOID_STATUSES:
            continue
        performed_at = period_bounds(resource, "performed")[0]
        linked = reference_id(resource.get("encounter")) == stay.id
        during = performed_at is not None and stay.start <= performed_at <= stay.end
        if linked or during:
            count += 1
            used.append(record)
    return count


def _labs(
    observations: list[SourceResource],
    discharged_at: datetime,
    sex: str,
    config: FeaturizerConfig,
    used: list[SourceResource],
) -> dict[str, Any]:
    values = []
    records_by_id = {}
    for record in observations:
        value = read_lab(record.resource, sex=sex)
        if value is not None:
            values.append(value)
            records_by_id[value.observation_id] = record
    earliest = discharged_at - timedelta(days=config.lab_lookback_days)
    latest = last_values_before(values, discharged_at, earliest=earliest)
    used.extend(records_by_id[value.observation_id] for value in latest.values())
    return latest


def _lineage(used: list[SourceResource]) -> dict[str, Any]:
    """Return the resources a row was computed from (type, pseudonymised id, version) and their ingest batches."""
    resources = {}
    for record in used:
        lineage = record.lineage
        entry = {
            "resource_type": lineage.get("resource_type") or record.resource.get("resourceType"),
            "pseudo_id": lineage.get("pseudo_id") or record.resource.get("id"),
            "version": lineage.get("version"),
        }
        for optional in ("deid_id", "batch_id"):
            if lineage.get(optional) is not None:
                entry[optional] = lineage[optional]
        resources[(entry["resource_type"], entry["pseudo_id"])] = entry
    entries = [resources[key] for key in sorted(resources, key=lambda key: (str(key[0]), str(key[1])))]
    batches = sorted({str(entry["batch_id"]) for entry in entries if "batch_id" in entry})
    return {"resources": entries, "batches": batches}


def completeness(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Return, per feature name, the share of rows (0-1) where the feature is not None."""
    if not rows:
        return {}
    names = sorted({name for row in rows for name in row["features"]})
    return {name: sum(row["features"].get(name) is not None for row in rows) / len(rows) for name in names}
