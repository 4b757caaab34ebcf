"""`monitor run` on the real stack: prediction log and labels in PostgreSQL, reports, MLflow, audit.alerts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from healthflow.db import connect
from healthflow.events import ALERTS, Envelope, make_consumer
from monitoring.reference import FrameReferenceSource, ModelVersionRef
from monitoring.run import run_monitoring
from monitoring.simulate import Shift, shift_population
from monitoring.window import window_ending

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BANDS = ["18-44", "45-64", "65-74", "75-89", "90+"]
FEATURES = ["age_band", "sex", "length_of_stay_days", "charlson_index", "emergency_admission"]


def make_population(rows: int, seed: int) -> pd.DataFrame:
    """Generated stays with pseudonym-like keys, features, audit attributes and a label that depends on them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "patient_pseudonym": [f"p{seed}-{index}" for index in range(rows)],
            "stay_id": [f"s{seed}-{index}" for index in range(rows)],
            "age_band": rng.choice(BANDS, rows, p=[0.3, 0.3, 0.2, 0.15, 0.05]),
            "sex": rng.choice(["female", "male"], rows),
            "length_of_stay_days": rng.gamma(2.0, 2.0, rows).round(1),
            "charlson_index": rng.poisson(2.0, rows),
            "emergency_admission": rng.integers(0, 2, rows),
            "race": rng.choice(["white", "black", "asian"], rows, p=[0.6, 0.3, 0.1]),
            "ethnicity": rng.choice(["hispanic", "not-hispanic"], rows),
        }
    )
    risk = 1 / (1 + np.exp(-(-2.0 + 0.3 * frame["charlson_index"] + 0.1 * frame["length_of_stay_days"])))
    frame["label"] = (rng.random(rows) < risk).astype(int)
    frame["probability"] = np.clip(risk + rng.normal(0, 0.05, rows), 0.001, 0.999)
    return frame


def seed_window(
    settings, frame: pd.DataFrame, *, model: ModelVersionRef, end: datetime, label_known_at: datetime
) -> None:
    """Write ``frame`` as scores in the day before ``end``, and its labels and attributes as UCI encounters."""
    step = timedelta(hours=20) / len(frame)
    with connect(settings) as connection, connection.transaction(), connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO features.uci_encounters (stay_id, patient_pseudonym, event_timestamp, label,"
            " label_available_at, encounter_rank, encounter_order, features, audit, import_id)"
            " VALUES (%s, %s, %s, %s, %s, 1, 1, '{}', %s, 'test')",
            [
                (
                    row.stay_id,
                    row.patient_pseudonym,
                    end - timedelta(days=40),
                    int(row.label),
                    label_known_at,
                    json.dumps(
                        {"race": row.race, "ethnicity": row.ethnicity, "sex": row.sex, "age_band": row.age_band}
                    ),
                )
                for row in frame.itertuples()
            ],
        )
        cursor.executemany(
            "INSERT INTO serving.predictions (scored_at, patient_pseudonym, stay_id, feature_service, model_name,"
            " model_version, run_id, probability, risk_level, features)"
            " VALUES (%s, %s, %s, 'test', %s, %s, %s, %s, %s, %s)",
            [
                (
                    end - timedelta(hours=21) + step * index,
                    row["patient_pseudonym"],
                    row["stay_id"],
                    model.name,
                    model.version,
                    model.run_id,
                    float(row["probability"]),
                    "high" if row["probability"] >= 0.6 else "medium" if row["probability"] >= 0.3 else "low",
                    orjson.dumps({name: row[name] for name in FEATURES}, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                )
                for index, row in enumerate(frame.to_dict("records"))
            ],
        )


@pytest.fixture
def monitor_settings(settings, tmp_path):
    return settings.model_copy(
        update={"state_dir": tmp_path / "state", "monitor_experiment": f"test-monitoring-{uuid.uuid4().hex[:8]}"}
    )


def read_alert_events(settings, expected: int, timeout_seconds: float = 30.0) -> list[Envelope]:
    consumer = make_consumer(settings, f"test-{uuid.uuid4().hex[:8]}", [ALERTS])
    events = []
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_seconds)
    try:
        while len(events) < expected and datetime.now(UTC) < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                events.append(Envelope.from_bytes(message.value()))
    finally:
        consumer.close()
    return events


def test_monitor_run_shifted_window_records_drift_alert(monitor_settings):
    settings = monitor_settings
    model = ModelVersionRef(name=f"test-model-{uuid.uuid4().hex[:6]}", version="1", run_id="")
    reference = make_population(1500, seed=1)
    end = datetime.now(UTC)
    current = shift_population(make_population(400, seed=2), shift=Shift(age_band_steps=2, stay_factor=1.8))
    seed_window(settings, current, model=model, end=end, label_known_at=end + timedelta(days=20))

    outcome = run_monitoring(
        settings,
        window=window_ending(timedelta(days=1), end=end),
        model_name=model.name,
        model_version=None,
        source=FrameReferenceSource(reference, model=model),
    )

    assert sorted(outcome.audit.drift.drifted_columns) == ["age_band", "length_of_stay_days"]
    assert "drift" in [alert.kind for alert in outcome.alerts]
    assert outcome.audit.drift.labels_known is False
    folder = Path(outcome.report_dir)
    assert (folder / "drift.html").stat().st_size > 10_000
    assert json.loads((folder / "drift.json").read_text())["metrics"]
    assert not (folder / "classification.html").exists()

    with connect(settings) as connection:
        report = connection.execute(
            "SELECT drift_share, drifted_columns, labels_known, mlflow_run_id FROM monitoring.reports WHERE id = %s",
            (outcome.report_id,),
        ).fetchone()
        drifted = connection.execute(
            "SELECT column_name FROM monitoring.drift_columns WHERE report_id = %s AND drifted ORDER BY 1",
            (outcome.report_id,),
        ).fetchall()
        race_groups = connection.execute(
            "SELECT group_value FROM monitoring.fairness WHERE report_id = %s AND attribute = 'race' ORDER BY 1",
            (outcome.report_id,),
        ).fetchall()
        alerts = connection.execute(
            "SELECT kind, published FROM monitoring.alerts WHERE report_id = %s", (outcome.report_id,)
        ).fetchall()
    assert report[0] == pytest.approx(2 / 5)
    assert sorted(report[1]) == ["age_band", "length_of_stay_days"]
    assert report[2] is False
    assert report[3] == outcome.mlflow_run_id
    assert [row[0] for row in drifted] == ["age_band", "length_of_stay_days"]
    assert [row[0] for row in race_groups] == ["asian", "black", "white"]
    assert ("drift", True) in alerts

    events = read_alert_events(settings, expected=len(outcome.alerts))
    assert len(events) == len(outcome.alerts)
    assert {event.payload["kind"] for event in events} == {alert.kind for alert in outcome.alerts}
    assert all(event.payload["report_id"] == outcome.report_id for event in events)


def test_monitor_run_logs_to_mlflow(monitor_settings):
    from mlflow import MlflowClient

    settings = monitor_settings
    model = ModelVersionRef(name=f"test-model-{uuid.uuid4().hex[:6]}", version="1", run_id="")
    end = datetime.now(UTC)
    seed_window(settings, make_population(300, seed=3), model=model, end=end, label_known_at=end + timedelta(days=20))

    outcome = run_monitoring(
        settings,
        window=window_ending(timedelta(days=1), end=end),
        model_name=model.name,
        model_version=None,
        source=FrameReferenceSource(make_population(1500, seed=1), model=model),
        publish=False,
    )

    assert outcome.mlflow_run_id is not None
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    run = client.get_run(outcome.mlflow_run_id)
    assert run.data.tags["healthflow.model_name"] == model.name
    assert run.data.tags["healthflow.report_id"] == str(outcome.report_id)
    assert run.data.metrics["drift_share"] == outcome.audit.drift.drift_share
    artifacts = {item.path for item in client.list_artifacts(outcome.mlflow_run_id, "monitoring")}
    assert "monitoring/drift.html" in artifacts
    assert "monitoring/fairness.json" in artifacts


def test_monitor_run_with_known_labels_adds_classification(monitor_settings):
    settings = monitor_settings
    model = ModelVersionRef(name=f"test-model-{uuid.uuid4().hex[:6]}", version="1", run_id="")
    end = datetime.now(UTC)
    seed_window(settings, make_population(400, seed=4), model=model, end=end, label_known_at=end - timedelta(days=1))

    outcome = run_monitoring(
        settings,
        window=window_ending(timedelta(days=1), end=end),
        model_name=model.name,
        model_version=None,
        source=FrameReferenceSource(make_population(1500, seed=1), model=model),
        publish=False,
    )

    assert outcome.audit.drift.labels_known is True
    assert outcome.audit.labelled_rows == 400
    assert (Path(outcome.report_dir) / "classification.html").is_file()
    female = next(
        group for group in outcome.audit.fairness.groups if group.attribute == "sex" and group.group == "female"
    )
    assert female.metrics["tpr"] is not None
    assert female.metrics["auroc"] is not None
    assert outcome.audit.drift.drifted_columns == []


def register_champion(settings, reference: pd.DataFrame, name: str, tmp_path: Path) -> ModelVersionRef:
    """Register a model version whose run holds ``reference`` at the reference artifact path; alias it champion."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    experiment_id = client.create_experiment(f"test-reference-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment_id).info.run_id
    artifact = Path(settings.monitor_reference_artifact)
    local = tmp_path / artifact.name
    reference.to_parquet(local)
    client.log_artifact(run_id, str(local), artifact_path=str(artifact.parent))
    client.set_terminated(run_id)
    client.create_registered_model(name)
    version = client.create_model_version(name, source=f"runs:/{run_id}/{artifact.parent}", run_id=run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    return ModelVersionRef(name=name, version=str(version.version), run_id=run_id)


def cli_environment(settings) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("HEALTHFLOW_")}
    environment.update(
        {
            "HEALTHFLOW_PG_DATABASE": settings.pg_database,
            "HEALTHFLOW_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
            "HEALTHFLOW_STATE_DIR": str(settings.state_dir),
            "HEALTHFLOW_MONITOR_EXPERIMENT": settings.monitor_experiment,
            "HEALTHFLOW_PG_PORT": str(settings.pg_port),
            "HEALTHFLOW_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
            "HEALTHFLOW_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "HEALTHFLOW_LOG_FORMAT": "text",
        }
    )
    return environment


def test_monitor_cli_fail_on_alert_exits_nonzero(monitor_settings, tmp_path):
    settings = monitor_settings
    model = register_champion(settings, make_population(1500, seed=1), f"test-cli-{uuid.uuid4().hex[:6]}", tmp_path)
    end = datetime.now(UTC)
    shifted = shift_population(make_population(300, seed=5), shift=Shift(age_band_steps=2, stay_factor=1.8))
    seed_window(settings, shifted, model=model, end=end, label_known_at=end + timedelta(days=20))
    command = [
        str(Path(sys.executable).parent / "healthflow"),
        "monitor",
        "run",
        "--window",
        "1d",
        "--model-name",
        model.name,
    ]

    failing = subprocess.run(
        [*command, "--fail-on-alert"], env=cli_environment(settings), capture_output=True, text=True, timeout=300
    )
    passing = subprocess.run(
        [*command, "--no-publish"], env=cli_environment(settings), capture_output=True, text=True, timeout=300
    )

    assert failing.returncode == 3, failing.stderr[-2000:]
    assert "ALERT drift" in failing.stdout
    assert f"{model.name} version {model.version}" in failing.stdout
    assert passing.returncode == 0, passing.stderr[-2000:]
