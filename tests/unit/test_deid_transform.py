from __future__ import annotations

import copy
import json
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from healthflow.errors import DeidentificationError
from healthflow.pseudonym import pseudonymise
from ingestion.deid.dates import date_shift_days
from ingestion.deid.offline import FileReport, deidentify_entries, parse_file
from ingestion.deid.rules import load_rules
from ingestion.deid.transform import DeidConfig, Deidentifier, ResourceTypeDropped

SYNTHEA = Path(__file__).parents[2] / ".." / "shared" / "data" / "synthea-r4"
KEY = b"unit-test-key"
SAMPLE_FILES = 4
DATE_VALUE = re.compile(r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+([+-]\d{2}:\d{2}|Z))?$")


def make_deidentifier(profile: str = "pseudonymised", reference: date = date(2019, 6, 1)) -> Deidentifier:
    config = DeidConfig(
        key=KEY,
        profile=profile,
        shift_min_days=30,
        shift_max_days=365,  # type: ignore[arg-type]
        age_reference_date=reference,
    )
    return Deidentifier(RULES, config)


RULES = load_rules()


def synthea_files(count: int) -> list[Path]:
    files = sorted(path for path in SYNTHEA.glob("*.json.gz") if "Information" not in path.name)
    if not files:
        pytest.skip(f"Synthea data not found in {SYNTHEA}")
    return files[:count]


@pytest.fixture(scope="module")
def sample() -> list[tuple[list[tuple[str | None, dict]], list[Any], FileReport]]:
    deidentifier = make_deidentifier()
    runs = []
    for path in synthea_files(SAMPLE_FILES):
        entries = parse_file(path)
        report = FileReport()
        results = list(deidentify_entries(deidentifier, entries, report))
        runs.append((entries, results, report))
    return runs


def strings_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings_in(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return [value] if isinstance(value, str) else []


def dated_paths(value: Any, prefix: str = "") -> dict[str, str]:
    """Return every full-day date or dateTime string by its JSON path."""
    found: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            found |= dated_paths(item, f"{prefix}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found |= dated_paths(item, f"{prefix}[{index}]")
    elif isinstance(value, str) and DATE_VALUE.match(value):
        found[prefix] = value
    return found


def as_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text if "T" in text else text + "T00:00:00+00:00")


def test_sample_counts_match_per_type(sample) -> None:
    for entries, results, report in sample:
        assert report.failures == []
        assert report.dropped_types == {}
        assert report.written == report.read
        assert len(results) == len(entries)


def test_sample_references_resolve(sample) -> None:
    for _, results, _ in sample:
        ids = {f"{result.resource_type}/{result.pseudo_id}" for result in results}
        for result in results:
            for reference in re.findall(r'"reference": "([^"#]+)"', json.dumps(result.resource)):
                if reference.startswith(("Practitioner/", "Organization/")):
                    continue  # Synthea points at providers of other bundles too
                assert reference in ids


def test_sample_has_no_raw_identifiers(sample) -> None:
    for entries, results, _ in sample:
        patient = next(resource for _, resource in entries if resource["resourceType"] == "Patient")
        secrets = {resource["id"] for _, resource in entries}
        secrets |= {identifier["value"] for identifier in patient.get("identifier", [])}
        secrets |= {patient["name"][0]["family"], *patient["name"][0]["given"]}
        secrets |= {telecom["value"] for telecom in patient.get("telecom", [])}
        secrets |= {line for address in patient.get("address", []) for line in address.get("line", [])}
        secrets |= {patient["address"][0]["city"], patient["birthDate"]}
        output = json.dumps([result.resource for result in results])
        leaked = sorted(secret for secret in secrets if secret in output)
        assert leaked == []


def test_sample_intervals_are_preserved(sample) -> None:
    deidentifier = make_deidentifier()
    for entries, results, _ in sample:
        patient = next(resource for _, resource in entries if resource["resourceType"] == "Patient")
        expected_days = date_shift_days(KEY, patient["id"], min_days=30, max_days=365)
        by_pseudo = {result.pseudo_id: result.resource for result in results}
        compared = 0
        for _, resource in entries:
            if resource["resourceType"] in ("Organization", "Practitioner"):
                continue
            pseudo = pseudonymise(deidentifier.config.key, resource["resourceType"], resource["id"])
            before = dated_paths(resource)
            after = dated_paths(by_pseudo[pseudo])
            for path in before.keys() & after.keys():
                delta = as_datetime(after[path]) - as_datetime(before[path])
                assert delta.total_seconds() == expected_days * 86400, path
                compared += 1
        assert compared > 100


def test_patient_keeps_only_allowed_elements(sample) -> None:
    _, results, _ = sample[0]
    patient = next(result.resource for result in results if result.resource_type == "Patient")
    assert set(patient) <= {
        "resourceType",
        "id",
        "meta",
        "extension",
        "identifier",
        "gender",
        "birthDate",
        "deceasedDateTime",
        "address",
        "maritalStatus",
        "multipleBirthBoolean",
        "communication",
    }
    assert {extension["url"].rsplit("/", 1)[1] for extension in patient["extension"]} == {
        "us-core-race",
        "us-core-ethnicity",
        "us-core-birthsex",
    }
    assert all(set(address) <= {"state", "country", "postalCode"} for address in patient["address"])
    assert all(len(address.get("postalCode", "123")) == 3 for address in patient["address"])


def test_reference_forms_share_pseudonym() -> None:
    deidentifier = make_deidentifier()
    forms = [
        "Patient/abc-1",
        "https://fhir.example.org/base/Patient/abc-1",
        "urn:uuid:abc-1",
        "Patient/abc-1/_history/3",
    ]
    expected = f"Patient/{pseudonymise(KEY, 'Patient', 'abc-1')}"
    for form in forms:
        observation = {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": form},
        }
        result = deidentifier.deidentify(observation, resolve={"urn:uuid:abc-1": "Patient"}.get)
        assert result.resource["subject"]["reference"] == expected
        assert result.patient_pseudonym == pseudonymise(KEY, "Patient", "abc-1")
    patient = deidentifier.deidentify({"resourceType": "Patient", "id": "abc-1"})
    assert f"Patient/{patient.pseudo_id}" == expected


def test_unresolvable_urn_uuid_fails_closed() -> None:
    claim_provider = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"code": "AMB"},
        "serviceProvider": {"reference": "urn:uuid:org-1"},
        "participant": [{"individual": {"reference": "urn:uuid:who-1"}}],
    }
    with pytest.raises(DeidentificationError, match="participant.individual"):
        make_deidentifier().deidentify(claim_provider)


def test_conditional_reference_fails_closed() -> None:
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient?identifier=http://x|123"},
    }
    with pytest.raises(DeidentificationError, match="conditional"):
        make_deidentifier().deidentify(observation)


def test_modifier_extension_fails_closed() -> None:
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "x"},
        "modifierExtension": [{"url": "http://example.org/negated", "valueBoolean": True}],
    }
    with pytest.raises(DeidentificationError, match="modifierExtension"):
        make_deidentifier().deidentify(observation)


def test_unknown_element_in_kept_subtree_fails_closed() -> None:
    request = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "x"},
        "subject": {"reference": "Patient/p1"},
        "dosageInstruction": [{"sequence": 1, "patientName": "x"}],
    }
    with pytest.raises(DeidentificationError, match=r"dosageInstruction\.patientName"):
        make_deidentifier().deidentify(request)


def test_unknown_element_outside_allowlist_is_dropped() -> None:
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": 1, "patientName": "x"},
    }
    result = make_deidentifier().deidentify(observation)
    assert result.resource["valueQuantity"] == {"value": 1}


def test_invalid_output_fails_closed() -> None:
    observation = {"resourceType": "Observation", "id": "o1", "code": {"text": "x"}}  # status is required
    with pytest.raises(DeidentificationError, match="not valid FHIR R4"):
        make_deidentifier().deidentify(observation)


def test_type_without_rule_is_dropped() -> None:
    with pytest.raises(ResourceTypeDropped) as raised:
        make_deidentifier().deidentify({"resourceType": "DocumentReference", "id": "d1"})
    assert raised.value.resource_type == "DocumentReference"


def test_input_is_not_modified(sample) -> None:
    entries, _, _ = sample[0]
    patient = next(resource for _, resource in entries if resource["resourceType"] == "Patient")
    before = copy.deepcopy(patient)
    make_deidentifier().deidentify(patient)
    assert patient == before


def test_output_is_deterministic() -> None:
    entries = parse_file(synthea_files(1)[0])
    first = [result.resource for result in deidentify_entries(make_deidentifier(), entries, FileReport())]
    second = [result.resource for result in deidentify_entries(make_deidentifier(), entries, FileReport())]
    assert first == second


def patient_born(birth: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "old-1", "gender": "female", "birthDate": birth, **extra}


def test_patient_over_90_gets_year_band() -> None:
    result = make_deidentifier(reference=date(2019, 6, 1)).deidentify(patient_born("1925-03-04"))
    birth = result.resource["birthDate"]
    assert re.fullmatch(r"\d{4}", birth)
    shift = date_shift_days(KEY, "old-1", min_days=30, max_days=365)
    shifted_reference_year = date(2019, 6, 1).toordinal() + shift
    assert int(birth) == date.fromordinal(shifted_reference_year).year - 90


def test_patient_under_90_keeps_exact_shifted_birth_date() -> None:
    result = make_deidentifier(reference=date(2019, 6, 1)).deidentify(patient_born("1930-06-02"))
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", result.resource["birthDate"])
    assert result.resource["birthDate"] != "1930-06-02"


def test_deceased_patient_age_measured_at_death() -> None:
    deceased = patient_born("1920-01-01", deceasedDateTime="2005-01-01T00:00:00+00:00")
    result = make_deidentifier(reference=date(2019, 6, 1)).deidentify(deceased)
    assert len(result.resource["birthDate"]) == 10


def test_safe_harbor_keeps_years_only(sample) -> None:
    entries, _, _ = sample[0]
    report = FileReport()
    results = list(deidentify_entries(make_deidentifier("safe-harbor"), entries, report))
    assert report.failures == []
    for result in results:
        assert "identifier" not in result.resource
        for text in strings_in(result.resource):
            assert not re.match(r"^\d{4}-\d{2}", text), result.resource_type
    encounter = next(result.resource for result in results if result.resource_type == "Encounter")
    assert re.fullmatch(r"\d{4}", encounter["period"]["start"])


def test_restricted_zip_becomes_000() -> None:
    patient = patient_born(
        "1990-01-01",
        address=[{"postalCode": "03601", "state": "NH", "country": "US", "city": "Somewhere", "line": ["1 Main St"]}],
    )
    result = make_deidentifier().deidentify(patient)
    assert result.resource["address"] == [{"postalCode": "000", "state": "NH", "country": "US"}]


def test_non_us_postal_code_is_dropped() -> None:
    patient = patient_born("1990-01-01", address=[{"postalCode": "75011", "country": "FR"}])
    result = make_deidentifier().deidentify(patient)
    assert result.resource["address"] == [{"country": "FR"}]


def test_identifier_pseudonym_is_keyed_by_system() -> None:
    patient = patient_born("1990-01-01", identifier=[{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-1"}])
    result = make_deidentifier().deidentify(patient)
    expected = pseudonymise(KEY, "identifier|http://hl7.org/fhir/sid/us-ssn", "999-1")
    assert result.resource["identifier"] == [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": expected}]


def test_config_rejects_inverted_shift_range() -> None:
    from healthflow.settings import load_settings

    settings = load_settings().model_copy(update={"deid_date_shift_min_days": 400, "deid_date_shift_max_days": 300})
    with pytest.raises(ValueError, match="HEALTHFLOW_DEID_DATE_SHIFT_MIN_DAYS"):
        DeidConfig.from_settings(settings)
