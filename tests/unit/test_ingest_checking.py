"""Parsing, R4 validation, Bundle semantics and OperationOutcome text, without services."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ingestion.fhir.checking import check_submission
from ingestion.fhir.outcome import operation_outcome, reason_of
from ingestion.fhir.sources import NdjsonSource, Submission, expand_paths, sources_for_paths, submission_of

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
MAX_BYTES = 4 * 1024 * 1024


def check_file(name: str):
    (source,) = sources_for_paths([str(FIXTURES / name)], max_bytes=MAX_BYTES)
    return [check_submission(submission) for submission in source.submissions()]


def test_invalid_json_is_rejected_with_position():
    (checked,) = check_file("invalid_json.json")
    assert checked.candidates == []
    (rejection,) = checked.rejections
    assert rejection.issues[0].code == "structure"
    assert rejection.issues[0].problem.startswith("invalid JSON")
    assert "broken-json" not in rejection.issues[0].reason


def test_truncated_ndjson_line_rejected_alone():
    results = check_file("truncated.ndjson")
    accepted = [c.resource_id for checked in results for c in checked.candidates]
    rejected = [r for checked in results for r in checked.rejections]
    assert accepted == ["nd-obs-1", "nd-obs-2", "nd-obs-4"]
    assert len(rejected) == 1
    assert rejected[0].source_ref.endswith("#line=3")


def test_unknown_resource_type_rejected_siblings_kept():
    (checked,) = check_file("unknown_type.json")
    assert sorted(c.resource_id for c in checked.candidates) == ["ut-cond", "ut-patient"]
    (rejection,) = checked.rejections
    assert rejection.entry_index == 1
    assert rejection.issues[0].code == "not-supported"
    assert rejection.issues[0].expression == "Bundle.entry[1].resource.resourceType"
    assert "Unicorn" not in rejection.issues[0].reason


def test_malformed_date_names_element_not_value():
    (checked,) = check_file("malformed_date.json")
    assert [c.resource_id for c in checked.candidates] == ["md-good"]
    (issue,) = checked.rejections[0].issues
    assert issue.expression == "Patient.birthDate"
    assert issue.code == "value"
    assert "1961-13-45" not in issue.reason
    assert "Patient/md-bad" in issue.diagnostics


def test_missing_required_element():
    (checked,) = check_file("missing_required.json")
    assert [c.resource_id for c in checked.candidates] == ["mr-ok"]
    (issue,) = checked.rejections[0].issues
    assert (issue.code, issue.expression) == ("required", "Observation.status")


def test_bundle_without_type_rejected_whole():
    (checked,) = check_file("bundle_without_type.json")
    assert checked.candidates == []
    (rejection,) = checked.rejections
    assert rejection.resource_type == "Bundle"
    assert rejection.issues[0].expression == "Bundle.type"
    assert rejection.issues[0].code == "required"


def test_unknown_element_rejected():
    (checked,) = check_file("unknown_element.json")
    (issue,) = checked.rejections[0].issues
    assert (issue.code, issue.expression, issue.problem) == ("structure", "Patient.favouriteColour", "unknown element")
    assert "green" not in issue.reason


def test_transaction_is_all_or_nothing():
    (checked,) = check_file("transaction_invalid.json")
    assert checked.candidates == []
    (rejection,) = checked.rejections
    assert rejection.resource_type == "Bundle"
    expressions = {issue.expression for issue in rejection.issues}
    assert expressions & {"Encounter.status", "Encounter.class"}


def test_transaction_links_urn_uuid_to_patient():
    (checked,) = check_file("transaction_urn.json")
    by_type = {c.resource_type: c for c in checked.candidates}
    assert by_type["Encounter"].patient_id == "tu-patient"
    assert by_type["Observation"].patient_id == "tu-patient"
    assert by_type["Patient"].patient_id == "tu-patient"


def test_missing_id_takes_urn_uuid():
    (checked,) = check_file("transaction_urn.json")
    observation = next(c for c in checked.candidates if c.resource_type == "Observation")
    assert observation.resource_id == "9a3f0c2e-0000-4000-8000-000000000003"
    assert json.loads(observation.content_json)["id"] == observation.resource_id


def test_oversized_input_is_too_costly():
    data = b'{"resourceType": "Bundle", "type": "collection", "entry": []}' + b" " * 2000
    checked = check_submission(submission_of(data, source_ref="big", max_bytes=1024))
    (rejection,) = checked.rejections
    assert rejection.issues[0].code == "too-costly"


def test_same_content_same_hash_new_content_new_hash():
    resource = {"resourceType": "Patient", "id": "h1", "gender": "female"}
    first = check_submission(Submission("a", json.dumps(resource).encode())).candidates[0]
    reordered = check_submission(Submission("b", json.dumps(dict(reversed(resource.items()))).encode())).candidates[0]
    changed = check_submission(Submission("c", json.dumps({**resource, "gender": "male"}).encode())).candidates[0]
    assert first.content_hash == reordered.content_hash
    assert first.content_hash != changed.content_hash


def test_nul_character_rejected():
    checked = check_submission(Submission("n", b'{"resourceType": "Patient", "id": "n1", "gender": "ma\\u0000le"}'))
    assert checked.candidates == []
    assert "NUL" in checked.rejections[0].issues[0].problem


def test_reason_lists_paths_without_values():
    checked = check_submission(Submission("r", b'{"resourceType": "Patient", "id": "r1", "birthDate": "2001-02-30x"}'))
    reason = reason_of(checked.rejections[0].issues)
    outcome = operation_outcome(checked.rejections[0].issues)
    assert reason.startswith("Patient.birthDate:")
    assert "2001-02-30x" not in reason
    assert outcome["issue"][0]["expression"] == ["Patient.birthDate"]


def test_batch_entries_without_resource_are_skipped():
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": "Patient/1"}}]}
    checked = check_submission(Submission("s", json.dumps(bundle).encode()))
    assert checked.skipped_entries == [0]
    assert checked.rejections == []


def test_expand_paths_folders_and_globs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.json").write_text("{}")
    (tmp_path / "a" / "two.ndjson.gz").write_bytes(gzip.compress(b"{}\n"))
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(b"{}"))
    found = expand_paths([str(tmp_path / "a"), str(tmp_path / "*.json.gz")])
    assert [path.name for path in found] == ["one.json", "two.ndjson.gz", "b.json.gz"]
    with pytest.raises(FileNotFoundError):
        expand_paths([str(tmp_path / "missing")])


def test_gzipped_ndjson_lines_numbered(tmp_path):
    path = tmp_path / "Patient.ndjson.gz"
    path.write_bytes(gzip.compress(b'{"resourceType":"Patient","id":"g1"}\n\n{"resourceType":"Patient","id":"g2"}\n'))
    submissions = list(NdjsonSource([path], max_bytes=MAX_BYTES).submissions())
    assert [s.source_ref.rsplit("#", 1)[1] for s in submissions] == ["line=1", "line=3"]


def test_impossible_date_is_value_issue():
    checked = check_submission(Submission("d", b'{"resourceType": "Patient", "id": "d1", "birthDate": "1970-02-30"}'))
    (issue,) = checked.rejections[0].issues
    assert (issue.code, issue.expression) == ("value", "Patient.birthDate")
    assert "1970-02-30" not in issue.reason


def test_wrong_json_type_is_structure_issue():
    checked = check_submission(Submission("w", b'{"resourceType": "Patient", "id": "w1", "name": {"text": 1}}'))
    issue = checked.rejections[0].issues[0]
    assert issue.code == "structure"
    assert issue.expression.startswith("Patient.name")
