"""Feast on PostgreSQL: point-in-time training rows, late rows, and the online store after materialize."""

from __future__ import annotations

import pandas as pd
import pytest

from healthflow.db import connect
from ingestion.featurizer import feast_repo
from ingestion.featurizer.training_set import get_training_frame
from ingestion.featurizer.worker import recompute_patients
from tests.integration.test_features_store import fixture_resources, store_deid

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAMES = ("readmitted_day29", "readmitted_day31", "never_readmitted")


def load_fixtures(settings) -> dict[str, str]:
    patients = {}
    for name in NAMES:
        patient, resources = fixture_resources(name)
        store_deid(settings, patient, resources, batch=f"batch-{name}")
        patients[name] = patient
    recompute_patients(settings, sorted(patients.values()))
    return patients


def stays_of(settings, patient: str) -> list[tuple[str, pd.Timestamp]]:
    with connect(settings) as connection:
        return connection.execute(
            "SELECT stay_id, discharged_at FROM features.stays WHERE current AND patient_pseudonym = %s"
            " ORDER BY discharged_at",
            (patient,),
        ).fetchall()


def test_point_in_time_and_online_store(settings):
    patients = load_fixtures(settings)
    feast_repo.apply(settings)

    # Training rows: each stay gets its own features, never those of the patient's later stays.
    frame = get_training_frame(settings, "readmission_fhir_v1")
    assert len(frame) == 7
    assert {
        "label",
        "label_available_at",
        "patient_pseudonym",
        "stay_id",
        "event_timestamp",
        "race",
        "ethnicity",
        "sex",
        "age_band",
        "lace_score",
    } <= set(frame.columns)
    patient_a = frame[frame["patient_pseudonym"] == patients["readmitted_day29"]].sort_values("event_timestamp")
    assert patient_a["length_of_stay_days"].tolist() == [2.0, 5.25, 3.0]
    assert patient_a["label"].tolist() == [0, 1, 0]

    # A late stay: its data arrives now (created after every entity time) and it is discharged later.
    patient = patients["never_readmitted"]
    first_stay, first_discharge = stays_of(settings, patient)[0]
    _, resources = fixture_resources("never_readmitted")
    late = {
        "resourceType": "Encounter",
        "id": "f" * 32,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{patient}"},
        "period": {"start": "2022-02-20T00:00:00Z", "end": "2022-03-01T00:00:00Z"},
    }
    store_deid(settings, patient, [late], batch="batch-late")
    recompute_patients(settings, [patient])

    with feast_repo.feature_store(settings) as store:
        entity = pd.DataFrame(
            {
                "patient_pseudonym": [patient, patient],
                "event_timestamp": [pd.Timestamp(first_discharge), pd.Timestamp("2022-02-25T00:00:00Z")],
            }
        )
        joined = (
            store.get_historical_features(
                entity_df=entity,
                features=["fhir_patient_latest_stay:source_stay_id", "fhir_patient_latest_stay:length_of_stay_days"],
            )
            .to_df()
            .sort_values("event_timestamp")
        )
    # At the first discharge, the late stay (discharged 2022-03-01) is not visible; nor during it.
    assert joined["source_stay_id"].tolist() == [first_stay, first_stay]
    assert joined["length_of_stay_days"].tolist() == [1.0, 1.0]

    # The first stay's label changed (readmitted 17 days later), so it has a new version, created now;
    # the training frame still joins that stay's own features.
    frame = get_training_frame(settings, "readmission_fhir_v1")
    row = frame[frame["stay_id"] == first_stay].iloc[0]
    assert row["label"] == 1
    assert row["length_of_stay_days"] == 1.0

    # Online store: exactly one row per patient, the latest stay.
    feast_repo.materialize_incremental(settings)
    with connect(settings, settings.pg_feast_database) as connection:
        online_entities = connection.execute(
            "SELECT count(DISTINCT entity_key) FROM healthflow_fhir_patient_latest_stay"
        ).fetchone()
        online_stays = connection.execute("SELECT count(DISTINCT entity_key) FROM healthflow_fhir_stay").fetchone()
    assert online_entities == (3,)
    assert online_stays == (8,)
    with feast_repo.feature_store(settings) as store:
        online = store.get_online_features(
            features=["fhir_patient_latest_stay:source_stay_id"],
            entity_rows=[{"patient_pseudonym": patient} for patient in patients.values()],
        ).to_dict()
    expected = [stays_of(settings, patient)[-1][0] for patient in patients.values()]
    assert online["source_stay_id"] == expected
