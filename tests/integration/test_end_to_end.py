"""The whole platform on the repository's sample, through the real services, as a user runs it.

Each stage is the ``healthflow`` command, run as a subprocess against this test's own database, Feast
database and topic prefix. The checks follow the numbers from one stage to the next.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from healthflow.db import connect
from healthflow.settings import Settings
from tests.integration.serve_support import free_port, running_server, server_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "synthea"


def healthflow(environment: dict[str, str], *arguments: str, allowed: tuple[int, ...] = (0,)) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "healthflow.cli", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=900,
        check=False,
    )
    assert completed.returncode in allowed, (
        f"`healthflow {' '.join(arguments)}` exited {completed.returncode}:\n{completed.stderr[-3000:]}"
    )
    return completed.stdout


def sample_counts() -> tuple[set[tuple[str, str]], int, list[str]]:
    """Return the distinct (type, id) pairs in the sample, its inpatient encounter count and the ids of the
    Patients who have an inpatient stay."""
    resources: set[tuple[str, str]] = set()
    inpatient = 0
    patients_with_stays = []
    for path in sorted(SAMPLE.glob("*.json.gz")):
        bundle = json.loads(gzip.decompress(path.read_bytes()))
        patient_id = None
        stays = 0
        for entry in bundle["entry"]:
            resource = entry["resource"]
            resources.add((resource["resourceType"], resource["id"]))
            if resource["resourceType"] == "Encounter" and resource.get("class", {}).get("code") == "IMP":
                stays += 1
            if resource["resourceType"] == "Patient":
                patient_id = resource["id"]
        inpatient += stays
        if stays and patient_id:
            patients_with_stays.append(patient_id)
    return resources, inpatient, patients_with_stays


def count(settings: Settings, query: str) -> int:
    with connect(settings) as connection:
        return int(connection.execute(query).fetchone()[0])


def test_sample_flows_through_every_stage(settings: Settings, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    model_name = f"e2e_{uuid.uuid4().hex[:8]}"
    state_dir = tmp_path / "state"
    environment = server_environment(
        settings,
        STATE_DIR=str(state_dir),
        SERVE_MODEL_NAME=model_name,
        SERVE_FEATURE_SERVICE="readmission_fhir_v1",
        DEID_PROCESSES="0",
    )
    resources, inpatient_encounters, patient_ids = sample_counts()
    assert len(patient_ids) >= settings.monitor_min_window_rows

    # Ingestion: every distinct resource of the files is stored once.
    healthflow(environment, "ingest", str(SAMPLE), "--no-progress")
    stored = count(settings, "SELECT count(DISTINCT (resource_type, resource_id)) FROM raw.resources")
    assert stored == len(resources)
    assert count(settings, "SELECT count(*) FROM raw.rejected") == 0

    # De-identification: each raw row is either de-identified or dropped by type, never lost.
    healthflow(environment, "deid", "run", "--idle-exit", "10")
    deidentified = count(settings, "SELECT count(*) FROM deid.resources")
    dropped = count(settings, "SELECT count(*) FROM deid.dropped_resources")
    assert deidentified + dropped == count(settings, "SELECT count(*) FROM raw.resources")
    assert deidentified > 0
    assert count(settings, "SELECT count(*) FROM ops.dead_letter WHERE stage = 'deid'") == 0

    # Featurizer: one index stay per inpatient encounter.
    healthflow(environment, "features", "run", "--idle-exit", "5")
    stays = count(settings, "SELECT count(DISTINCT (patient_pseudonym, stay_id)) FROM features.stays")
    assert stays == inpatient_encounters

    healthflow(environment, "features", "apply")
    healthflow(environment, "features", "materialize")

    # Training: a registered version that becomes champion (the first version of a new model has no rival).
    healthflow(
        environment,
        "train",
        "--feature-service",
        "readmission_fhir_v1",
        "--model-name",
        model_name,
        "--promote",
        allowed=(0, 3),
    )
    client = MlflowClient(settings.mlflow_tracking_uri)
    champion = client.get_model_version_by_alias(model_name, "champion")
    assert champion.version == "1"

    # Serving: a score by real patient id, with a freshly minted token.
    token = healthflow(environment, "token", "create", "--scope", "score:read", "--ttl", "600").strip()
    port = free_port()
    with running_server(
        [sys.executable, "-m", "healthflow.cli", "serve", "--port", str(port)],
        environment,
        tmp_path / "serve.log",
        wait_for="/readyz",
    ) as base_url:
        scores = []
        for patient_id in patient_ids:
            response = httpx.post(
                f"{base_url}/v1/score",
                json={"patient_id": patient_id},
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            assert response.status_code == 200, response.text
            scores.append(response.json())
    for body in scores:
        assert 0.0 <= body["probability"] <= 1.0
        assert body["model"]["version"] == "1"
    assert count(settings, "SELECT count(*) FROM serving.predictions") == len(patient_ids)

    # Monitoring: a report is written for the window that contains those scores.
    healthflow(environment, "monitor", "run", "--window", "1d", "--model-name", model_name, "--no-publish")
    reports = list((state_dir / "reports").rglob("*.html"))
    assert reports

    # Privacy: no identifier from the raw zone anywhere downstream.
    healthflow(environment, "privacy", "scan")
