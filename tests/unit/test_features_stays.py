"""Featurizer behaviour on three hand-checked de-identified patients, and order independence."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingestion.featurizer.stays import SourceResource, build_patient_rows, completeness

FIXTURES = Path(__file__).parents[1] / "fixtures" / "features"


def load_records(name: str) -> tuple[str, list[SourceResource]]:
    bundle = json.loads((FIXTURES / f"{name}.json").read_text())
    records = [
        SourceResource(
            entry["resource"],
            {
                "resource_type": entry["resource"]["resourceType"],
                "pseudo_id": entry["resource"]["id"],
                "version": 1,
                "deid_id": index + 1,
                "batch_id": "batch-1",
            },
        )
        for index, entry in enumerate(bundle["entry"])
    ]
    patient = next(r.resource["id"] for r in records if r.resource["resourceType"] == "Patient")
    return patient, records


def rows_of(name: str) -> list[dict]:
    patient, records = load_records(name)
    return build_patient_rows(patient, records)


def row_discharged(rows: list[dict], when: datetime) -> dict:
    return next(row for row in rows if row["discharged_at"] == when)


def test_day29_readmission_is_labelled():
    rows = rows_of("readmitted_day29")
    index = row_discharged(rows, datetime(2020, 1, 15, 10, tzinfo=UTC))
    assert index["label"] == 1
    assert index["days_to_next_stay"] == 29.0
    assert index["label_available_at"] == datetime(2020, 2, 14, 10, tzinfo=UTC)


def test_day29_patient_features_by_hand():
    features = row_discharged(rows_of("readmitted_day29"), datetime(2020, 1, 15, 10, tzinfo=UTC))["features"]
    assert features["age_at_admission"] == 69
    assert features["age_band"] == "60-69"
    assert features["sex"] == "female"
    assert features["length_of_stay_days"] == 5.25
    assert features["emergency_admission"] == 1
    assert features["prior_inpatient_6m"] == 0
    assert features["prior_inpatient_12m"] == 1
    assert features["prior_ed_6m"] == 1
    assert features["prior_ed_12m"] == 1
    # Heart failure (1) and diabetes (1); the infarction starts after discharge and must not count.
    assert features["charlson_index"] == 2
    assert features["active_conditions"] == 2
    assert features["active_medications"] == 2
    assert features["procedures_during_stay"] == 1
    assert features["discharge_disposition"] == "01"
    # The 13.0 g/dL value is taken after discharge: the last value before discharge is 10.5.
    assert features["hemoglobin_last"] == 10.5
    assert features["hemoglobin_abnormal"] == 1
    assert features["sodium_last"] == 132.0
    assert features["sodium_abnormal"] == 1
    assert features["creatinine_last"] == 1.0
    assert features["creatinine_abnormal"] == 0
    assert features["glucose_last"] is None
    assert features["hba1c_abnormal"] is None
    # LACE: length 5 days -> 4, acute -> 3, Charlson 2 -> 2, one prior ED visit -> 1.
    assert features["lace_score"] == 10
    # HOSPITAL: Hb 1, sodium 1, procedure 1, emergency 1, one prior admission 0, stay >= 5 days 2.
    assert features["hospital_score"] == 6


def test_day29_audit_and_lineage():
    row = row_discharged(rows_of("readmitted_day29"), datetime(2020, 1, 15, 10, tzinfo=UTC))
    assert row["audit"] == {
        "race": "White",
        "ethnicity": "Not Hispanic or Latino",
        "sex": "female",
        "age_band": "60-69",
    }
    used = {(entry["resource_type"], entry["pseudo_id"]) for entry in row["lineage"]["resources"]}
    assert ("Encounter", row["stay_id"]) in used
    assert sum(1 for kind, _ in used if kind == "Observation") == 3
    assert row["lineage"]["batches"] == ["batch-1"]
    assert all(entry["version"] == 1 for entry in row["lineage"]["resources"])


def test_day31_readmission_is_not_labelled():
    rows = rows_of("readmitted_day31")
    index = row_discharged(rows, datetime(2021, 5, 4, tzinfo=UTC))
    assert index["label"] == 0
    # The planned stay at day 10 is skipped; the next unplanned stay is 31 days out.
    assert index["days_to_next_stay"] == 31.0


def test_day31_patient_features_by_hand():
    features = row_discharged(rows_of("readmitted_day31"), datetime(2021, 5, 4, tzinfo=UTC))["features"]
    assert features["age_band"] == "80-89"
    assert features["emergency_admission"] == 1
    # Renal disease 2 and metastatic tumour 6; the primary cancer (2) is superseded.
    assert features["charlson_index"] == 8
    assert features["glucose_last"] == pytest.approx(180.16)
    assert features["glucose_abnormal"] == 1
    assert features["hba1c_abnormal"] == 1
    assert features["lace_score"] == 11
    assert features["hospital_score"] == 3


def test_never_readmitted_patient():
    rows = rows_of("never_readmitted")
    assert len(rows) == 1
    assert rows[0]["label"] == 0
    assert rows[0]["days_to_next_stay"] is None
    assert rows[0]["audit"]["ethnicity"] == "Hispanic or Latino"


@pytest.mark.parametrize("name", ["readmitted_day29", "readmitted_day31", "never_readmitted"])
def test_rows_independent_of_arrival_order(name):
    patient, records = load_records(name)
    expected = build_patient_rows(patient, records)
    generator = random.Random(7)
    for _ in range(5):
        shuffled = records[:]
        generator.shuffle(shuffled)
        # A replay delivers some resources twice.
        shuffled += generator.sample(records, k=3)
        assert build_patient_rows(patient, shuffled) == expected


def test_newer_version_wins_whatever_the_order():
    patient, records = load_records("never_readmitted")
    stay = next(r for r in records if r.resource.get("class", {}).get("code") == "IMP")
    corrected = dict(stay.resource, period={"start": "2022-02-02T00:00:00Z", "end": "2022-02-05T00:00:00Z"})
    newer = SourceResource(corrected, dict(stay.lineage, version=2, deid_id=99))
    for ordering in ([*records, newer], [newer, *records]):
        rows = build_patient_rows(patient, ordering)
        assert rows[0]["features"]["length_of_stay_days"] == 3.0
        assert {
            "resource_type": "Encounter",
            "pseudo_id": stay.resource["id"],
            "version": 2,
            "deid_id": 99,
            "batch_id": "batch-1",
        } in rows[0]["lineage"]["resources"]


def test_late_readmission_relabels_index_stay():
    patient, records = load_records("readmitted_day29")
    readmission_start = "2020-02-13T10:00:00Z"
    without_readmission = [r for r in records if r.resource.get("period", {}).get("start") != readmission_start]
    before = row_discharged(build_patient_rows(patient, without_readmission), datetime(2020, 1, 15, 10, tzinfo=UTC))
    after = row_discharged(build_patient_rows(patient, records), datetime(2020, 1, 15, 10, tzinfo=UTC))
    assert before["label"] == 0
    assert after["label"] == 1


def test_stay_without_discharge_gives_no_row():
    patient, records = load_records("never_readmitted")
    for record in records:
        if record.resource.get("class", {}).get("code") == "IMP":
            record.resource["period"] = {"start": "2022-02-02T00:00:00Z"}
    assert build_patient_rows(patient, records) == []


def test_death_during_stay_gives_no_row():
    patient, records = load_records("never_readmitted")
    for record in records:
        if record.resource["resourceType"] == "Patient":
            record.resource["deceasedDateTime"] = "2022-02-02T12:00:00Z"
    assert build_patient_rows(patient, records) == []


def test_completeness_counts_missing_labs():
    rows = rows_of("readmitted_day29")
    shares = completeness(rows)
    assert shares["charlson_index"] == 1.0
    assert 0.0 <= shares["hba1c_last"] < 1.0
