"""ResourceValidator against full fhir.resources validation, on real de-identified Synthea resources.

The validator skips the model validation for a structure it has seen. So every test here compares its
verdict with the full validation's on the same resource: valid outputs, values replaced by invalid ones,
and structures broken in the ways fhir.resources checks.
"""

from __future__ import annotations

import copy
import random
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from healthflow.errors import DeidentificationError
from ingestion.deid.offline import FileReport, deidentify_entries, parse_file
from ingestion.deid.rules import load_rules
from ingestion.deid.transform import DeidConfig, Deidentifier
from ingestion.deid.validation import ResourceValidator, split_values, validate_resource

SAMPLE = Path(__file__).parents[2] / "data" / "sample" / "synthea"
SAMPLE_FILES = 3
MUTATIONS = 3000
# Replacement values for the mutation test: invalid for most elements, valid for some.
REPLACEMENTS: list[Any] = [
    "",
    " ",
    "two words",
    "2020-13-45",
    "2020-02-30",
    "2020-01-01T25:00:00Z",
    "not a date",
    "x" * 70,
    "bad id!",
    "urn:uuid:",
    "-",
    12,
    -3,
    0,
    1.5,
    "1.5",
    "abc\u00e9",
    'with "quotes" and \\ backslash',
]


def valid(resource: dict[str, Any]) -> bool:
    try:
        validate_resource(resource)
    except DeidentificationError:
        return False
    return True


def accepted(validator: ResourceValidator, resource: dict[str, Any]) -> bool:
    try:
        validator.validate(resource)
    except DeidentificationError:
        return False
    return True


@pytest.fixture(scope="module")
def outputs() -> list[dict[str, Any]]:
    config = DeidConfig(
        key=b"unit-test-key",
        profile="pseudonymised",
        shift_min_days=30,
        shift_max_days=365,
        age_reference_date=date(2019, 6, 1),
    )
    deidentifier = Deidentifier(load_rules(), config)
    files = sorted(SAMPLE.glob("*.json.gz"))[:SAMPLE_FILES]
    assert files, f"no sample bundles in {SAMPLE}"
    resources = []
    for path in files:
        results = deidentify_entries(deidentifier, parse_file(path), FileReport())
        resources.extend(result.resource for result in results)
    return resources


@pytest.fixture
def warm_validator(outputs: list[dict[str, Any]]) -> ResourceValidator:
    validator = ResourceValidator()
    for resource in outputs:
        validator.validate(resource)
    return validator


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return the path of every string or number value, resourceType excluded."""
    if isinstance(value, dict):
        return [
            found for key, item in value.items() if key != "resourceType" for found in leaf_paths(item, (*path, key))
        ]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in leaf_paths(item, (*path, index))]
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [path]
    return []


def replaced(resource: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copied = copy.deepcopy(resource)
    parent = copied
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return copied


def test_split_values_keeps_keys_and_types() -> None:
    document = orjson.dumps(
        {"resourceType": "Observation", "status": "final", "valueQuantity": {"value": -1.5e3, "unit": 'a,b:"c"'}}
    )

    structure, values = split_values(document)

    assert structure == b'{"resourceType":"Observation","status":0,"valueQuantity":{"value":0,"unit":0}}'
    assert values == [b'"final"', b"-1500.0", b'"a,b:\\"c\\""']


def test_sample_outputs_all_accepted(outputs: list[dict[str, Any]]) -> None:
    validator = ResourceValidator()

    verdicts = [accepted(validator, resource) for resource in outputs]

    assert all(verdicts)
    assert len(outputs) > 500
    # Full validation runs once per structure, a small share of the resources.
    assert validator.full_validations < len(outputs) / 5


def test_second_pass_needs_no_full_validation(outputs: list[dict[str, Any]], warm_validator: ResourceValidator) -> None:
    before = warm_validator.full_validations

    for resource in outputs:
        warm_validator.validate(resource)

    assert warm_validator.full_validations == before


def test_replaced_values_match_full_validation(
    outputs: list[dict[str, Any]], warm_validator: ResourceValidator
) -> None:
    generator = random.Random(20261205)
    disagreements = []
    rejected = 0

    for _ in range(MUTATIONS):
        resource = generator.choice(outputs)
        path = generator.choice(leaf_paths(resource))
        mutated = replaced(resource, path, generator.choice(REPLACEMENTS))
        expected = valid(mutated)
        rejected += not expected
        if accepted(warm_validator, mutated) != expected:
            disagreements.append((mutated["resourceType"], path))

    assert disagreements == []
    # Many mutations must produce invalid resources, or the comparison proves little.
    assert rejected > MUTATIONS / 4


@pytest.mark.parametrize(
    "change",
    [
        "drop required status",
        "unknown element",
        "null in a list",
        "empty list",  # fhir.resources accepts it: the validator must agree, not be stricter
        "empty object",  # the same
        "single value for a list",
        "list for a single value",
        "two choices of one element",
        "number for a code",
        "bool for a string",
    ],
)
def test_broken_structure_rejected(warm_validator: ResourceValidator, change: str) -> None:
    observation = {
        "resourceType": "Observation",
        "id": "abc",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "effectiveDateTime": "2020-01-01T10:00:00+00:00",
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    assert accepted(warm_validator, observation)
    broken = copy.deepcopy(observation)
    if change == "drop required status":
        del broken["status"]
    elif change == "unknown element":
        broken["colour"] = "blue"
    elif change == "null in a list":
        broken["category"] = [None]
    elif change == "empty list":
        broken["category"] = []
    elif change == "empty object":
        broken["code"] = {}
    elif change == "single value for a list":
        broken["category"] = observation["category"][0]
    elif change == "list for a single value":
        broken["code"] = [observation["code"]]
    elif change == "two choices of one element":
        broken["effectivePeriod"] = {"start": "2020-01-01"}
    elif change == "number for a code":
        broken["status"] = 3
    elif change == "bool for a string":
        broken["valueQuantity"] = {"value": 72, "unit": True}

    assert accepted(warm_validator, broken) == valid(broken)
    if not change.startswith("empty"):
        assert not valid(broken)
