"""The DeID worker against the local stack: at-least-once delivery, idempotent stores, fail closed."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from healthflow.db import connect
from healthflow.events import DEAD_LETTER, FHIR_DEID, FHIR_RAW, DeliveryTracker, Envelope, flush_or_raise, make_producer
from healthflow.pseudonym import key_bytes, patient_pseudonym
from healthflow.settings import Settings
from ingestion.deid.worker import DeidWorker

pytestmark = pytest.mark.integration

SYNTHEA = Path(__file__).parents[2] / ".." / "shared" / "data" / "synthea-r4"


def synthea_entries(count: int) -> list[dict[str, Any]]:
    files = sorted(path for path in SYNTHEA.glob("*.json.gz") if "Information" not in path.name)[:count]
    if not files:
        pytest.skip(f"Synthea data not found in {SYNTHEA}")
    resources = []
    for path in files:
        with gzip.open(path) as handle:
            resources.extend(entry["resource"] for entry in json.load(handle)["entry"])
    return resources


def patient_of(resource: dict[str, Any]) -> str | None:
    if resource["resourceType"] == "Patient":
        return resource["id"]
    for name in ("subject", "patient", "beneficiary"):
        reference = (resource.get(name) or {}).get("reference", "")
        if reference.startswith("urn:uuid:"):
            return reference[len("urn:uuid:") :]
    return None


def load_raw(settings: Settings, resources: list[dict[str, Any]], *, batch_id: str = "test-batch") -> list[int]:
    """Insert raw rows and publish their fhir.raw.stored events, as the ingestion stage does."""
    key = key_bytes(settings.pseudonym_key.get_secret_value())
    raw_ids = []
    with connect(settings) as connection, connection.transaction():
        for resource in resources:
            content = json.dumps(resource)
            row = connection.execute(
                "INSERT INTO raw.resources (resource_type, resource_id, version, patient_id, content, content_hash,"
                " source, source_ref, batch_id) VALUES (%s, %s, 1, %s, %s, %s, 'test', 'test', %s)"
                " ON CONFLICT (resource_type, resource_id, content_hash) DO UPDATE SET source = 'test' RETURNING id",
                (
                    resource["resourceType"],
                    resource["id"],
                    patient_of(resource),
                    content,
                    hashlib.sha256(content.encode()).hexdigest(),
                    batch_id,
                ),
            ).fetchone()
            raw_ids.append(row[0])
    producer = make_producer(settings)
    tracker = DeliveryTracker()
    for raw_id, resource in zip(raw_ids, resources, strict=True):
        patient = patient_of(resource)
        envelope = Envelope(
            event_type="fhir.raw.stored",
            key=patient_pseudonym(key, patient) if patient else "no-patient",
            source="test",
            payload={
                "raw_id": raw_id,
                "resource_type": resource["resourceType"],
                "version": 1,
                "batch_id": batch_id,
                "source": "test",
            },
        )
        producer.produce(settings.topic(FHIR_RAW), key=envelope.key, value=envelope.to_bytes(), on_delivery=tracker)
    flush_or_raise(producer, tracker)
    return raw_ids


def read_topic(settings: Settings, name: str) -> list[Envelope]:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "test-reader", "enable.auto.commit": False}
    )
    events = []
    try:
        metadata = consumer.list_topics(settings.topic(name), timeout=10)
        for partition in metadata.topics[settings.topic(name)].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(settings.topic(name), partition), timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(settings.topic(name), partition, low)])
            position = low
            while position < high:
                for message in consumer.consume(500, timeout=10):
                    if message.error() is None:
                        events.append(Envelope.from_bytes(message.value()))
                        position = message.offset() + 1
    finally:
        consumer.close()
    return events


def count(settings: Settings, query: str) -> int:
    with connect(settings) as connection:
        return connection.execute(query).fetchone()[0]


def test_worker_stores_and_publishes_each_resource_once(settings: Settings) -> None:
    resources = synthea_entries(1)
    raw_ids = load_raw(settings, resources)

    stats = DeidWorker(settings).run(idle_exit_seconds=3)

    assert stats.events == len(raw_ids)
    assert stats.dead_lettered == 0
    assert count(settings, "SELECT count(*) FROM deid.resources") == len(raw_ids)
    assert count(settings, "SELECT count(DISTINCT raw_id) FROM deid.resources") == len(raw_ids)
    events = read_topic(settings, FHIR_DEID)
    assert sorted(event.payload["raw_id"] for event in events) == sorted(raw_ids)
    patient = next(resource for resource in resources if resource["resourceType"] == "Patient")
    key = key_bytes(settings.pseudonym_key.get_secret_value())
    assert {event.key for event in events if event.payload["resource_type"] == "Encounter"} == {
        patient_pseudonym(key, patient["id"])
    }
    published = json.dumps([event.payload["resource"] for event in events])
    assert patient["id"] not in published
    assert patient["name"][0]["family"] not in published


def test_replay_adds_no_row_and_republishes_same_content(settings: Settings) -> None:
    raw_ids = load_raw(settings, synthea_entries(1)[:60])
    DeidWorker(settings).run(idle_exit_seconds=3)
    with connect(settings) as connection:
        first = dict(connection.execute("SELECT raw_id, content FROM deid.resources").fetchall())

    # A new consumer group reads fhir.raw from the start: every event is delivered a second time.
    DeidWorker(settings, group_id="replay-group").run(idle_exit_seconds=3)

    with connect(settings) as connection:
        second = dict(connection.execute("SELECT raw_id, content FROM deid.resources").fetchall())
    assert second == first
    assert len(second) == len(raw_ids)
    events = read_topic(settings, FHIR_DEID)
    assert len(events) == 2 * len(raw_ids)
    by_raw: dict[int, list[Any]] = {}
    for event in events:
        by_raw.setdefault(event.payload["raw_id"], []).append(event.payload["resource"])
    assert all(first_copy == second_copy for first_copy, second_copy in by_raw.values())


def test_failures_go_to_dead_letter_once(settings: Settings) -> None:
    bad = {
        "resourceType": "Observation",
        "id": "bad-1",
        "status": "final",
        "code": {"text": "pulse"},
        "subject": {"reference": "Patient/p-1"},
        "modifierExtension": [{"url": "http://example.org/negated", "valueBoolean": True}],
    }
    unknown_type = {
        "resourceType": "DocumentReference",
        "id": "doc-1",
        "status": "current",
        "content": [{"attachment": {"title": "letter"}}],
    }
    good = {
        "resourceType": "Observation",
        "id": "good-1",
        "status": "final",
        "code": {"text": "pulse"},
        "subject": {"reference": "Patient/p-1"},
        "effectiveDateTime": "2015-02-02T08:00:00+00:00",
    }
    load_raw(settings, [bad, unknown_type, good], batch_id="b-1")

    DeidWorker(settings).run(idle_exit_seconds=3)
    DeidWorker(settings, group_id="replay-group").run(idle_exit_seconds=3)

    assert count(settings, "SELECT count(*) FROM deid.resources") == 1
    assert count(settings, "SELECT count(*) FROM ops.dead_letter WHERE stage = 'deid'") == 1
    with connect(settings) as connection:
        reason, details = connection.execute(
            "SELECT reason, details FROM ops.dead_letter WHERE stage = 'deid'"
        ).fetchone()
        dropped = connection.execute("SELECT batch_id, resource_type, dropped FROM deid.dropped_types").fetchall()
    assert "modifierExtension" in reason
    assert details["resource_type"] == "Observation"
    assert dropped == [("b-1", "DocumentReference", 1)]
    dead_events = read_topic(settings, DEAD_LETTER)
    assert len(dead_events) == 2  # one per delivery of the failing event
    assert all("modifierExtension" in event.payload["reason"] for event in dead_events)
    assert all("bad-1" not in event.to_bytes().decode() for event in dead_events)


def test_killed_worker_resumes_without_duplicates(settings: Settings, tmp_path: Path) -> None:
    raw_ids = load_raw(settings, synthea_entries(4))
    environment = {
        **os.environ,
        "HEALTHFLOW_PG_DATABASE": settings.pg_database,
        "HEALTHFLOW_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "HEALTHFLOW_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "HEALTHFLOW_DEID_BATCH_SIZE": "50",
        "HEALTHFLOW_STATE_DIR": str(tmp_path),
    }
    command = [str(Path(sys.executable).with_name("healthflow")), "deid", "run", "--idle-exit", "5"]
    worker = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while count(settings, "SELECT count(*) FROM deid.resources") < len(raw_ids) // 3:
            assert time.monotonic() < deadline, "the worker stored nothing within 120 s"
            assert worker.poll() is None, "the worker exited before it was killed"
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    stored_at_kill = count(settings, "SELECT count(*) FROM deid.resources")
    assert 0 < stored_at_kill < len(raw_ids)

    restarted = subprocess.run(command, env=environment, capture_output=True, timeout=600, check=False)

    assert restarted.returncode == 0, restarted.stderr.decode()[-2000:]
    assert count(settings, "SELECT count(*) FROM deid.resources") == len(raw_ids)
    assert count(settings, "SELECT count(DISTINCT raw_id) FROM deid.resources") == len(raw_ids)
    assert count(settings, "SELECT count(*) FROM ops.dead_letter") == 0
    published = {event.payload["raw_id"] for event in read_topic(settings, FHIR_DEID)}
    assert published == set(raw_ids)
