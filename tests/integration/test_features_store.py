"""Featurizer on PostgreSQL and Kafka: rows, lineage, recomputation on late data and replays."""

from __future__ import annotations

import json
from itertools import count
from pathlib import Path
from typing import Any

import orjson
import pytest

from healthflow.db import connect
from healthflow.events import FHIR_DEID, DeliveryTracker, Envelope, flush_or_raise, make_producer
from healthflow.settings import Settings
from ingestion.featurizer.worker import recompute_patients, run_worker

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[1] / "fixtures" / "features"
RAW_IDS = count(1)


def fixture_resources(name: str) -> tuple[str, list[dict[str, Any]]]:
    bundle = json.loads((FIXTURES / f"{name}.json").read_text())
    resources = [entry["resource"] for entry in bundle["entry"]]
    patient = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    return patient, resources


def store_deid(
    settings: Settings, patient: str, resources: list[dict[str, Any]], *, batch: str, version: int = 1
) -> None:
    """Write resources into the deid zone as the DeID stage would, with an ingest batch of source "file"."""
    with connect(settings) as connection:
        connection.execute(
            "INSERT INTO raw.batches (batch_id, source, source_ref) VALUES (%s, 'file', 'fixture')"
            " ON CONFLICT DO NOTHING",
            (batch,),
        )
        for resource in resources:
            connection.execute(
                "INSERT INTO deid.resources (raw_id, profile, resource_type, pseudo_id, version, patient_pseudonym,"
                " content, content_hash, batch_id) VALUES (%s, 'pseudonymised', %s, %s, %s, %s, %s, 'h', %s)",
                (
                    next(RAW_IDS),
                    resource["resourceType"],
                    resource["id"],
                    version,
                    patient,
                    orjson.dumps(resource).decode(),
                    batch,
                ),
            )
        connection.commit()


def current_rows(settings: Settings, patient: str) -> list[tuple]:
    with connect(settings) as connection:
        return connection.execute(
            "SELECT stay_id, discharged_at, label, days_to_next_stay, features, lineage FROM features.stays"
            " WHERE current AND patient_pseudonym = %s ORDER BY discharged_at",
            (patient,),
        ).fetchall()


def test_rows_stored_with_lineage(settings):
    patient, resources = fixture_resources("readmitted_day29")
    store_deid(settings, patient, resources, batch="batch-a")
    counts = recompute_patients(settings, [patient])
    rows = current_rows(settings, patient)
    assert counts.inserted == 3
    assert [row[2] for row in rows] == [0, 1, 0]
    lineage = rows[1][5]
    assert lineage["batches"] == ["batch-a"]
    assert lineage["sources"] == ["file"]
    assert all("deid_id" in entry and entry["version"] == 1 for entry in lineage["resources"])


def test_late_readmission_recomputes_patient(settings):
    patient, resources = fixture_resources("readmitted_day29")
    readmission = [r for r in resources if r.get("period", {}).get("start") == "2020-02-13T10:00:00Z"]
    store_deid(settings, patient, [r for r in resources if r not in readmission], batch="batch-1")
    recompute_patients(settings, [patient])
    assert [row[2] for row in current_rows(settings, patient)] == [0, 0]

    store_deid(settings, patient, readmission, batch="batch-2")
    counts = recompute_patients(settings, [patient])
    rows = current_rows(settings, patient)
    assert [row[2] for row in rows] == [0, 1, 0]
    # The first stay is unchanged, the second gets a new version, the third is new.
    assert counts.unchanged == 1
    assert counts.inserted == 2
    assert rows[1][5]["batches"] == ["batch-1", "batch-2"]


def test_result_independent_of_load_order(settings):
    patient, resources = fixture_resources("readmitted_day29")
    store_deid(settings, patient, list(reversed(resources)), batch="batch-r")
    recompute_patients(settings, [patient])
    reversed_rows = [(row[0], row[2], row[4]) for row in current_rows(settings, patient)]

    with connect(settings) as connection:
        connection.execute("DELETE FROM deid.resources")
        connection.execute("DELETE FROM features.stays")
        connection.commit()
    store_deid(settings, patient, resources, batch="batch-r")
    recompute_patients(settings, [patient])
    assert [(row[0], row[2], row[4]) for row in current_rows(settings, patient)] == reversed_rows


def test_newer_version_replaces_row(settings):
    patient, resources = fixture_resources("never_readmitted")
    store_deid(settings, patient, resources, batch="batch-1")
    recompute_patients(settings, [patient])
    stay = next(r for r in resources if r.get("class", {}).get("code") == "IMP")
    longer = dict(stay, period={"start": "2022-02-02T00:00:00Z", "end": "2022-02-06T00:00:00Z"})
    store_deid(settings, patient, [longer], batch="batch-2", version=2)
    recompute_patients(settings, [patient])
    rows = current_rows(settings, patient)
    assert len(rows) == 1
    assert rows[0][4]["length_of_stay_days"] == 4.0
    with connect(settings) as connection:
        versions = connection.execute(
            "SELECT count(*) FROM features.stays WHERE stay_id = %s", (stay["id"],)
        ).fetchone()
    assert versions == (2,)


def test_worker_consumes_deid_events(settings):
    patients = []
    producer = make_producer(settings)
    tracker = DeliveryTracker()
    for name in ("readmitted_day29", "readmitted_day31", "never_readmitted"):
        patient, resources = fixture_resources(name)
        patients.append(patient)
        store_deid(settings, patient, resources, batch="batch-k")
        for resource in resources:
            event = Envelope(
                event_type="fhir.deid.stored", key=patient, payload={"resource_type": resource["resourceType"]}
            )
            producer.produce(settings.topic(FHIR_DEID), key=patient, value=event.to_bytes(), on_delivery=tracker)
    flush_or_raise(producer, tracker)

    counts = run_worker(settings, max_idle_polls=5)
    assert counts.events == sum(
        len(fixture_resources(n)[1]) for n in ("readmitted_day29", "readmitted_day31", "never_readmitted")
    )
    assert [len(current_rows(settings, patient)) for patient in patients] == [3, 3, 1]
