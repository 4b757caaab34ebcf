-- Schemas of the zones. Only `raw` may hold identifiable data (PHI); every other schema holds
-- pseudonymised data only.
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS deid;
CREATE SCHEMA IF NOT EXISTS features;
CREATE SCHEMA IF NOT EXISTS serving;
CREATE SCHEMA IF NOT EXISTS monitoring;
CREATE SCHEMA IF NOT EXISTS ops;

-- Rejected input from every stage. `reason` and `details` never contain the payload of a resource that
-- passed validation into the deid stage; a payload that failed ingestion is kept in the raw zone instead
-- (`raw.rejected`), because it may hold PHI.
CREATE TABLE IF NOT EXISTS ops.dead_letter (
    id bigserial PRIMARY KEY,
    stage text NOT NULL,
    source text NOT NULL,
    reason text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dead_letter_stage_idx ON ops.dead_letter (stage, created_at);
