"""The official HL7 R4 examples pass R4 validation (fhir.resources R4B models, R4 differences handled)."""

from __future__ import annotations

import pytest

from ingestion.fhir.checking import check_submission
from ingestion.fhir.sources import Submission
from ingestion.fhir.validation import model_class, validate_resource

# Questionnaire-qs1 leaves out Questionnaire.item.linkId, which R4 (4.0.1) requires (1..1) on every item.
KNOWN_INVALID_EXAMPLES = {"Questionnaire-qs1.json"}


def test_hl7_r4_examples_validate(shared_data):
    files = sorted(path for path in (shared_data / "hl7-r4-examples").glob("*.json") if path.name != "package.json")
    assert len(files) == 679
    failures = {}
    for path in files:
        checked = check_submission(Submission(path.name, path.read_bytes()))
        if checked.rejections:
            failures[path.name] = [issue.reason for rejection in checked.rejections for issue in rejection.issues]
    assert set(failures) == KNOWN_INVALID_EXAMPLES, failures


def test_questionnaire_qs1_misses_link_id(shared_data):
    path = shared_data / "hl7-r4-examples" / "Questionnaire-qs1.json"
    (rejection,) = check_submission(Submission(path.name, path.read_bytes())).rejections
    assert {issue.problem for issue in rejection.issues} == {"required element is missing"}
    assert all(issue.expression.endswith(".linkId") for issue in rejection.issues)


@pytest.mark.parametrize("resource_type", ["MedicinalProduct", "EffectEvidenceSynthesis", "Evidence"])
def test_r4_only_types_checked_on_common_elements(resource_type):
    assert validate_resource({"resourceType": resource_type, "id": "ok"}) == []
    (issue,) = validate_resource({"resourceType": resource_type, "id": "not valid id"})
    assert issue.expression == f"{resource_type}.id"


def test_r4b_only_type_is_not_r4():
    assert model_class("Citation") is None
    assert model_class("Patient") is not None
