"""Charlson maps: ICD-9-CM, ICD-10 and Synthea SNOMED CT codes, weights and hierarchy."""

from __future__ import annotations

import pytest

from ingestion.featurizer import charlson


@pytest.mark.parametrize(
    ("code", "system", "expected"),
    [
        ("428.0", charlson.ICD9, {"congestive_heart_failure"}),
        ("428", charlson.ICD9, {"congestive_heart_failure"}),
        ("250.83", charlson.ICD9, {"diabetes_without_complication"}),
        ("250.4", charlson.ICD9, {"diabetes_with_complication"}),
        ("404.03", charlson.ICD9, {"congestive_heart_failure", "renal_disease"}),
        ("42", charlson.ICD9, {"hiv_aids"}),
        ("V42.0", charlson.ICD9, {"renal_disease"}),
        ("196.2", charlson.ICD9, {"metastatic_solid_tumor"}),
        ("V57", charlson.ICD9, set()),
        ("I50.9", charlson.ICD10, {"congestive_heart_failure"}),
        ("E11.65", charlson.ICD10, {"diabetes_without_complication"}),
        ("E11.22", charlson.ICD10, {"diabetes_with_complication"}),
        ("C78.1", charlson.ICD10, {"metastatic_solid_tumor"}),
        ("88805009", charlson.SNOMED, {"congestive_heart_failure"}),
        ("444814009", charlson.SNOMED, set()),
    ],
)
def test_code_categories(code, system, expected):
    assert set(charlson.categories_of_code(code, system)) == expected


def test_index_applies_hierarchy():
    categories = {"diabetes_without_complication", "diabetes_with_complication", "malignancy", "metastatic_solid_tumor"}
    assert charlson.charlson_index(categories) == 2 + 6


def test_index_of_nothing_is_zero():
    assert charlson.charlson_index(set()) == 0


def test_index_rejects_unknown_category():
    with pytest.raises(ValueError, match="unknown Charlson categories"):
        charlson.charlson_index({"not_a_category"})


def test_invalid_range_rejected():
    with pytest.raises(ValueError, match="invalid code range"):
        charlson.expand_code_spec("I42.5-J42.9", charlson.ICD10)
