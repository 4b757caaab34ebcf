from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ingestion.deid.rules import DEFAULT_RULES_FILE, KEEP_SUBTREE, RulesError, load_rules, parse_rules


def rules_with(resources: dict) -> dict:
    return {"version": 1, "extensions": [], "resources": resources}


def test_default_rules_load() -> None:
    rules = load_rules()
    assert "Patient" in rules.resources
    assert rules.resources["Encounter"]["period"] is KEEP_SUBTREE
    assert rules.resources["Encounter"]["hospitalization"] == {
        "admitSource": True,
        "reAdmission": True,
        "dischargeDisposition": True,
    }
    assert "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race" in rules.extensions
    assert "036" in rules.zip3_restricted_prefixes


def test_default_rules_document_every_element() -> None:
    lines = DEFAULT_RULES_FILE.read_text(encoding="utf-8").splitlines()
    entries = [line for line in lines if line.strip().startswith("- ") and line.startswith("    - ")]
    assert len(entries) > 100
    undocumented = [line for line in entries if "#" not in line]
    assert undocumented == []


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("name", "HumanName"),
        ("telecom", "ContactPoint"),
        ("photo", "Attachment"),
        ("contact.name", "HumanName"),
        ("address.line", "only"),
        ("address.city", "only"),
        ("text", "set by the de-identifier"),
        ("nickname", "no element"),
        ("modifierExtension", "modifierExtension"),
    ],
)
def test_patient_path_is_rejected(path: str, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        parse_rules(rules_with({"Patient": [path]}), source="test")


def test_note_is_rejected() -> None:
    with pytest.raises(RulesError, match="Annotation"):
        parse_rules(rules_with({"Observation": ["note"]}), source="test")


def test_unknown_resource_type_is_rejected() -> None:
    with pytest.raises(RulesError, match="not a FHIR R4 resource type"):
        parse_rules(rules_with({"Patiant": ["gender"]}), source="test")


def test_wrong_version_is_rejected() -> None:
    with pytest.raises(RulesError, match="version: 1"):
        parse_rules({"version": 2, "resources": {"Patient": ["gender"]}}, source="test")


def test_unknown_top_level_key_is_rejected() -> None:
    with pytest.raises(RulesError, match="unknown keys"):
        parse_rules({"version": 1, "resources": {"Patient": ["gender"]}, "extra": 1}, source="test")


def test_parent_path_keeps_whole_subtree() -> None:
    rules = parse_rules(rules_with({"Encounter": ["hospitalization", "hospitalization.admitSource"]}), source="t")
    assert rules.resources["Encounter"]["hospitalization"] is KEEP_SUBTREE


def test_missing_file_names_setting(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="HEALTHFLOW_DEID_RULES_FILE"):
        load_rules(tmp_path / "absent.yaml")


def test_invalid_yaml_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: [1\n", encoding="utf-8")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(path)


def test_rules_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules_with({"Patient": ["gender", "birthDate"]})), encoding="utf-8")
    rules = load_rules(path)
    assert rules.resources == {"Patient": {"gender": True, "birthDate": True}}
