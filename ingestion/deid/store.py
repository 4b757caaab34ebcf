"""PostgreSQL access of the DeID worker: raw rows in, deid rows, dropped counts and dead letters out.

Every write is idempotent on the raw row id and profile, so a replayed event changes nothing: the
de-identified resource is stored once, a dropped resource is counted once, a failure is dead-lettered once.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

STAGE = "deid"
_URN_UUID = re.compile(r"urn:uuid:[0-9A-Za-z\-.]{1,64}")


@dataclass(frozen=True)
class RawRow:
    """One raw-zone row; ``content`` contains PHI and must never leave this process except de-identified."""

    raw_id: int
    resource_type: str
    resource_id: str
    version: int
    patient_id: str | None
    batch_id: str
    content: dict[str, Any]
    urn_references: frozenset[str]


@dataclass(frozen=True)
class StoredDeid:
    """A row of deid.resources as published on fhir.deid."""

    deid_id: int
    raw_id: int
    resource_type: str
    pseudo_id: str
    version: int
    patient_pseudonym: str | None
    batch_id: str
    content: dict[str, Any]


def fetch_raw_rows(connection: psycopg.Connection, raw_ids: list[int]) -> dict[int, RawRow]:
    """Return the raw rows with these ids, by id; ids with no row are absent."""
    rows = connection.execute(
        "SELECT id, resource_type, resource_id, version, patient_id, batch_id, content::text"
        " FROM raw.resources WHERE id = ANY(%s)",
        (raw_ids,),
    ).fetchall()
    found = {}
    for raw_id, resource_type, resource_id, version, patient_id, batch_id, text in rows:
        found[raw_id] = RawRow(
            raw_id=raw_id,
            resource_type=resource_type,
            resource_id=resource_id,
            version=version,
            patient_id=patient_id,
            batch_id=batch_id,
            content=orjson.loads(text),
            urn_references=frozenset(_URN_UUID.findall(text)),
        )
    return found


def resource_types_by_id(connection: psycopg.Connection, resource_ids: list[str]) -> dict[str, str]:
    """Return the resource type of each raw resource id found in the raw zone.

    NOTE: two raw resources of different types may share an id; the type returned is then arbitrary, and
    a reference to that id may get the pseudonym of the wrong type.
    """
    if not resource_ids:
        return {}
    rows = connection.execute(
        "SELECT DISTINCT ON (resource_id) resource_id, resource_type FROM raw.resources"
        " WHERE resource_id = ANY(%s) ORDER BY resource_id, resource_type",
        (resource_ids,),
    ).fetchall()
    return dict(rows)


def content_hash(content: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def store_deidentified(
    connection: psycopg.Connection, records: list[dict[str, Any]], *, profile: str
) -> dict[int, StoredDeid]:
    """Insert de-identified resources (skipping raw ids already stored) and return every stored row by raw id.

    A replayed raw id returns the row stored the first time, so the republished event carries the same content.
    """
    if not records:
        return {}
    # One statement for the whole batch, because a statement per record cost the database more than the rows.
    # The arrays go in binary format (%b), which psycopg writes without escaping every quote of the JSON.
    rows = connection.execute(
        "INSERT INTO deid.resources (raw_id, profile, resource_type, pseudo_id, version, patient_pseudonym,"
        " content, content_hash, batch_id)"
        " SELECT raw_id, %s, resource_type, pseudo_id, version, patient_pseudonym, content::jsonb, content_hash,"
        " batch_id FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::integer[], %b::text[], %b::text[],"
        " %b::text[], %b::text[])"
        " AS batch(raw_id, resource_type, pseudo_id, version, patient_pseudonym, content, content_hash, batch_id)"
        " ON CONFLICT (raw_id, profile) DO NOTHING"
        " RETURNING id, raw_id, resource_type, pseudo_id, version, patient_pseudonym, batch_id",
        (
            profile,
            [record["raw_id"] for record in records],
            [record["resource_type"] for record in records],
            [record["pseudo_id"] for record in records],
            [record["version"] for record in records],
            [record["patient_pseudonym"] for record in records],
            [orjson.dumps(record["content"]).decode() for record in records],
            [content_hash(record["content"]) for record in records],
            [record["batch_id"] for record in records],
        ),
    ).fetchall()
    # Only new rows come back; a raw id stored before (a replay) is read back below.
    contents = {record["raw_id"]: record["content"] for record in records}
    stored = {row[1]: _stored(row, contents[row[1]]) for row in rows}

    replayed = [record["raw_id"] for record in records if record["raw_id"] not in stored]
    if replayed:
        rows = connection.execute(
            "SELECT id, raw_id, resource_type, pseudo_id, version, patient_pseudonym, batch_id, content::text"
            " FROM deid.resources WHERE raw_id = ANY(%s) AND profile = %s",
            (replayed, profile),
        ).fetchall()
        for row in rows:
            stored[row[1]] = _stored(row, orjson.loads(row[7]))
    return stored


def _stored(row: tuple[Any, ...], content: dict[str, Any]) -> StoredDeid:
    return StoredDeid(
        deid_id=row[0],
        raw_id=row[1],
        resource_type=row[2],
        pseudo_id=row[3],
        version=row[4],
        patient_pseudonym=row[5],
        batch_id=row[6],
        content=content,
    )


def record_dropped(connection: psycopg.Connection, rows: list[RawRow], *, profile: str) -> Counter[tuple[str, str]]:
    """Count raw rows dropped for having no rule; a row already counted is not counted again."""
    counted: Counter[tuple[str, str]] = Counter()
    for row in rows:
        inserted = connection.execute(
            "INSERT INTO deid.dropped_resources (raw_id, profile, resource_type, batch_id) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING raw_id",
            (row.raw_id, profile, row.resource_type, row.batch_id),
        ).fetchone()
        if inserted:
            counted[(row.batch_id, row.resource_type)] += 1
    for (batch_id, resource_type), dropped in counted.items():
        connection.execute(
            "INSERT INTO deid.dropped_types (batch_id, resource_type, dropped) VALUES (%s, %s, %s)"
            " ON CONFLICT (batch_id, resource_type)"
            " DO UPDATE SET dropped = deid.dropped_types.dropped + EXCLUDED.dropped",
            (batch_id, resource_type, dropped),
        )
    return counted


def record_dead_letter(
    connection: psycopg.Connection, *, source: str, reason: str, dedup_key: str, details: dict[str, Any]
) -> tuple[int, bool]:
    """Insert one dead-letter row unless ``dedup_key`` has one already; return (row id, whether it is new).

    ``reason`` and ``details`` must not hold patient data: resource types, element paths and row ids only.
    """
    inserted = connection.execute(
        "INSERT INTO ops.dead_letter (stage, source, reason, details) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT ((details ->> 'dedup_key')) WHERE stage = 'deid' DO NOTHING RETURNING id",
        (STAGE, source, reason, Jsonb({**details, "dedup_key": dedup_key})),
    ).fetchone()
    if inserted:
        return inserted[0], True
    existing = connection.execute(
        "SELECT id FROM ops.dead_letter WHERE stage = 'deid' AND details ->> 'dedup_key' = %s", (dedup_key,)
    ).fetchone()
    assert existing is not None
    return existing[0], False
