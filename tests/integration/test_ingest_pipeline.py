"""Ingestion into the raw zone and Kafka: broken inputs, idempotence, versions, event keys."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from healthflow.db import connect
from healthflow.events import DEAD_LETTER, FHIR_RAW, Envelope, make_consumer
from healthflow.pseudonym import key_bytes, patient_pseudonym
from ingestion.fhir.pipeline import ingest_sources
from ingestion.fhir.sources import sources_for_paths

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
BROKEN_FILES = [
    "invalid_json.json",
    "truncated.ndjson",
    "unknown_type.json",
    "malformed_date.json",
    "missing_required.json",
    "bundle_without_type.json",
    "unknown_element.json",
    "transaction_invalid.json",
]


def ingest(settings, paths):
    settings = settings.model_copy(update={"ingest_validation_workers": 0})
    sources = sources_for_paths([str(path) for path in paths], max_bytes=settings.ingest_max_input_bytes)
    return ingest_sources(settings, sources, source_ref="test")


def read_events(settings, topic, count, *, timeout_seconds=30.0):
    consumer = make_consumer(settings, f"test-{uuid.uuid4().hex}", [topic])
    events = []
    try:
        for _ in range(int(timeout_seconds * 2)):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                events.append((message.key().decode(), Envelope.from_bytes(message.value())))
            if len(events) >= count and message is None:
                break
    finally:
        consumer.close()
    return events


def fetch(settings, query, *args):
    with connect(settings) as connection:
        return connection.execute(query, args).fetchall()


def test_broken_inputs_dead_lettered_siblings_kept(settings):
    summary = ingest(settings, [FIXTURES / name for name in BROKEN_FILES])

    stored = {row[0] for row in fetch(settings, "SELECT resource_id FROM raw.resources")}
    assert stored == {"nd-obs-1", "nd-obs-2", "nd-obs-4", "ut-patient", "ut-cond", "md-good", "mr-ok"}
    assert summary.accepted == 7
    assert summary.rejected == 8
    rejected = fetch(settings, "SELECT reason, outcome, content, source_ref FROM raw.rejected ORDER BY id")
    assert len(rejected) == 8
    for reason, outcome, content, _ in rejected:
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["severity"] == "error"
        assert reason
        assert content is not None
    dead = fetch(settings, "SELECT stage, reason, details FROM ops.dead_letter ORDER BY id")
    assert len(dead) == 8
    assert {row[0] for row in dead} == {"ingestion"}
    assert all("rejected_id" in row[2] for row in dead)
    assert any(row[1] == "Patient.birthDate: Date value string does not match spec regex" for row in dead)
    assert not any("1961-13-45" in row[1] or "green" in row[1] for row in dead)


def test_dead_letter_events_carry_no_payload(settings):
    ingest(settings, [FIXTURES / "malformed_date.json", FIXTURES / "unknown_element.json"])
    events = read_events(settings, DEAD_LETTER, 2)
    assert len(events) == 2
    for _, envelope in events:
        assert envelope.event_type == "deadletter"
        assert set(envelope.payload) == {"stage", "source", "reason", "dead_letter_id", "rejected_id", "resource_type"}
        text = envelope.to_bytes().decode()
        assert "md-bad" not in text
        assert "ue-patient" not in text


def test_raw_events_keyed_by_patient_pseudonym(settings):
    ingest(settings, [FIXTURES / "transaction_urn.json"])
    rows = fetch(settings, "SELECT id, resource_type, patient_id FROM raw.resources")
    assert {row[2] for row in rows} == {"tu-patient"}
    events = read_events(settings, FHIR_RAW, len(rows))
    assert len(events) == len(rows)
    expected_key = patient_pseudonym(key_bytes(settings.pseudonym_key.get_secret_value()), "tu-patient")
    assert {key for key, _ in events} == {expected_key}
    assert {envelope.payload["raw_id"] for _, envelope in events} == {row[0] for row in rows}
    for _, envelope in events:
        assert set(envelope.payload) == {"raw_id", "resource_type", "version", "batch_id", "source"}
        assert "tu-patient" not in envelope.to_bytes().decode()


def test_second_run_adds_nothing(settings):
    first = ingest(settings, [FIXTURES / "transaction_urn.json", FIXTURES / "truncated.ndjson"])
    second = ingest(settings, [FIXTURES / "transaction_urn.json", FIXTURES / "truncated.ndjson"])
    assert first.accepted == 6
    assert second.accepted == 0
    assert second.unchanged == 6
    assert fetch(settings, "SELECT count(*) FROM raw.resources")[0][0] == 6
    batches = fetch(
        settings, "SELECT accepted, unchanged, finished_at IS NOT NULL FROM raw.batches ORDER BY started_at"
    )
    assert [row[2] for row in batches] == [True] * len(batches)
    assert sum(row[0] for row in batches) == 6


def test_new_content_becomes_next_version(settings, tmp_path):
    resource = {"resourceType": "Patient", "id": "v-patient", "gender": "female"}
    path = tmp_path / "patient.json"
    path.write_text(json.dumps(resource))
    ingest(settings, [path])
    path.write_text(json.dumps({**resource, "gender": "other"}))
    summary = ingest(settings, [path])
    assert summary.accepted == 1
    rows = fetch(settings, "SELECT version, content->>'gender' FROM raw.resources ORDER BY version")
    assert rows == [(1, "female"), (2, "other")]


def test_five_megabyte_bundle_rejected_other_file_kept(settings, tmp_path):
    entries = [
        {"resource": {"resourceType": "Observation", "id": f"big-{i}", "status": "final", "code": {"text": "x" * 200}}}
        for i in range(20000)
    ]
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    assert big.stat().st_size > 5 * 1024 * 1024
    shutil.copy(FIXTURES / "unknown_element.json", tmp_path / "also.json")
    (tmp_path / "also.json").write_text(
        (tmp_path / "also.json").read_text().replace(', "favouriteColour": "green"', "")
    )

    summary = ingest(settings, [big, tmp_path / "also.json"])

    assert summary.accepted == 1
    assert summary.rejected == 1
    (reason,) = fetch(settings, "SELECT reason FROM raw.rejected")[0]
    assert "exceeds the size limit" in reason
    (outcome,) = fetch(settings, "SELECT outcome FROM raw.rejected")[0]
    assert outcome["issue"][0]["code"] == "too-costly"
    assert fetch(settings, "SELECT count(*) FROM ops.dead_letter")[0][0] == 1
