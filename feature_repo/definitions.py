"""Feast definitions of HealthFlow: entities, PostgreSQL sources, feature views and feature services.

Offline sources are the typed views ``features.fhir_stay_features`` and ``features.uci_encounter_features``
(migration 0030). Event timestamps are discharge times (FHIR, in each patient's shifted timeline) or the UCI
adapter's synthetic timestamps; created timestamps are when the Featurizer wrote the row. Labels, label
times and audit attributes (race, ethnicity) are not features: the training set takes them from the entity
rows, so they never reach a model as inputs.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

# Feast 0.67 starts the first `materialize-incremental` at now - ttl (now - 52 weeks when ttl is 0), and the
# point-in-time join ignores rows older than ttl. Stays in shifted timelines go back decades, so the ttl covers
# any history: the online store keeps each patient's latest stay however old it is.
HISTORY_TTL = timedelta(days=150 * 365)

patient = Entity(
    name="patient",
    join_keys=["patient_pseudonym"],
    value_type=ValueType.STRING,
    description="Patient pseudonym (HMAC-SHA256 of the Patient id, or of the UCI patient_nbr).",
)
stay = Entity(
    name="stay",
    join_keys=["stay_id"],
    value_type=ValueType.STRING,
    description="Inpatient stay: pseudonymised Encounter id (FHIR) or encounter_id (UCI).",
)

fhir_stay_source = PostgreSQLSource(
    name="fhir_stay_source",
    query="SELECT * FROM features.fhir_stay_features",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_at",
    description="Current version of each index inpatient stay built from de-identified FHIR.",
)

uci_encounter_source = PostgreSQLSource(
    name="uci_encounter_source",
    query="SELECT * FROM features.uci_encounter_features",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_at",
    description="UCI Diabetes 130-US encounters with synthetic timestamps in encounter_id order per patient.",
)

FHIR_FEATURES = [
    Field(name="age_at_admission", dtype=Int64, description="Age at admission, whole years."),
    Field(name="age_band", dtype=String, description="10-year age band; 90+ for ages over 89."),
    Field(name="sex", dtype=String, description="female, male, other or unknown."),
    Field(name="length_of_stay_days", dtype=Float64, description="Discharge minus admission, days."),
    Field(
        name="emergency_admission",
        dtype=Int64,
        description="1 when admitted through the ED or with emergency priority.",
    ),
    Field(
        name="prior_inpatient_6m", dtype=Int64, description="Inpatient stays started in the 182 days before admission."
    ),
    Field(
        name="prior_inpatient_12m", dtype=Int64, description="Inpatient stays started in the 365 days before admission."
    ),
    Field(
        name="prior_ed_6m",
        dtype=Int64,
        description="ED visits in the 182 days before admission, the admitting one excluded.",
    ),
    Field(
        name="prior_ed_12m",
        dtype=Int64,
        description="ED visits in the 365 days before admission, the admitting one excluded.",
    ),
    Field(
        name="charlson_index", dtype=Int64, description="Charlson comorbidity index of conditions active at discharge."
    ),
    Field(name="active_conditions", dtype=Int64, description="Distinct conditions active at discharge."),
    Field(
        name="active_medications", dtype=Int64, description="Distinct medications ordered in the year up to discharge."
    ),
    Field(name="procedures_during_stay", dtype=Int64, description="Procedures performed during the stay."),
    Field(name="discharge_disposition", dtype=String, description="Discharge disposition code, or unknown."),
    Field(name="hemoglobin_last", dtype=Float64, description="Last hemoglobin before discharge, g/dL."),
    Field(name="hemoglobin_abnormal", dtype=Int64, description="1 when outside the reference interval."),
    Field(name="sodium_last", dtype=Float64, description="Last sodium before discharge, mmol/L."),
    Field(name="sodium_abnormal", dtype=Int64, description="1 when outside the reference interval."),
    Field(name="creatinine_last", dtype=Float64, description="Last creatinine before discharge, mg/dL."),
    Field(name="creatinine_abnormal", dtype=Int64, description="1 when outside the reference interval."),
    Field(name="glucose_last", dtype=Float64, description="Last glucose before discharge, mg/dL."),
    Field(name="glucose_abnormal", dtype=Int64, description="1 when outside the reference interval."),
    Field(name="hba1c_last", dtype=Float64, description="Last HbA1c before discharge, %."),
    Field(name="hba1c_abnormal", dtype=Int64, description="1 when outside the reference interval."),
    Field(name="lace_score", dtype=Int64, description="LACE index, 0-19."),
    Field(name="hospital_score", dtype=Int64, description="HOSPITAL score, 0-13."),
]

UCI_FEATURES = [
    Field(name="age_band", dtype=String, description="10-year age band from the source; 90+ for [90-100)."),
    Field(name="sex", dtype=String, description="female, male or unknown."),
    Field(name="length_of_stay_days", dtype=Int64, description="time_in_hospital, days."),
    Field(
        name="emergency_admission", dtype=Int64, description="1 for admission type Emergency, Urgent or Trauma Center."
    ),
    Field(name="prior_inpatient_12m", dtype=Int64, description="Inpatient visits in the year before the encounter."),
    Field(name="prior_outpatient_12m", dtype=Int64, description="Outpatient visits in the year before the encounter."),
    Field(name="prior_ed_12m", dtype=Int64, description="Emergency visits in the year before the encounter."),
    Field(name="charlson_index", dtype=Int64, description="Charlson index of diag_1..3 (ICD-9-CM, Quan 2005)."),
    Field(name="num_diagnoses", dtype=Int64, description="number_diagnoses."),
    Field(name="num_lab_procedures", dtype=Int64, description="num_lab_procedures."),
    Field(name="num_procedures", dtype=Int64, description="num_procedures."),
    Field(name="num_medications", dtype=Int64, description="num_medications."),
    Field(name="admission_type", dtype=String, description="Decoded admission_type_id."),
    Field(name="admission_source", dtype=String, description="Decoded admission_source_id."),
    Field(name="discharge_disposition", dtype=String, description="Decoded discharge_disposition_id."),
    Field(name="max_glu_serum", dtype=String, description="None, Norm, >200 or >300."),
    Field(name="a1c_result", dtype=String, description="None, Norm, >7 or >8."),
    Field(name="insulin", dtype=String, description="No, Steady, Up or Down."),
    Field(name="medication_change", dtype=Int64, description="1 when diabetes medication changed."),
    Field(name="diabetes_medication", dtype=Int64, description="1 when diabetes medication was prescribed."),
    Field(name="lace_score", dtype=Int64, description="LACE with prior-year (not 6-month) ED visits."),
    Field(name="encounter_order", dtype=Int64, description="Position of the stay among the patient's stays, from 1."),
    Field(name="medical_specialty", dtype=String, description="Specialty of the admitting physician, or unknown."),
    Field(name="diagnosis_1_category", dtype=String, description="3-character ICD-9-CM category of diag_1."),
    Field(name="diagnosis_2_category", dtype=String, description="3-character ICD-9-CM category of diag_2."),
    Field(name="diagnosis_3_category", dtype=String, description="3-character ICD-9-CM category of diag_3."),
    Field(name="previous_stay_readmitted_30d", dtype=Int64, description="1 when the previous stay's outcome was <30."),
    Field(
        name="previous_stay_readmitted_later", dtype=Int64, description="1 when the previous stay's outcome was >30."
    ),
    Field(name="prior_stays_readmitted_30d", dtype=Int64, description="Earlier stays with outcome <30."),
    Field(name="prior_stays_readmitted_later", dtype=Int64, description="Earlier stays with outcome >30."),
]

# The stay id of the joined row comes back as `source_stay_id`, so a caller can check that the
# point-in-time join picked the stay it asked about.
SOURCE_STAY = Field(name="source_stay_id", dtype=String, description="Stay the feature row was computed for.")

fhir_patient_latest_stay = FeatureView(
    name="fhir_patient_latest_stay",
    entities=[patient],
    ttl=HISTORY_TTL,
    schema=[SOURCE_STAY, *FHIR_FEATURES],
    source=fhir_stay_source,
    online=True,
    description="Features of the patient's latest discharged stay at the requested time (point in time).",
)

fhir_stay = FeatureView(
    name="fhir_stay",
    entities=[stay],
    ttl=HISTORY_TTL,
    schema=FHIR_FEATURES,
    source=fhir_stay_source,
    online=True,
    description="Features of one stay, looked up by stay id.",
)

uci_patient_latest_encounter = FeatureView(
    name="uci_patient_latest_encounter",
    entities=[patient],
    ttl=HISTORY_TTL,
    schema=[SOURCE_STAY, *UCI_FEATURES],
    source=uci_encounter_source,
    online=True,
    description="UCI Diabetes 130-US features of the patient's latest encounter at the requested (synthetic) time.",
)

readmission_fhir_v1 = FeatureService(
    name="readmission_fhir_v1",
    features=[fhir_patient_latest_stay],
    description="30-day unplanned readmission, FHIR data: features known at discharge.",
)

readmission_uci_v1 = FeatureService(
    name="readmission_uci_v1",
    features=[uci_patient_latest_encounter],
    description="30-day readmission, UCI Diabetes 130-US data (label readmitted == '<30').",
)
