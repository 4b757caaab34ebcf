"""LACE and HOSPITAL readmission risk scores, used as features and as baselines.

LACE: van Walraven C. et al., "Derivation and validation of an index to predict early death or unplanned
readmission after discharge from hospital to the community", CMAJ 2010;182(6):551-557.
HOSPITAL: Donzé J. et al., "Potentially avoidable 30-day hospital readmissions in medical patients:
derivation and validation of a prediction model", JAMA Intern Med 2013;173(8):632-638.
"""

from __future__ import annotations

import math

# HOSPITAL thresholds, from Donzé et al. 2013.
HOSPITAL_LOW_HEMOGLOBIN_G_PER_DL = 12.0
HOSPITAL_LOW_SODIUM_MMOL_PER_L = 135.0
HOSPITAL_LONG_STAY_DAYS = 5


def _lace_length_points(days: int) -> int:
    if days < 1:
        return 0
    if days <= 3:
        return days
    if days <= 6:
        return 4
    if days <= 13:
        return 5
    return 7


def lace_score(*, length_of_stay_days: float, emergency_admission: bool, charlson_index: int, ed_visits_6m: int) -> int:
    """Return the LACE index (0-19); the length of stay counts in whole days, rounded down."""
    whole_days = math.floor(length_of_stay_days)
    length_points = _lace_length_points(whole_days)
    acuity_points = 3 if emergency_admission else 0
    comorbidity_points = charlson_index if charlson_index <= 3 else 5
    ed_points = min(ed_visits_6m, 4)
    return length_points + acuity_points + comorbidity_points + ed_points


def hospital_score(
    *,
    hemoglobin_g_per_dl: float | None,
    oncology_discharge: bool,
    sodium_mmol_per_l: float | None,
    procedure_during_stay: bool,
    emergency_admission: bool,
    admissions_12m: int,
    length_of_stay_days: float,
) -> int:
    """Return the HOSPITAL score (0-13). A missing lab value (None) scores 0, as a normal value would."""
    points = 0
    if hemoglobin_g_per_dl is not None and hemoglobin_g_per_dl < HOSPITAL_LOW_HEMOGLOBIN_G_PER_DL:
        points += 1
    if oncology_discharge:
        points += 2
    if sodium_mmol_per_l is not None and sodium_mmol_per_l < HOSPITAL_LOW_SODIUM_MMOL_PER_L:
        points += 1
    if procedure_during_stay:
        points += 1
    if emergency_admission:
        points += 1
    if admissions_12m > 5:
        points += 5
    elif admissions_12m >= 2:
        points += 2
    if length_of_stay_days >= HOSPITAL_LONG_STAY_DAYS:
        points += 2
    return points
