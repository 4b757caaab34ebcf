from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthflow.cli.main import app

SYNTHEA = Path(__file__).parents[2] / ".." / "shared" / "data" / "synthea-r4"


def first_bundle() -> Path:
    files = sorted(path for path in SYNTHEA.glob("*.json.gz") if "Information" not in path.name)
    if not files:
        pytest.skip(f"Synthea data not found in {SYNTHEA}")
    return files[0]


def test_file_command_writes_collection_bundle(tmp_path: Path) -> None:
    source = first_bundle()
    target = tmp_path / "out.json"

    result = CliRunner().invoke(app, ["deid", "file", str(source), str(target)])

    assert result.exit_code == 0, result.output
    with gzip.open(source) as handle:
        entries = json.load(handle)["entry"]
    bundle = json.loads(target.read_text(encoding="utf-8"))
    assert bundle["type"] == "collection"
    assert len(bundle["entry"]) == len(entries)
    counts = json.loads(result.stdout)
    assert counts["read"] == counts["written"]
    assert counts["failed"] == 0


def test_file_command_reads_and_writes_ndjson(tmp_path: Path) -> None:
    with gzip.open(first_bundle()) as handle:
        resources = [entry["resource"] for entry in json.load(handle)["entry"]][:40]
    source = tmp_path / "in.ndjson"
    source.write_text("".join(json.dumps(resource) + "\n" for resource in resources), encoding="utf-8")
    target = tmp_path / "out.ndjson"

    result = CliRunner().invoke(app, ["deid", "file", str(source), str(target)])

    assert result.exit_code == 0, result.output
    lines = target.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(resources)
    assert all(json.loads(line)["meta"]["security"][0]["code"] == "PSEUDED" for line in lines)


def test_file_command_exits_1_when_resource_fails(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    bad = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "x"},
        "effectiveDateTime": "2019-02-30",
    }
    source.write_text(json.dumps(bad) + "\n", encoding="utf-8")

    result = CliRunner().invoke(app, ["deid", "file", str(source), str(tmp_path / "out.ndjson")])

    assert result.exit_code == 1
    assert "could not be de-identified" in result.output
    assert (tmp_path / "out.ndjson").read_text(encoding="utf-8") == ""


def test_file_command_rejects_invalid_json(tmp_path: Path) -> None:
    source = tmp_path / "in.json"
    source.write_text("{not json", encoding="utf-8")

    result = CliRunner().invoke(app, ["deid", "file", str(source), str(tmp_path / "out.json")])

    assert result.exit_code == 2
    assert "not valid JSON" in result.output
