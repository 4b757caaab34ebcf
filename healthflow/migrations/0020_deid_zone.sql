-- The de-identified zone: pseudonymised, date-shifted resources only.
-- One row per raw resource version and profile: a replayed event hits the unique key and changes nothing.
CREATE TABLE IF NOT EXISTS deid.resources (
    id bigserial PRIMARY KEY,
    raw_id bigint NOT NULL,
    profile text NOT NULL,
    resource_type text NOT NULL,
    pseudo_id text NOT NULL,
    version integer NOT NULL,
    patient_pseudonym text,
    content jsonb NOT NULL,
    content_hash text NOT NULL,
    batch_id text NOT NULL,
    deidentified_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (raw_id, profile)
);
CREATE INDEX IF NOT EXISTS deid_resources_patient_idx ON deid.resources (patient_pseudonym);
CREATE INDEX IF NOT EXISTS deid_resources_type_idx ON deid.resources (resource_type, pseudo_id);

-- Resource types dropped because the rules have no entry for them, counted per batch.
CREATE TABLE IF NOT EXISTS deid.dropped_types (
    batch_id text NOT NULL,
    resource_type text NOT NULL,
    dropped integer NOT NULL,
    PRIMARY KEY (batch_id, resource_type)
);
