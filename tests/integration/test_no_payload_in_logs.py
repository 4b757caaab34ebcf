"""A FHIR payload carried through ingestion, de-identification and the featurizer never reaches the log."""

from __future__ import annotations

import copy
import gzip
import json
import logging
from pathlib import Path

import pytest

from healthflow.logs import configure_logging
from healthflow.settings import Settings

pytestmark = pytest.mark.integration

SAMPLE_BUNDLES = Path(__file__).resolve().parents[2] / "data" / "sample" / "synthea"

# Values that exist only in this test's input, so any occurrence in the log comes from the payload.
MARKERS = {
    "family name": "Zqxwertylogname",
    "given name": "Ofeliquatre",
    "identifier value": "MRN-LOG-771234",
    "phone number": "555-0199-7788",
    "address line": "42 Quietlogstreet",
}


def marked_bundle() -> dict:
    """Return a sample transaction Bundle whose Patient carries the markers."""
    path = sorted(SAMPLE_BUNDLES.glob("*.json.gz"))[0]
    bundle = json.loads(gzip.decompress(path.read_bytes()))
    patient = next(entry["resource"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == "Patient")
    patient["name"] = [{"family": MARKERS["family name"], "given": [MARKERS["given name"]]}]
    patient["identifier"] = [{"system": "urn:oid:1.2.3.4", "value": MARKERS["identifier value"]}]
    patient["telecom"] = [{"system": "phone", "value": MARKERS["phone number"]}]
    patient["address"] = [{"line": [MARKERS["address line"]], "city": "Lyon", "country": "FR"}]
    return bundle


def rejected_bundle(valid: dict) -> dict:
    """Return a collection Bundle with one invalid resource that carries the markers in free text."""
    patient = copy.deepcopy(next(e["resource"] for e in valid["entry"] if e["resource"]["resourceType"] == "Patient"))
    patient["id"] = "log-test-invalid"
    patient["birthDate"] = f"not-a-date {MARKERS['family name']}"
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient}]}


@pytest.fixture
def log_file(tmp_path: Path):
    path = tmp_path / "stages.log"
    configure_logging(level="DEBUG", log_format="json", log_file=path)
    yield path
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.WARNING)


def test_payload_never_logged_across_stages(settings: Settings, tmp_path: Path, log_file: Path) -> None:
    from ingestion.deid.worker import DeidWorker
    from ingestion.featurizer.worker import run_worker
    from ingestion.fhir.pipeline import ingest_sources
    from ingestion.fhir.sources import FileSource

    valid = marked_bundle()
    inputs = [tmp_path / "valid.json", tmp_path / "invalid.json"]
    inputs[0].write_text(json.dumps(valid), encoding="utf-8")
    inputs[1].write_text(json.dumps(rejected_bundle(valid)), encoding="utf-8")
    in_process = settings.model_copy(update={"deid_processes": 0})

    summary = ingest_sources(
        in_process, [FileSource(inputs, max_bytes=settings.ingest_max_input_bytes)], source_ref="log-test"
    )
    deid_stats = DeidWorker(in_process).run(idle_exit_seconds=5)
    feature_counts = run_worker(in_process, max_idle_polls=3)

    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log_file.read_text(encoding="utf-8")
    loggers = {json.loads(line)["logger"] for line in text.splitlines() if line.startswith("{")}

    assert summary.accepted > 0
    assert summary.rejected == 1
    assert deid_stats.stored > 0
    assert feature_counts is not None
    assert any(name.startswith("ingestion.fhir") for name in loggers)
    assert any(name.startswith("ingestion.deid") for name in loggers)
    assert any(name.startswith("ingestion.featurizer") for name in loggers)
    for what, value in MARKERS.items():
        assert value not in text, f"the {what} from the FHIR payload reached the log"
