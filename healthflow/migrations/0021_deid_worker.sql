-- Support for the DeID worker.

-- Resolving a `urn:uuid:<id>` reference needs the type of the raw resource with that id.
CREATE INDEX IF NOT EXISTS raw_resources_resource_id_idx ON raw.resources (resource_id);

-- Raw resources dropped because their type has no rule, one row per raw row and profile, so that a
-- replayed event does not count the same resource twice in deid.dropped_types.
CREATE TABLE IF NOT EXISTS deid.dropped_resources (
    raw_id bigint NOT NULL,
    profile text NOT NULL,
    resource_type text NOT NULL,
    batch_id text NOT NULL,
    dropped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (raw_id, profile)
);

-- One dead-letter row per failed raw row and profile (or per unreadable event), however often the event
-- is replayed. The key is in details.dedup_key.
CREATE UNIQUE INDEX IF NOT EXISTS dead_letter_deid_dedup_idx
    ON ops.dead_letter ((details ->> 'dedup_key')) WHERE stage = 'deid';
