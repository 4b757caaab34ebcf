"""The raw zone: versioned resources, ingest batches and rejected input (tables from 0010_raw_zone.sql).

Storing is idempotent: a resource whose (type, id, content hash) is already stored is "unchanged"; new
content for a stored (type, id) becomes the next version. Callers run these functions inside one
transaction and commit only after the matching events are acknowledged by Kafka.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson
import psycopg

from ingestion.fhir.checking import Candidate, Rejection
from ingestion.fhir.outcome import operation_outcome, reason_of

logger = logging.getLogger(__name__)

STAGE = "ingestion"
# Concurrent writers of new versions of one resource can both pick the same next version number; the loser
# gets a unique violation and retries on fresh data.
MAX_VERSION_RETRIES = 5

_INSERT_NEW = """
INSERT INTO raw.resources
    (resource_type, resource_id, version, patient_id, content, content_hash, source, source_ref, batch_id)
SELECT i.resource_type, i.resource_id,
       coalesce((SELECT max(r.version) FROM raw.resources r
                 WHERE r.resource_type = i.resource_type AND r.resource_id = i.resource_id), 0)
         + row_number() OVER (PARTITION BY i.resource_type, i.resource_id ORDER BY i.position),
       i.patient_id, i.content, i.content_hash, %(source)s, i.source_ref, %(batch_id)s
FROM (
    SELECT DISTINCT ON (resource_type, resource_id, content_hash) *
    FROM incoming
    ORDER BY resource_type, resource_id, content_hash, position
) i
WHERE NOT EXISTS (
    SELECT 1 FROM raw.resources r
    WHERE r.resource_type = i.resource_type AND r.resource_id = i.resource_id AND r.content_hash = i.content_hash
)
RETURNING id, resource_type, resource_id, version, content_hash, patient_id
"""


@dataclass(frozen=True)
class StoredRow:
    """A row added to raw.resources now."""

    raw_id: int
    resource_type: str
    resource_id: str
    version: int
    content_hash: str
    patient_id: str | None


@dataclass(frozen=True)
class StoredRejection:
    rejected_id: int
    dead_letter_id: int
    reason: str
    resource_type: str | None
    patient_id: str | None = None


def start_batch(connection: psycopg.Connection, *, batch_id: str, source: str, source_ref: str) -> None:
    connection.execute(
        "INSERT INTO raw.batches (batch_id, source, source_ref) VALUES (%s, %s, %s)",
        (batch_id, source, source_ref),
    )


def add_batch_counts(
    connection: psycopg.Connection,
    *,
    batch_id: str,
    accepted: int,
    unchanged: int,
    rejected: int,
    finished: bool,
) -> None:
    connection.execute(
        "UPDATE raw.batches SET accepted = accepted + %s, unchanged = unchanged + %s, rejected = rejected + %s,"
        " finished_at = CASE WHEN %s THEN now() ELSE finished_at END WHERE batch_id = %s",
        (accepted, unchanged, rejected, finished, batch_id),
    )


def store_resources(
    connection: psycopg.Connection, candidates: list[Candidate], *, source: str, batch_id: str
) -> dict[tuple[str, str, str], StoredRow]:
    """Insert the candidates not stored yet; return the new rows keyed by (type, id, content hash)."""
    if not candidates:
        return {}
    for attempt in range(1, MAX_VERSION_RETRIES + 1):
        try:
            with connection.transaction():
                return _insert(connection, candidates, source=source, batch_id=batch_id)
        except psycopg.errors.UniqueViolation:
            if attempt == MAX_VERSION_RETRIES:
                raise
            logger.warning("concurrent write of a resource version; retrying (attempt %d)", attempt)
    raise AssertionError("unreachable")


def _insert(
    connection: psycopg.Connection, candidates: list[Candidate], *, source: str, batch_id: str
) -> dict[tuple[str, str, str], StoredRow]:
    connection.execute(
        "CREATE TEMP TABLE IF NOT EXISTS incoming (position integer, resource_type text, resource_id text,"
        " patient_id text, content jsonb, content_hash text, source_ref text) ON COMMIT DELETE ROWS"
    )
    connection.execute("TRUNCATE incoming")
    with connection.cursor() as cursor:
        with cursor.copy(
            "COPY incoming (position, resource_type, resource_id, patient_id, content, content_hash, source_ref)"
            " FROM STDIN"
        ) as copy:
            for position, candidate in enumerate(candidates):
                copy.write_row(
                    (
                        position,
                        candidate.resource_type,
                        candidate.resource_id,
                        candidate.patient_id,
                        candidate.content_json.decode("utf-8"),
                        candidate.content_hash,
                        candidate.source_ref,
                    )
                )
        cursor.execute(_INSERT_NEW, {"source": source, "batch_id": batch_id})
        rows = cursor.fetchall()
    return {(row[1], row[2], row[4]): StoredRow(*row) for row in rows}


def store_rejection(
    connection: psycopg.Connection, rejection: Rejection, *, source: str, batch_id: str
) -> StoredRejection:
    """Keep the rejected input in raw.rejected and add a PHI-free row to ops.dead_letter."""
    reason = reason_of(rejection.issues)
    outcome = operation_outcome(rejection.issues)
    rejected_row = connection.execute(
        "INSERT INTO raw.rejected (batch_id, source, source_ref, resource_type, reason, outcome, content)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            batch_id,
            source,
            rejection.source_ref,
            rejection.resource_type,
            reason,
            orjson.dumps(outcome).decode(),
            rejection.content.replace("\x00", ""),
        ),
    ).fetchone()
    assert rejected_row is not None
    details = {"rejected_id": rejected_row[0], "batch_id": batch_id, "resource_type": rejection.resource_type}
    dead_letter_row = connection.execute(
        "INSERT INTO ops.dead_letter (stage, source, reason, details) VALUES (%s, %s, %s, %s) RETURNING id",
        (STAGE, source, reason, orjson.dumps(details).decode()),
    ).fetchone()
    assert dead_letter_row is not None
    return StoredRejection(rejected_row[0], dead_letter_row[0], reason, rejection.resource_type)
