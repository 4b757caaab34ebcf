-- The feature store's offline tables: one row per computation of an index inpatient stay (FHIR) and one row per
-- UCI Diabetes 130-US encounter. Every row is pseudonymised; timestamps are UTC and, for FHIR, in the
-- patient's shifted timeline (intervals are exact, absolute dates are not real).

-- A patient's rows are recomputed whenever new data for the patient arrives. A recomputation that changes a
-- stay appends a new version (a later created_at) and clears `current` on the old one, which stays for
-- lineage; `current` marks the newest version of each stay that still exists.
CREATE TABLE IF NOT EXISTS features.stays (
    id bigserial PRIMARY KEY,
    patient_pseudonym text NOT NULL,
    stay_id text NOT NULL,
    admitted_at timestamptz NOT NULL,
    discharged_at timestamptz NOT NULL,          -- the Feast event timestamp
    label smallint NOT NULL CHECK (label IN (0, 1)),
    label_available_at timestamptz NOT NULL,     -- discharge + the readmission window
    days_to_next_stay double precision,          -- gap to the next unplanned stay, days; NULL when none
    features jsonb NOT NULL,
    audit jsonb NOT NULL,                        -- race, ethnicity, sex, age_band: audit attributes, not inputs
    lineage jsonb NOT NULL,                      -- resources (type, pseudo_id, version, deid_id, batch_id), batches, sources
    row_hash text NOT NULL,                      -- hash of label and features: an unchanged recomputation adds nothing
    current boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS stays_patient_idx ON features.stays (patient_pseudonym, stay_id);
CREATE UNIQUE INDEX IF NOT EXISTS stays_current_idx ON features.stays (stay_id) WHERE current;
CREATE INDEX IF NOT EXISTS stays_discharged_idx ON features.stays (discharged_at);

-- Typed view for Feast (offline source of the FHIR feature views): the current version of each stay.
-- Nullable columns are NULL when the feature is unknown (no lab value before discharge, no birth date).
CREATE OR REPLACE VIEW features.fhir_stay_features AS
SELECT
    s.patient_pseudonym,
    s.stay_id,
    s.stay_id AS source_stay_id,
    s.discharged_at AS event_timestamp,
    s.created_at,
    s.admitted_at,
    s.label,
    s.label_available_at,
    s.current,
    (s.features ->> 'age_at_admission')::integer AS age_at_admission,
    s.features ->> 'age_band' AS age_band,
    s.features ->> 'sex' AS sex,
    (s.features ->> 'length_of_stay_days')::double precision AS length_of_stay_days,
    (s.features ->> 'emergency_admission')::integer AS emergency_admission,
    (s.features ->> 'prior_inpatient_6m')::integer AS prior_inpatient_6m,
    (s.features ->> 'prior_inpatient_12m')::integer AS prior_inpatient_12m,
    (s.features ->> 'prior_ed_6m')::integer AS prior_ed_6m,
    (s.features ->> 'prior_ed_12m')::integer AS prior_ed_12m,
    (s.features ->> 'charlson_index')::integer AS charlson_index,
    (s.features ->> 'active_conditions')::integer AS active_conditions,
    (s.features ->> 'active_medications')::integer AS active_medications,
    (s.features ->> 'procedures_during_stay')::integer AS procedures_during_stay,
    s.features ->> 'discharge_disposition' AS discharge_disposition,
    (s.features ->> 'hemoglobin_last')::double precision AS hemoglobin_last,
    (s.features ->> 'hemoglobin_abnormal')::integer AS hemoglobin_abnormal,
    (s.features ->> 'sodium_last')::double precision AS sodium_last,
    (s.features ->> 'sodium_abnormal')::integer AS sodium_abnormal,
    (s.features ->> 'creatinine_last')::double precision AS creatinine_last,
    (s.features ->> 'creatinine_abnormal')::integer AS creatinine_abnormal,
    (s.features ->> 'glucose_last')::double precision AS glucose_last,
    (s.features ->> 'glucose_abnormal')::integer AS glucose_abnormal,
    (s.features ->> 'hba1c_last')::double precision AS hba1c_last,
    (s.features ->> 'hba1c_abnormal')::integer AS hba1c_abnormal,
    (s.features ->> 'lace_score')::integer AS lace_score,
    (s.features ->> 'hospital_score')::integer AS hospital_score,
    s.audit ->> 'race' AS race,
    s.audit ->> 'ethnicity' AS ethnicity
FROM features.stays AS s
WHERE s.current;

-- UCI Diabetes 130-US: one row per encounter, with synthetic event timestamps that follow encounter_id order
-- within a patient (see ingestion/uci/adapter.py). encounter_rank and encounter_order keep that ordering.
CREATE TABLE IF NOT EXISTS features.uci_encounters (
    stay_id text PRIMARY KEY,
    patient_pseudonym text NOT NULL,
    event_timestamp timestamptz NOT NULL,
    label smallint NOT NULL CHECK (label IN (0, 1)),
    label_available_at timestamptz NOT NULL,
    encounter_rank integer NOT NULL,
    encounter_order integer NOT NULL,
    features jsonb NOT NULL,
    audit jsonb NOT NULL,
    import_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS uci_encounters_patient_idx ON features.uci_encounters (patient_pseudonym, event_timestamp);

CREATE OR REPLACE VIEW features.uci_encounter_features AS
SELECT
    u.patient_pseudonym,
    u.stay_id,
    u.stay_id AS source_stay_id,
    u.event_timestamp,
    u.created_at,
    u.label,
    u.label_available_at,
    u.encounter_rank,
    u.encounter_order,
    u.features ->> 'age_band' AS age_band,
    u.features ->> 'sex' AS sex,
    (u.features ->> 'length_of_stay_days')::integer AS length_of_stay_days,
    (u.features ->> 'emergency_admission')::integer AS emergency_admission,
    (u.features ->> 'prior_inpatient_12m')::integer AS prior_inpatient_12m,
    (u.features ->> 'prior_outpatient_12m')::integer AS prior_outpatient_12m,
    (u.features ->> 'prior_ed_12m')::integer AS prior_ed_12m,
    (u.features ->> 'charlson_index')::integer AS charlson_index,
    (u.features ->> 'num_diagnoses')::integer AS num_diagnoses,
    (u.features ->> 'num_lab_procedures')::integer AS num_lab_procedures,
    (u.features ->> 'num_procedures')::integer AS num_procedures,
    (u.features ->> 'num_medications')::integer AS num_medications,
    u.features ->> 'admission_type' AS admission_type,
    u.features ->> 'admission_source' AS admission_source,
    u.features ->> 'discharge_disposition' AS discharge_disposition,
    u.features ->> 'max_glu_serum' AS max_glu_serum,
    u.features ->> 'a1c_result' AS a1c_result,
    u.features ->> 'insulin' AS insulin,
    (u.features ->> 'medication_change')::integer AS medication_change,
    (u.features ->> 'diabetes_medication')::integer AS diabetes_medication,
    (u.features ->> 'lace_score')::integer AS lace_score,
    u.audit ->> 'race' AS race,
    u.audit ->> 'ethnicity' AS ethnicity
FROM features.uci_encounters AS u;
