"""PostgreSQL access of the Featurizer: read a patient's resources from the deid zone, write its stay rows."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_loads

from ingestion.featurizer.labs import LAB_BY_CODE
from ingestion.featurizer.stays import SourceResource

logger = logging.getLogger(__name__)

# Latest version of each resource per patient; an older version can never win, whatever the arrival order.
# Only the resource types the features read are loaded, and of the Observations only the lab codes: the rest
# (claims, explanations of benefit, vital signs) is most of a Synthea record and would only slow a rebuild.
_PATIENT_RESOURCES_SQL = """
SELECT DISTINCT ON (patient_pseudonym, resource_type, pseudo_id)
       patient_pseudonym, resource_type, pseudo_id, version, id, batch_id, content
FROM deid.resources
WHERE profile = %(profile)s AND patient_pseudonym = ANY(%(patients)s) AND resource_type = ANY(%(types)s)
  AND (resource_type <> 'Observation' OR jsonb_path_exists(content, '$.code.coding[*].code ? (@ == $codes[*])',
                                                          jsonb_build_object('codes', %(lab_codes)s::jsonb)))
ORDER BY patient_pseudonym, resource_type, pseudo_id, version DESC, id DESC
"""

# Resource types build_patient_rows reads.
FEATURE_RESOURCE_TYPES = ["Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "Procedure"]


def load_patient_resources(
    connection: psycopg.Connection, patients: list[str], *, profile: str
) -> dict[str, list[SourceResource]]:
    """Return {patient pseudonym: latest version of each of its resources} read from deid.resources."""
    found: dict[str, list[SourceResource]] = {patient: [] for patient in patients}
    parameters = {
        "profile": profile,
        "patients": patients,
        "types": FEATURE_RESOURCE_TYPES,
        "lab_codes": orjson.dumps(sorted(LAB_BY_CODE)).decode(),
    }
    # JSONB content is decoded with orjson, as the event envelopes are.
    set_json_loads(orjson.loads, connection)
    cursor = connection.execute(_PATIENT_RESOURCES_SQL, parameters)
    for patient, resource_type, pseudo_id, version, deid_id, batch_id, content in cursor:
        lineage = {
            "resource_type": resource_type,
            "pseudo_id": pseudo_id,
            "version": version,
            "deid_id": deid_id,
            "batch_id": batch_id,
        }
        found[patient].append(SourceResource(content, lineage))
    return found


def patients_in_deid_zone(connection: psycopg.Connection, *, profile: str) -> list[str]:
    """Return every patient pseudonym with resources in the deid zone, sorted."""
    rows = connection.execute(
        "SELECT DISTINCT patient_pseudonym FROM deid.resources"
        " WHERE profile = %s AND patient_pseudonym IS NOT NULL ORDER BY 1",
        (profile,),
    ).fetchall()
    return [row[0] for row in rows]


def batch_sources(connection: psycopg.Connection, batch_ids: Iterable[str]) -> dict[str, str]:
    """Return {batch id: ingest source kind} from raw.batches; only the non-identifying ``source`` column is read."""
    ids = sorted(set(batch_ids))
    if not ids:
        return {}
    rows = connection.execute("SELECT batch_id, source FROM raw.batches WHERE batch_id = ANY(%s)", (ids,))
    return dict(rows.fetchall())


def row_hash(row: dict[str, Any]) -> str:
    """Return a hash of everything in a stay row except its lineage, so unchanged recomputations are skipped."""
    content = {key: row[key] for key in sorted(row) if key != "lineage"}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def replace_patient_rows(
    connection: psycopg.Connection, patient: str, rows: list[dict[str, Any]], sources: dict[str, str]
) -> dict[str, int]:
    """Make ``rows`` the current rows of ``patient``, inside the caller's transaction.

    A stay whose content did not change keeps its row. A changed stay gets a new version, and the old one is
    no longer current. A stay that disappeared (its Encounter was voided) is no longer current either.
    Returns counts: inserted, unchanged, retired.
    """
    # One writer per patient at a time, so two workers replaying the same patient cannot both insert.
    connection.execute("SELECT pg_advisory_xact_lock(hashtext('features.stays'), hashtext(%s))", (patient,))
    existing: dict[str, str] = dict(
        connection.execute(
            "SELECT stay_id, row_hash FROM features.stays WHERE patient_pseudonym = %s AND current", (patient,)
        ).fetchall()
    )
    computed = {row["stay_id"]: (row, row_hash(row)) for row in rows}

    retired = [stay for stay, digest in existing.items() if stay not in computed or computed[stay][1] != digest]
    if retired:
        connection.execute(
            "UPDATE features.stays SET current = false WHERE current AND patient_pseudonym = %s AND stay_id = ANY(%s)",
            (patient, retired),
        )

    inserted = 0
    for stay_id, (row, digest) in computed.items():
        if existing.get(stay_id) == digest:
            continue
        lineage = dict(row["lineage"])
        lineage["sources"] = sorted({sources[batch] for batch in lineage.get("batches", []) if batch in sources})
        connection.execute(
            "INSERT INTO features.stays (patient_pseudonym, stay_id, admitted_at, discharged_at, label,"
            " label_available_at, days_to_next_stay, features, audit, lineage, row_hash)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                patient,
                stay_id,
                row["admitted_at"],
                row["discharged_at"],
                row["label"],
                row["label_available_at"],
                row["days_to_next_stay"],
                Jsonb(row["features"]),
                Jsonb(row["audit"]),
                Jsonb(lineage),
                digest,
            ),
        )
        inserted += 1
    unchanged = len(computed) - inserted
    retired_only = len([stay for stay in retired if stay not in computed])
    return {"inserted": inserted, "unchanged": unchanged, "retired": retired_only}
