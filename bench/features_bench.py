"""Benchmark of the feature stage on the real data sets; writes one JSON report.

Steps, each timed on this machine:
1. setup (not part of the targets): de-identify the Synthea bundles with the DeID stage's code and write them
   into the deid zone of a dedicated database (``features_bench`` unless --database is given);
2. Featurizer rebuild of every patient from the deid zone (target: 615 patients in < 60 s), run twice: the
   first run inserts every stay, the second finds them unchanged;
3. index stays, readmission rate and the completeness of each feature column;
4. UCI Diabetes 130-US import (target: < 60 s), row count and label rate;
5. ``feast apply`` and ``feast materialize-incremental`` times, and the online row count per feature view.

Usage: ``uv run python bench/features_bench.py OUTPUT.json [--synthea DIR] [--uci ZIP] [--reuse-deid] [--skip-feast]``.
The local stack must be running (``healthflow stack up``).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import orjson

from healthflow.db import apply_migrations, connect, drop_database, ensure_database
from healthflow.logs import configure_logging
from healthflow.settings import Settings, load_settings
from ingestion.deid.offline import FileReport, deidentify_entries, parse_file
from ingestion.deid.rules import load_rules
from ingestion.deid.transform import DeidConfig, Deidentifier
from ingestion.featurizer import feast_repo
from ingestion.featurizer.statistics import stay_statistics
from ingestion.featurizer.worker import rebuild_all
from ingestion.uci.importer import import_uci

logger = logging.getLogger("bench.features")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BATCH_ID = "bench-synthea"


def fill_deid_zone(settings: Settings, synthea_dir: Path) -> dict[str, Any]:
    """De-identify every patient Bundle of ``synthea_dir`` into deid.resources; return counts and seconds."""
    started = time.perf_counter()
    deidentifier = Deidentifier(load_rules(settings.deid_rules_file), DeidConfig.from_settings(settings))
    report = FileReport()
    raw_ids = count(1)
    files = sorted(path for path in synthea_dir.glob("*.json.gz") if "Information" not in path.name)
    with connect(settings) as connection:
        connection.execute(
            "INSERT INTO raw.batches (batch_id, source, source_ref) VALUES (%s, 'file', 'synthea-r4 benchmark')"
            " ON CONFLICT DO NOTHING",
            (BATCH_ID,),
        )
        for path in files:
            rows = [
                (
                    next(raw_ids),
                    settings.deid_profile,
                    result.resource_type,
                    result.pseudo_id,
                    1,
                    result.patient_pseudonym,
                    orjson.dumps(result.resource).decode(),
                    "bench",
                    BATCH_ID,
                )
                for result in deidentify_entries(deidentifier, parse_file(path), report)
            ]
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO deid.resources (raw_id, profile, resource_type, pseudo_id, version,"
                    " patient_pseudonym, content, content_hash, batch_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    rows,
                )
            connection.commit()
    return {
        "files": len(files),
        "resources_written": sum(report.written.values()),
        "failed": len(report.failures),
        "seconds": round(time.perf_counter() - started, 2),
    }


def online_counts(settings: Settings) -> dict[str, int]:
    with connect(settings, settings.pg_feast_database) as connection:
        return {
            view: connection.execute(f"SELECT count(DISTINCT entity_key) FROM healthflow_{view}").fetchone()[0]  # noqa: S608 - fixed names
            for view in ("fhir_patient_latest_stay", "fhir_stay", "uci_patient_latest_encounter")
        }


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    base = load_settings()
    settings = base.model_copy(
        update={"pg_database": arguments.database, "pg_feast_database": f"{arguments.database}_feast"}
    )
    databases = (
        [settings.pg_feast_database] if arguments.reuse_deid else [settings.pg_database, settings.pg_feast_database]
    )
    for database in databases:
        drop_database(base, database)
        ensure_database(base, database)
    apply_migrations(settings)
    if arguments.reuse_deid:
        with connect(settings) as connection:
            connection.execute("TRUNCATE features.stays, features.uci_encounters")
            connection.commit()

    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": _cpus()},
    }
    if not arguments.reuse_deid:
        result["deid_fill"] = fill_deid_zone(settings, arguments.synthea)
        logger.info("deid zone filled: %s", result["deid_fill"])

    first = rebuild_all(settings)
    second = rebuild_all(settings)
    result["featurizer"] = {
        "patients": first.patients,
        "stays": first.stays,
        "first_rebuild_seconds": round(first.durations["rebuild_seconds"], 2),
        "first_rebuild_patients_per_second": round(first.patients / first.durations["rebuild_seconds"], 1),
        "second_rebuild_seconds": round(second.durations["rebuild_seconds"], 2),
        "second_rebuild_unchanged": second.unchanged,
        "target_seconds": 60,
    }
    result["synthea"] = stay_statistics(settings)

    result["uci"] = import_uci(settings, arguments.uci) | {"target_seconds": 60}

    if not arguments.skip_feast:
        started = time.perf_counter()
        feast_repo.apply(settings)
        applied = time.perf_counter()
        feast_repo.materialize_incremental(settings)
        materialized = time.perf_counter()
        result["feast"] = {
            "apply_seconds": round(applied - started, 2),
            "materialize_incremental_seconds": round(materialized - applied, 2),
            "online_entities": online_counts(settings),
        }
    result["finished_at"] = datetime.now(UTC).isoformat()
    return result


def _cpus() -> int | None:
    import os

    return os.cpu_count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="Path of the JSON report to write.")
    parser.add_argument("--synthea", type=Path, default=SHARED_DATA / "synthea-r4", help="Folder of Synthea Bundles.")
    parser.add_argument(
        "--uci", type=Path, default=SHARED_DATA / "uci-diabetes-130" / "dataset_diabetes.zip", help="UCI archive."
    )
    parser.add_argument("--database", default="features_bench", help="Database to (re)create for the run.")
    parser.add_argument(
        "--reuse-deid", action="store_true", help="Keep the deid zone of a previous run; only the features are rebuilt."
    )
    parser.add_argument("--skip-feast", action="store_true", help="Skip feast apply and materialize.")
    arguments = parser.parse_args()

    configure_logging(level="INFO", log_format="text")
    result = run(arguments)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    logger.info("wrote %s", arguments.output)


if __name__ == "__main__":
    main()
