"""Charlson comorbidity index from diagnosis codes (ICD-9-CM, ICD-10, and the SNOMED CT codes Synthea uses).

The code lists are CSV files in ``data/``; each names its source in a header comment. Weights are Charlson's
original ones (Charlson et al., J Chronic Dis 1987;40(5):373-383), and a category that is a milder form of
another present category is not counted twice (diabetes, liver disease, cancer).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"

ICD9 = "icd9cm"
ICD10 = "icd10"
SNOMED = "snomed"

MAP_FILES = {
    ICD9: DATA_DIR / "charlson_icd9cm.csv",
    ICD10: DATA_DIR / "charlson_icd10.csv",
    SNOMED: DATA_DIR / "charlson_snomed_synthea.csv",
}

# FHIR coding systems for each code system above.
SYSTEM_URIS = {
    "http://snomed.info/sct": SNOMED,
    "http://hl7.org/fhir/sid/icd-9-cm": ICD9,
    "http://hl7.org/fhir/sid/icd-10": ICD10,
    "http://hl7.org/fhir/sid/icd-10-cm": ICD10,
}

WEIGHTS = {
    "myocardial_infarction": 1,
    "congestive_heart_failure": 1,
    "peripheral_vascular_disease": 1,
    "cerebrovascular_disease": 1,
    "dementia": 1,
    "chronic_pulmonary_disease": 1,
    "rheumatic_disease": 1,
    "peptic_ulcer_disease": 1,
    "mild_liver_disease": 1,
    "diabetes_without_complication": 1,
    "diabetes_with_complication": 2,
    "hemiplegia_paraplegia": 2,
    "renal_disease": 2,
    "malignancy": 2,
    "moderate_severe_liver_disease": 3,
    "metastatic_solid_tumor": 6,
    "hiv_aids": 6,
}

# When the right-hand category is present, the left-hand one is not counted.
SUPERSEDED_BY = {
    "diabetes_without_complication": "diabetes_with_complication",
    "mild_liver_disease": "moderate_severe_liver_disease",
    "malignancy": "metastatic_solid_tumor",
}


def normalise_icd(code: str, system: str) -> str:
    """Return an ICD code upper-cased and without its dot; ICD-9 numeric codes get their leading zeros back."""
    code = code.strip().upper()
    head, _, tail = code.partition(".")
    if system == ICD9 and head.isdigit() and len(head) < 3:
        # Some extracts (UCI Diabetes 130-US among them) drop the leading zeros: "42" is 042 (HIV disease).
        head = head.zfill(3)
    return head + tail


def expand_code_spec(spec: str, system: str) -> list[str]:
    """Expand one table entry ("428.x", "425.4-425.9", "C00.x-C26.x", "V42.7") into normalised prefixes."""
    spec = spec.replace(".x", "")
    if "-" not in spec:
        return [normalise_icd(spec, system)]

    first, last = (normalise_icd(part, system) for part in spec.split("-"))
    letters = len(first) - len(first.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    if len(first) != len(last) or first[:letters] != last[:letters]:
        raise ValueError(f"invalid code range {spec!r}: both ends need the same letter and length")
    width = len(first) - letters
    start, stop = int(first[letters:]), int(last[letters:])
    return [f"{first[:letters]}{number:0{width}d}" for number in range(start, stop + 1)]


def _data_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return list(csv.DictReader(lines))


@cache
def code_map(system: str) -> dict[str, frozenset[str]]:
    """Return {normalised code or prefix: categories} for ``system`` (one of ICD9, ICD10, SNOMED).

    A code can be in two categories: ICD-9-CM 404.03 is both heart failure and renal disease.
    """
    if system not in MAP_FILES:
        raise ValueError(f"unknown code system {system!r}; expected one of {sorted(MAP_FILES)}")
    mapping: dict[str, set[str]] = {}
    for row in _data_rows(MAP_FILES[system]):
        category = row["category"]
        if category not in WEIGHTS:
            raise ValueError(f"{MAP_FILES[system].name}: unknown Charlson category {category!r}")
        prefixes = [row["code"].strip()] if system == SNOMED else expand_code_spec(row["code"], system)
        for prefix in prefixes:
            mapping.setdefault(prefix, set()).add(category)
    return {prefix: frozenset(categories) for prefix, categories in mapping.items()}


def categories_of_code(code: str, system: str) -> frozenset[str]:
    """Return the Charlson categories of one code; empty when the code is in none."""
    if not code:
        return frozenset()
    mapping = code_map(system)
    if system == SNOMED:
        return mapping.get(code.strip(), frozenset())
    normalised = normalise_icd(code, system)
    found: set[str] = set()
    for length in range(3, len(normalised) + 1):
        found |= mapping.get(normalised[:length], frozenset())
    return frozenset(found)


def categories_of(coded: Iterable[tuple[str, str]]) -> set[str]:
    """Return the Charlson categories present among (system, code) pairs; unmapped codes are ignored."""
    found: set[str] = set()
    for system, code in coded:
        found |= categories_of_code(code, system)
    return found


def charlson_index(categories: Iterable[str]) -> int:
    """Return the Charlson comorbidity index (sum of weights) of a set of categories."""
    present = set(categories)
    unknown = present - WEIGHTS.keys()
    if unknown:
        raise ValueError(f"unknown Charlson categories {sorted(unknown)}")
    counted = {category for category in present if SUPERSEDED_BY.get(category) not in present}
    return sum(WEIGHTS[category] for category in counted)
