-- The prediction log: one row per score the API returned. Monitoring reads it as production data.
-- Pseudonymised only: the patient id a caller may send is never stored here.
CREATE TABLE IF NOT EXISTS serving.predictions (
    id bigserial PRIMARY KEY,
    scored_at timestamptz NOT NULL,
    patient_pseudonym text NOT NULL,
    stay_id text NOT NULL,
    feature_service text NOT NULL,
    model_name text NOT NULL,
    model_version text NOT NULL,
    run_id text NOT NULL,
    probability double precision NOT NULL CHECK (probability >= 0 AND probability <= 1),
    risk_level text NOT NULL,
    features jsonb NOT NULL,
    missing_features text[] NOT NULL DEFAULT '{}',
    lineage jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Discharge time of the stay (UTC) when the feature row carries one; GET /v1/scores filters on it.
    discharged_at timestamptz,
    request_subject text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS predictions_patient_idx ON serving.predictions (patient_pseudonym, scored_at DESC);
CREATE INDEX IF NOT EXISTS predictions_model_idx ON serving.predictions (model_name, model_version, scored_at);
CREATE INDEX IF NOT EXISTS predictions_scored_at_idx ON serving.predictions (scored_at);
