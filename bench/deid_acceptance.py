"""End-to-end acceptance check of DeID on the Synthea bundles, written as JSON.

Usage: uv run python bench/deid_acceptance.py OUTPUT.json [--bundles N]

Needs the local stack. In its own database and topic prefix (removed at the end), the script loads the
bundles into the raw zone with their fhir.raw events, runs `healthflow deid run` to the end with its log
in a scratch state folder, and then checks:
- counts per resource type in the raw zone and in the deid zone;
- every de-identified resource validates as FHIR R4;
- for every patient, every date of every de-identified resource moved by the same number of seconds
  from its raw resource, so every interval between two dates of the patient is unchanged. Birth dates of
  patients in the 90+ band are counted apart;
- `privacy scan` (database, topics, the worker's log) finds nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deid_bench import SYNTHEA, load_raw  # noqa: E402 - the bench folder is not a package

from healthflow.db import apply_migrations, connect, drop_database, ensure_database  # noqa: E402
from healthflow.errors import DeidentificationError  # noqa: E402
from healthflow.events import ensure_topics  # noqa: E402
from healthflow.settings import Settings, load_settings  # noqa: E402
from ingestion.deid.scan import run_scan  # noqa: E402
from ingestion.deid.validation import validate_resource  # noqa: E402

DATE_VALUE = re.compile(r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+([+-]\d{2}:\d{2}|Z))?$")


def dated_paths(value: Any, prefix: str = "") -> dict[str, str]:
    found: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            found |= dated_paths(item, f"{prefix}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found |= dated_paths(item, f"{prefix}[{index}]")
    elif isinstance(value, str) and DATE_VALUE.match(value):
        found[prefix] = value
    return found


def as_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text if "T" in text else text + "T00:00:00+00:00")


def run_worker(settings: Settings, state_dir: Path) -> dict[str, Any]:
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "HEALTHFLOW_PG_DATABASE": settings.pg_database,
        "HEALTHFLOW_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "HEALTHFLOW_STATE_DIR": str(state_dir),
    }
    executable = shutil.which("healthflow") or str(Path(sys.executable).with_name("healthflow"))
    started = time.monotonic()
    with (state_dir / "logs" / "deid-worker.log").open("wb") as log:
        completed = subprocess.run(
            [executable, "deid", "run", "--idle-exit", "5"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=log,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"deid worker failed with exit code {completed.returncode}")
    return {"seconds": round(time.monotonic() - started, 1), "output": completed.stdout.decode().strip()}


def check_zones(settings: Settings) -> dict[str, Any]:
    with connect(settings) as connection:
        raw_counts = dict(
            connection.execute("SELECT resource_type, count(*) FROM raw.resources GROUP BY 1 ORDER BY 1").fetchall()
        )
        deid_counts = dict(
            connection.execute("SELECT resource_type, count(*) FROM deid.resources GROUP BY 1 ORDER BY 1").fetchall()
        )
        duplicates = connection.execute("SELECT count(*) - count(DISTINCT raw_id) FROM deid.resources").fetchone()[0]
        dead_letters = connection.execute("SELECT count(*) FROM ops.dead_letter").fetchone()[0]

        invalid = 0
        offsets: dict[str, set[float]] = defaultdict(set)
        compared = 0
        banded_birth_dates = 0
        rows = connection.execute(
            "SELECT r.resource_type, r.patient_id, r.content::text, d.content::text"
            " FROM raw.resources r JOIN deid.resources d ON d.raw_id = r.id"
        )
        for resource_type, patient_id, raw_text, deid_text in rows:
            raw, deid = orjson.loads(raw_text), orjson.loads(deid_text)
            try:
                validate_resource(deid)
            except DeidentificationError:
                invalid += 1
            if patient_id is None:
                continue
            before, after = dated_paths(raw), dated_paths(deid)
            if resource_type == "Patient" and "birthDate" in raw and ".birthDate" not in after:
                banded_birth_dates += 1
            for path in before.keys() & after.keys():
                offsets[patient_id].add((as_datetime(after[path]) - as_datetime(before[path])).total_seconds())
                compared += 1
    inconsistent = sorted(len(values) for values in offsets.values() if len(values) != 1)
    return {
        "raw_counts": raw_counts,
        "deid_counts": deid_counts,
        "counts_equal": raw_counts == deid_counts,
        "duplicate_rows": duplicates,
        "dead_letters": dead_letters,
        "invalid_fhir_r4": invalid,
        "patients_checked": len(offsets),
        "dates_compared": compared,
        "patients_with_unequal_shift": len(inconsistent),
        "birth_dates_in_90_plus_band": banded_birth_dates,
        "resources_per_type_total": sum(Counter(deid_counts).values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="JSON file the results are written to")
    parser.add_argument("--bundles", type=int, default=615, help="Synthea patient bundles to load")
    arguments = parser.parse_args()

    files = sorted(path for path in SYNTHEA.glob("*.json.gz") if "Information" not in path.name)[: arguments.bundles]
    base = load_settings()
    suffix = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "pg_database": f"accept_deid_{suffix}",
            "kafka_topic_prefix": f"accept{suffix}.",
        }
    )
    ensure_database(base, settings.pg_database)
    try:
        apply_migrations(settings)
        ensure_topics(settings)
        loaded = load_raw(settings, files)
        with tempfile.TemporaryDirectory() as state:
            state_dir = Path(state)
            worker = run_worker(settings, state_dir)
            zones = check_zones(settings)
            scan_settings = settings.model_copy(
                update={
                    "state_dir": state_dir,
                    "pg_mlflow_database": settings.pg_database,
                    "pg_feast_database": settings.pg_database,
                    "privacy_scan_dirs": [],
                }
            )
            scan = run_scan(scan_settings)
    finally:
        drop_database(base, settings.pg_database)
        admin = AdminClient({"bootstrap.servers": base.kafka_bootstrap_servers})
        topics = [name for name in admin.list_topics(timeout=10).topics if name.startswith(settings.kafka_topic_prefix)]
        if topics:
            admin.delete_topics(topics)
    report = {
        "bundles": len(files),
        "raw_rows_loaded": loaded,
        "worker": worker,
        **zones,
        "privacy_scan_hits": [str(hit) for hit in scan.hits],
        "privacy_scan_searched_for": scan.searched_for,
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
