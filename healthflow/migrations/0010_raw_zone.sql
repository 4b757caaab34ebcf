-- The raw zone: the only place identifiable data (PHI) may live.
-- One row per version of a resource. Re-ingesting the same content adds nothing (unique content hash per
-- resource); new content for the same type and id becomes the next version.
CREATE TABLE IF NOT EXISTS raw.resources (
    id bigserial PRIMARY KEY,
    resource_type text NOT NULL,
    resource_id text NOT NULL,
    version integer NOT NULL,
    patient_id text,
    content jsonb NOT NULL,
    content_hash text NOT NULL,
    source text NOT NULL,
    source_ref text NOT NULL,
    batch_id text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (resource_type, resource_id, version),
    UNIQUE (resource_type, resource_id, content_hash)
);
CREATE INDEX IF NOT EXISTS raw_resources_patient_idx ON raw.resources (patient_id);
CREATE INDEX IF NOT EXISTS raw_resources_batch_idx ON raw.resources (batch_id);

-- Ingest batches (a file, a folder run, an HTTP request, a server pull) and their counts.
CREATE TABLE IF NOT EXISTS raw.batches (
    batch_id text PRIMARY KEY,
    source text NOT NULL,
    source_ref text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    accepted integer NOT NULL DEFAULT 0,
    unchanged integer NOT NULL DEFAULT 0,
    rejected integer NOT NULL DEFAULT 0
);

-- Input that failed validation, kept here because it may hold PHI. The dead-letter table and topic
-- refer to it by id and carry only the reason.
CREATE TABLE IF NOT EXISTS raw.rejected (
    id bigserial PRIMARY KEY,
    batch_id text NOT NULL,
    source text NOT NULL,
    source_ref text NOT NULL,
    resource_type text,
    reason text NOT NULL,
    outcome jsonb NOT NULL,
    content text,
    received_at timestamptz NOT NULL DEFAULT now()
);
