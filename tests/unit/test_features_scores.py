"""LACE and HOSPITAL scores at their band edges."""

from __future__ import annotations

import pytest

from ingestion.featurizer.scores import hospital_score, lace_score


@pytest.mark.parametrize(
    ("days", "points"), [(0.5, 0), (1, 1), (3.9, 3), (4, 4), (6.9, 4), (7, 5), (13.99, 5), (14, 7)]
)
def test_lace_length_points(days, points):
    assert lace_score(length_of_stay_days=days, emergency_admission=False, charlson_index=0, ed_visits_6m=0) == points


def test_lace_maximum_is_19():
    assert lace_score(length_of_stay_days=20, emergency_admission=True, charlson_index=9, ed_visits_6m=10) == 19


def test_lace_charlson_four_scores_five():
    assert lace_score(length_of_stay_days=0, emergency_admission=False, charlson_index=4, ed_visits_6m=0) == 5


def test_hospital_maximum_is_13():
    score = hospital_score(
        hemoglobin_g_per_dl=9.0,
        oncology_discharge=True,
        sodium_mmol_per_l=130.0,
        procedure_during_stay=True,
        emergency_admission=True,
        admissions_12m=6,
        length_of_stay_days=5,
    )
    assert score == 13


def test_hospital_missing_labs_score_zero():
    score = hospital_score(
        hemoglobin_g_per_dl=None,
        oncology_discharge=False,
        sodium_mmol_per_l=None,
        procedure_during_stay=False,
        emergency_admission=False,
        admissions_12m=2,
        length_of_stay_days=4.9,
    )
    assert score == 2
