"""Benchmark FHIR ingestion of the Synthea set against bare fhir.resources validation of the same resources.

Usage: uv run python bench/ingest_bench.py OUTPUT.json [--limit N] [--workers N] [--keep-database]

Needs the local stack (`healthflow stack up`). Creates its own database and topic prefix, ingests every
``*.json.gz`` in the Synthea folder twice (the second run must add 0 rows), compares stored counts per
resource type with a plain count of the files, then times bare validation (``model_validate`` per
resource, one process) of the same resources. Peak RSS is sampled every 0.1 s over the ingesting process
and its validation workers. Writes the results as JSON to OUTPUT.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import platform
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import psutil

from healthflow.db import apply_migrations, connect, drop_database, ensure_database
from healthflow.events import ensure_topics
from healthflow.settings import load_settings
from ingestion.fhir.pipeline import ingest_sources
from ingestion.fhir.sources import sources_for_paths
from ingestion.fhir.validation import model_class

SYNTHEA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "synthea-r4"
RSS_TARGET_MB = 500
RATIO_TARGET = 0.5


class PeakRss:
    """Sample the RSS of this process plus its children in a thread; ``peak_mb`` is the largest sum seen."""

    def __init__(self, interval_seconds: float = 0.1) -> None:
        self.interval_seconds = interval_seconds
        self.peak_mb = 0.0
        self.peak_main_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            try:
                main = process.memory_info().rss
                children = sum(child.memory_info().rss for child in process.children(recursive=True))
            except psutil.Error:
                continue
            self.peak_main_mb = max(self.peak_main_mb, main / 2**20)
            self.peak_mb = max(self.peak_mb, (main + children) / 2**20)
            self._stop.wait(self.interval_seconds)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def plain_counts(files: list[Path]) -> tuple[Counter, Counter]:
    """Count resources per type in the files: every entry, and distinct (id, content) pairs."""
    entries: Counter = Counter()
    distinct: dict[str, set] = {}
    for path in files:
        bundle = orjson.loads(gzip.decompress(path.read_bytes()))
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            entries[resource["resourceType"]] += 1
            digest = hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()
            distinct.setdefault(resource["resourceType"], set()).add((resource.get("id"), digest))
    return entries, Counter({name: len(pairs) for name, pairs in distinct.items()})


def bare_validation(files: list[Path]) -> tuple[int, float]:
    """Validate every entry resource with its fhir.resources model; return (count, seconds of validation)."""
    count, seconds = 0, 0.0
    for path in files:
        bundle = orjson.loads(gzip.decompress(path.read_bytes()))
        resources = [entry["resource"] for entry in bundle.get("entry", [])]
        started = time.perf_counter()
        for resource in resources:
            model_class(resource["resourceType"]).model_validate(resource)
        seconds += time.perf_counter() - started
        count += len(resources)
    return count, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="Where to write the JSON results.")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N files (default: all).")
    parser.add_argument("--workers", type=int, default=None, help="Validation workers (default: the setting).")
    parser.add_argument("--keep-database", action="store_true", help="Keep the benchmark database afterwards.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    files = sorted(SYNTHEA.glob("*.json.gz"))[: args.limit]
    base = load_settings()
    suffix = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "pg_database": f"ingest_bench_{suffix}",
            "kafka_topic_prefix": f"bench{suffix}.",
            **({"ingest_validation_workers": args.workers} if args.workers is not None else {}),
        }
    )
    ensure_database(settings, settings.pg_database)
    try:
        apply_migrations(settings)
        ensure_topics(settings)
        sources = sources_for_paths([str(path) for path in files], max_bytes=settings.ingest_max_input_bytes)
        with PeakRss() as rss:
            first = ingest_sources(settings, sources, source_ref="bench")
        sources = sources_for_paths([str(path) for path in files], max_bytes=settings.ingest_max_input_bytes)
        second = ingest_sources(settings, sources, source_ref="bench")
        with connect(settings) as connection:
            rows = connection.execute("SELECT resource_type, count(*) FROM raw.resources GROUP BY 1").fetchall()
        stored = Counter(dict(rows))
    finally:
        if not args.keep_database:
            drop_database(settings, settings.pg_database)

    entries, distinct = plain_counts(files)
    validated, validation_seconds = bare_validation(files)
    ingest_rate = first.resources / first.elapsed_seconds
    bare_rate = validated / validation_seconds
    results = {
        "files": len(files),
        "resources_in_files": sum(entries.values()),
        "ingest": first.to_dict(),
        "second_run": {"accepted": second.accepted, "unchanged": second.unchanged, "rejected": second.rejected},
        "ingest_resources_per_second": round(ingest_rate, 1),
        "bare_validation_resources_per_second": round(bare_rate, 1),
        "ratio_ingest_to_bare_validation": round(ingest_rate / bare_rate, 3),
        "ratio_target": RATIO_TARGET,
        "peak_rss_mb_process_and_workers": round(rss.peak_mb, 1),
        "peak_rss_mb_main_process": round(rss.peak_main_mb, 1),
        "rss_target_mb": RSS_TARGET_MB,
        "stored_by_type": dict(sorted(stored.items())),
        "entries_by_type": dict(sorted(entries.items())),
        "distinct_id_content_by_type": dict(sorted(distinct.items())),
        "stored_equals_distinct": stored == distinct,
        "validation_workers": settings.ingest_validation_workers,
        "bare_validation_processes": 1,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()},
    }
    args.output.write_text(json.dumps(results, indent=2))
    print(json.dumps({key: value for key, value in results.items() if not key.endswith("_by_type")}, indent=2))


if __name__ == "__main__":
    main()
