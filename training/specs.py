"""Training specs of the registered feature services: one registered model per feature service."""

from __future__ import annotations

from healthflow.errors import InvalidInputError
from training.spec import TrainingSpec

AUDIT_COLUMNS = ("sex", "race", "ethnicity", "age_band")

# Columns of ingestion.uci.adapter.load_uci. The adapter's timestamps are synthetic (they only follow the
# source's encounter_id order), so the UCI split is by patient only.
UCI_SPEC = TrainingSpec(
    feature_service="readmission_uci_v1",
    patient_column="patient_pseudonym",
    stay_column="stay_id",
    label_column="label",
    time_column="event_timestamp",
    label_available_column="label_available_at",
    numeric_features=(
        "length_of_stay_days",
        "emergency_admission",
        "prior_inpatient_12m",
        "prior_outpatient_12m",
        "prior_ed_12m",
        "charlson_index",
        "num_diagnoses",
        "num_lab_procedures",
        "num_procedures",
        "num_medications",
        "medication_change",
        "diabetes_medication",
        "lace_score",
        "encounter_order",
        "previous_stay_readmitted_30d",
        "previous_stay_readmitted_later",
        "prior_stays_readmitted_30d",
        "prior_stays_readmitted_later",
    ),
    categorical_features=(
        "age_band",
        "sex",
        "admission_type",
        "admission_source",
        "discharge_disposition",
        "max_glu_serum",
        "a1c_result",
        "insulin",
        "medical_specialty",
        "diagnosis_1_category",
        "diagnosis_2_category",
        "diagnosis_3_category",
    ),
    audit_columns=AUDIT_COLUMNS,
    lace_column="lace_score",
    split_by_time=False,
)

# Columns of ingestion.featurizer.training_set.get_training_frame for FHIR stays; times are real (shifted) dates.
FHIR_SPEC = TrainingSpec(
    feature_service="readmission_fhir_v1",
    patient_column="patient_pseudonym",
    stay_column="stay_id",
    label_column="label",
    time_column="event_timestamp",
    label_available_column="label_available_at",
    numeric_features=(
        "age_at_admission",
        "length_of_stay_days",
        "emergency_admission",
        "prior_inpatient_6m",
        "prior_inpatient_12m",
        "prior_ed_6m",
        "prior_ed_12m",
        "charlson_index",
        "active_conditions",
        "active_medications",
        "procedures_during_stay",
        "hemoglobin_last",
        "hemoglobin_abnormal",
        "sodium_last",
        "sodium_abnormal",
        "creatinine_last",
        "creatinine_abnormal",
        "glucose_last",
        "glucose_abnormal",
        "hba1c_last",
        "hba1c_abnormal",
        "lace_score",
        "hospital_score",
    ),
    categorical_features=("age_band", "sex", "discharge_disposition"),
    audit_columns=AUDIT_COLUMNS,
    lace_column="lace_score",
    split_by_time=True,
)

SPECS = {spec.feature_service: spec for spec in (UCI_SPEC, FHIR_SPEC)}


def spec_for(feature_service: str) -> TrainingSpec:
    """Return the spec of a feature service; raise InvalidInputError naming the known ones."""
    try:
        return SPECS[feature_service]
    except KeyError:
        raise InvalidInputError(f"unknown feature service {feature_service!r}; known: {sorted(SPECS)}") from None
