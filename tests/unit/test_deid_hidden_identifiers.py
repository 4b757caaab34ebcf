"""Identifiers hidden in unusual places must not survive de-identification."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from ingestion.deid.offline import deidentify_file
from ingestion.deid.rules import load_rules
from ingestion.deid.transform import DeidConfig, Deidentifier
from ingestion.deid.validation import validate_resource

PATIENT_UUID = "7d0c1a9e-5b7e-4c1f-9d55-hidden000001"
ENCOUNTER_UUID = "0e5b2f4c-1111-4a7d-8c2e-hidden000002"
SECRETS = {
    "name": "Zebulon Quackenbush",
    "family": "Quackenbush",
    "extension identifier": "MRN-4471-XQ",
    "note name": "Philomena Wigglesworth",
    "contained phone": "555-867-5309",
    "narrative name": "Ignatius Fothergill",
    "address line": "42 Wallaby Way",
    "patient uuid": PATIENT_UUID,
    "encounter uuid": ENCOUNTER_UUID,
    "birth date": "1961-04-17",
    "maiden name": "Hortensia Plumtree",
    "display name": "Dr. Cornelius Snodgrass",
}


def xhtml(text: str) -> str:
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{text}</div>'


def hidden_bundle() -> dict:
    patient = {
        "resourceType": "Patient",
        "id": PATIENT_UUID,
        "text": {"status": "generated", "div": xhtml(SECRETS["narrative name"])},
        "extension": [
            {
                "url": "http://example.org/fhir/StructureDefinition/legacy-id",
                "valueIdentifier": {"system": "http://example.org/mrn", "value": SECRETS["extension identifier"]},
            },
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                "valueString": SECRETS["maiden name"],
            },
            {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": "F"},
        ],
        "name": [{"family": SECRETS["family"], "given": ["Zebulon"]}],
        "birthDate": SECRETS["birth date"],
        "_birthDate": {"extension": [{"url": "http://example.org/note", "valueString": SECRETS["note name"]}]},
        "address": [{"line": [SECRETS["address line"]], "city": "Springfield", "state": "MA", "postalCode": "01103"}],
        "generalPractitioner": [{"reference": "Practitioner/p-1", "display": SECRETS["display name"]}],
    }
    encounter = {
        "resourceType": "Encounter",
        "id": ENCOUNTER_UUID,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"urn:uuid:{PATIENT_UUID}", "display": SECRETS["name"]},
        "period": {"start": "2015-02-01T10:00:00+00:00", "end": "2015-02-04T12:30:00+00:00"},
    }
    observation = {
        "resourceType": "Observation",
        "id": "obs-hidden-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"urn:uuid:{PATIENT_UUID}"},
        "encounter": {"reference": f"urn:uuid:{ENCOUNTER_UUID}"},
        "effectiveDateTime": "2015-02-02T08:00:00+00:00",
        "valueQuantity": {"value": 72, "unit": "/min"},
        "note": [{"text": f"Seen with {SECRETS['note name']}", "authorString": SECRETS["name"]}],
    }
    benefit = {
        "resourceType": "ExplanationOfBenefit",
        "id": "eob-hidden-1",
        "contained": [
            {
                "resourceType": "Patient",
                "id": "subscriber",
                "telecom": [{"system": "phone", "value": SECRETS["contained phone"]}],
                "name": [{"text": SECRETS["name"]}],
            },
            {
                "resourceType": "Coverage",
                "id": "coverage",
                "status": "active",
                "beneficiary": {"reference": f"urn:uuid:{PATIENT_UUID}"},
                "payor": [{"display": "private"}],
                "subscriber": {"reference": "#subscriber"},
            },
        ],
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "institutional"}]},
        "use": "claim",
        "patient": {"reference": f"urn:uuid:{PATIENT_UUID}"},
        "created": "2015-02-04T12:30:00+00:00",
        "insurer": {"display": "private"},
        "provider": {"reference": "Practitioner/p-1", "display": "Unknown"},
        "outcome": "complete",
        "insurance": [{"focal": True, "coverage": {"reference": "#coverage"}}],
        "text": {"status": "generated", "div": xhtml(SECRETS["name"])},
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{resource['id']}",
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
            for resource in (patient, encounter, observation, benefit)
        ],
    }


def test_hidden_identifiers_do_not_survive(tmp_path: Path) -> None:
    source = tmp_path / "hidden.json"
    source.write_text(json.dumps(hidden_bundle()), encoding="utf-8")
    target = tmp_path / "deid.json"
    config = DeidConfig(
        key=b"hidden-test-key",
        profile="pseudonymised",
        shift_min_days=30,
        shift_max_days=365,
        age_reference_date=date(2019, 1, 1),
    )

    report = deidentify_file(Deidentifier(load_rules(), config), source, target)

    assert report.failures == []
    assert report.written == report.read
    output = target.read_text(encoding="utf-8")
    for kind, secret in SECRETS.items():
        assert secret not in output, kind
    assert "5558675309" not in output
    assert "Zebulon" not in output


def test_hidden_bundle_output_is_valid_and_linked(tmp_path: Path) -> None:
    source = tmp_path / "hidden.json"
    source.write_text(json.dumps(hidden_bundle()), encoding="utf-8")
    target = tmp_path / "deid.json"
    config = DeidConfig(
        key=b"hidden-test-key",
        profile="pseudonymised",
        shift_min_days=30,
        shift_max_days=365,
        age_reference_date=date(2019, 1, 1),
    )
    deidentify_file(Deidentifier(load_rules(), config), source, target)

    bundle = json.loads(target.read_text(encoding="utf-8"))
    resources = {entry["resource"]["resourceType"]: entry["resource"] for entry in bundle["entry"]}
    for resource in resources.values():
        validate_resource(resource)
    patient_reference = f"Patient/{resources['Patient']['id']}"
    assert resources["Encounter"]["subject"] == {"reference": patient_reference}
    assert resources["Observation"]["encounter"] == {"reference": f"Encounter/{resources['Encounter']['id']}"}
    assert "note" not in resources["Observation"]
    assert [item["resourceType"] for item in resources["ExplanationOfBenefit"]["contained"]] == ["Patient", "Coverage"]
    assert resources["ExplanationOfBenefit"]["contained"][0].keys() == {"resourceType", "id"}
    coverage_id = resources["ExplanationOfBenefit"]["contained"][1]["id"]
    assert resources["ExplanationOfBenefit"]["insurance"][0]["coverage"] == {"reference": f"#{coverage_id}"}
    assert resources["Patient"]["extension"] == [
        {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": "F"}
    ]
