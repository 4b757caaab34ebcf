"""`healthflow ingest PATH...` as a user runs it: summary, exit status, stored rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from healthflow.db import connect

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
HEALTHFLOW = str(Path(sys.executable).parent / "healthflow")


def run_ingest(settings, *args):
    env = dict(os.environ) | {
        "HEALTHFLOW_PG_DATABASE": settings.pg_database,
        "HEALTHFLOW_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "HEALTHFLOW_INGEST_VALIDATION_WORKERS": "0",
        "HEALTHFLOW_LOG_FORMAT": "text",
    }
    return subprocess.run(
        [HEALTHFLOW, "ingest", *args, "--no-progress"], env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_prints_summary_and_exits_3_on_rejections(settings):
    result = run_ingest(settings, str(FIXTURES / "malformed_date.json"), str(FIXTURES / "truncated.*"))
    assert result.returncode == 3, result.stderr
    assert "accepted 4, unchanged 0, rejected 2" in result.stdout
    assert "rejected 1: Patient.birthDate: Date value string does not match spec regex" in result.stdout
    with connect(settings) as connection:
        assert connection.execute("SELECT count(*) FROM raw.resources").fetchone()[0] == 4


def test_cli_second_run_is_unchanged(settings):
    first = run_ingest(settings, str(FIXTURES / "transaction_urn.json"))
    second = run_ingest(settings, str(FIXTURES / "transaction_urn.json"))
    assert first.returncode == 0, first.stderr
    assert "accepted 3, unchanged 0, rejected 0" in first.stdout
    assert "accepted 0, unchanged 3, rejected 0" in second.stdout


def test_cli_missing_path_is_usage_error(settings):
    result = run_ingest(settings, str(FIXTURES / "no-such-file.json"))
    assert result.returncode == 2
    assert "no file or folder matches" in result.stderr
