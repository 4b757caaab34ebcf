"""The privacy scan against the local stack: clean after DeID, and every planted leak is found."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg.types.json import Jsonb

from healthflow.db import connect
from healthflow.events import FHIR_DEID, DeliveryTracker, flush_or_raise, make_producer
from healthflow.settings import Settings
from ingestion.deid.scan import run_scan
from ingestion.deid.worker import DeidWorker
from tests.integration.test_deid_worker import load_raw, synthea_entries

pytestmark = pytest.mark.integration


@pytest.fixture
def scan_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The test's settings, with its own state folder and no shared MLflow database to search."""
    (tmp_path / "logs").mkdir()
    return settings.model_copy(update={"state_dir": tmp_path, "pg_mlflow_database": settings.pg_database})


def deidentified_patient(settings: Settings) -> dict:
    resources = synthea_entries(1)
    load_raw(settings, resources)
    DeidWorker(settings).run(idle_exit_seconds=3)
    return next(resource for resource in resources if resource["resourceType"] == "Patient")


def test_scan_finds_nothing_after_deid(scan_settings: Settings) -> None:
    deidentified_patient(scan_settings)
    (scan_settings.state_dir / "logs" / "worker.log").write_text("deid batch: 180 events\n", encoding="utf-8")

    report = run_scan(scan_settings)

    assert report.hits == []
    assert report.searched_for["original id"] > 100
    assert report.searched_for["name"] >= 2
    assert report.searched_for["birth dates"] == 1


def test_scan_reports_each_planted_leak(scan_settings: Settings) -> None:
    patient = deidentified_patient(scan_settings)
    ssn = next(item["value"] for item in patient["identifier"] if item["system"].endswith("us-ssn"))
    name = f"{patient['name'][0]['given'][0]} {patient['name'][0]['family']}"
    with connect(scan_settings) as connection:
        connection.execute(
            "INSERT INTO ops.dead_letter (stage, source, reason, details) VALUES ('test', 'test', %s, %s)",
            (f"bad resource of {name}", Jsonb({})),
        )
        connection.execute(
            "UPDATE deid.resources SET content = jsonb_set(content, '{birthDate}', to_jsonb(%s::text))"
            " WHERE resource_type = 'Patient'",
            (patient["birthDate"],),
        )
        connection.commit()
    (scan_settings.state_dir / "logs" / "worker.log").write_text(f"line one\nssn {ssn}\n", encoding="utf-8")
    producer = make_producer(scan_settings)
    tracker = DeliveryTracker()
    producer.produce(
        scan_settings.topic(FHIR_DEID), key=b"k", value=f'{{"id": "{patient["id"]}"}}'.encode(), on_delivery=tracker
    )
    flush_or_raise(producer, tracker)

    hits = [str(hit) for hit in run_scan(scan_settings).hits]

    assert any("table ops.dead_letter" in hit and hit.endswith(": name") for hit in hits)
    assert any("deid.resources" in hit and "birth date" in hit for hit in hits)
    assert any("worker.log, line 2: identifier value" in hit for hit in hits)
    assert any(f"topic {scan_settings.topic(FHIR_DEID)}" in hit and "original id" in hit for hit in hits)
    assert all(ssn not in hit and name not in hit and patient["id"] not in hit for hit in hits)


def test_scan_command_exits_1_on_hit(scan_settings: Settings) -> None:
    patient = deidentified_patient(scan_settings)
    (scan_settings.state_dir / "logs" / "leak.log").write_text(f"patient {patient['id']}\n", encoding="utf-8")
    environment = {
        **os.environ,
        "HEALTHFLOW_PG_DATABASE": scan_settings.pg_database,
        "HEALTHFLOW_PG_MLFLOW_DATABASE": scan_settings.pg_database,
        "HEALTHFLOW_PG_FEAST_DATABASE": scan_settings.pg_feast_database,
        "HEALTHFLOW_KAFKA_TOPIC_PREFIX": scan_settings.kafka_topic_prefix,
        "HEALTHFLOW_STATE_DIR": str(scan_settings.state_dir),
        "HEALTHFLOW_LOG_LEVEL": "WARNING",
    }
    command = [str(Path(sys.executable).with_name("healthflow")), "privacy", "scan"]

    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300, check=False)

    assert result.returncode == 1, result.stderr[-2000:]
    assert "leak.log, line 1: original id" in result.stdout
    assert patient["id"] not in result.stdout + result.stderr
