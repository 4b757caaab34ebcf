"""Benchmark of the DeID worker: throughput (Kafka in and out included) and peak memory.

Usage: uv run python bench/deid_bench.py OUTPUT.json [--bundles N] [--batch-size N] [--workers N] [--processes N]

Needs the local stack (`uv run healthflow stack up`). The benchmark works in its own database and topic
prefix, which it removes at the end. It loads N Synthea bundles into raw.resources and publishes their
fhir.raw.stored events, which is not timed. Then it starts `--workers` `healthflow deid run` processes in one
consumer group, each with `--processes` de-identification processes, and times them until every resource is
stored in deid.resources and published on fhir.deid. The resident memory of all workers and their
de-identification processes together is sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka.admin import AdminClient

from healthflow.db import apply_migrations, connect, drop_database, ensure_database
from healthflow.events import FHIR_RAW, DeliveryTracker, Envelope, ensure_topics, flush_or_raise, make_producer
from healthflow.pseudonym import key_bytes, patient_pseudonym, pseudonymise
from healthflow.settings import Settings, load_settings

SYNTHEA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "synthea-r4"
MEMORY_SAMPLE_SECONDS = 0.2


def patient_of(resource: dict[str, Any]) -> str | None:
    if resource["resourceType"] == "Patient":
        return resource["id"]
    for name in ("subject", "patient", "beneficiary"):
        reference = (resource.get(name) or {}).get("reference", "")
        if reference.startswith("urn:uuid:"):
            return reference[len("urn:uuid:") :]
    return None


def load_raw(settings: Settings, files: list[Path]) -> int:
    """Insert every resource of ``files`` into raw.resources and publish its fhir.raw.stored event."""
    key = key_bytes(settings.pseudonym_key.get_secret_value())
    producer = make_producer(settings)
    tracker = DeliveryTracker()
    total = 0
    with connect(settings) as connection:
        for path in files:
            with gzip.open(path) as handle:
                resources = [entry["resource"] for entry in orjson.loads(handle.read())["entry"]]
            rows = []
            with connection.transaction(), connection.cursor() as cursor:
                for resource in resources:
                    content = orjson.dumps(resource)
                    cursor.execute(
                        "INSERT INTO raw.resources (resource_type, resource_id, version, patient_id, content,"
                        " content_hash, source, source_ref, batch_id) VALUES (%s, %s, 1, %s, %s, %s, 'bench',"
                        " 'bench', 'bench') ON CONFLICT DO NOTHING RETURNING id",
                        (
                            resource["resourceType"],
                            resource["id"],
                            patient_of(resource),
                            content.decode(),
                            hashlib.sha256(content).hexdigest(),
                        ),
                    )
                    row = cursor.fetchone()
                    if row is not None:
                        rows.append((row[0], resource))
            for raw_id, resource in rows:
                patient = patient_of(resource)
                envelope = Envelope(
                    event_type="fhir.raw.stored",
                    key=patient_pseudonym(key, patient)
                    if patient
                    else pseudonymise(key, resource["resourceType"], resource["id"]),
                    source="bench",
                    payload={
                        "raw_id": raw_id,
                        "resource_type": resource["resourceType"],
                        "version": 1,
                        "batch_id": "bench",
                        "source": "bench",
                    },
                )
                while True:
                    try:
                        producer.produce(
                            settings.topic(FHIR_RAW), key=envelope.key, value=envelope.to_bytes(), on_delivery=tracker
                        )
                        break
                    except BufferError:
                        producer.poll(0.5)
                producer.poll(0)
            total += len(rows)
    flush_or_raise(producer, tracker, timeout_seconds=120)
    return total


def count_rows(settings: Settings, query: str) -> int:
    with connect(settings) as connection:
        return connection.execute(query).fetchone()[0]


def stored_so_far(connection: Any, expected: int) -> int:
    """Return how many de-identified rows are stored, cheaply while far from ``expected``.

    A count(*) scans the whole table. Counting five times a second, one 31-second run of 189,105 resources
    spent 4.7 s waiting on those scans, on the database server the workers write to. The span of ids,
    read from the primary key index, is an upper bound of the count (ids can have gaps, never repeats), so
    the exact count runs only once the span reaches ``expected``.
    """
    first, last = connection.execute("SELECT min(id), max(id) FROM deid.resources").fetchone()
    if first is None:
        return 0
    span = last - first + 1
    if span < expected:
        return span
    return connection.execute("SELECT count(*) FROM deid.resources").fetchone()[0]


def tree_usage(process: psutil.Process) -> tuple[int, float]:
    """Return the resident memory (bytes) and CPU time (user + system, seconds) of a process and its children."""
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0.0
    rss, cpu = 0, 0.0
    for member in members:
        try:
            rss += member.memory_info().rss
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        cpu += times.user + times.system
    return rss, cpu


def run_workers(
    settings: Settings, expected: int, *, batch_size: int, processes: int, workers: int, state_dir: Path
) -> dict[str, Any]:
    """Run ``workers`` DeID workers in one consumer group until every resource is stored; time and measure them.

    More workers is how the DeID stage scales (one consumer per partition at most): while one worker stores and
    publishes a batch, another de-identifies.
    """
    environment = {
        **os.environ,
        "HEALTHFLOW_PG_DATABASE": settings.pg_database,
        "HEALTHFLOW_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "HEALTHFLOW_DEID_BATCH_SIZE": str(batch_size),
        "HEALTHFLOW_DEID_PROCESSES": str(processes),
        "HEALTHFLOW_STATE_DIR": str(state_dir),
        "HEALTHFLOW_LOG_LEVEL": "WARNING",
    }
    executable = shutil.which("healthflow") or str(Path(sys.executable).with_name("healthflow"))
    started = time.monotonic()
    running = [
        subprocess.Popen(
            [executable, "deid", "run", "--idle-exit", "3"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(workers)
    ]
    trees = [psutil.Process(worker.pid) for worker in running]
    # The last CPU time read of each worker. A worker whose partitions ran out exits after its idle time,
    # before the others finish, and the CPU time of an exited process can no longer be read.
    worker_cpu = [0.0] * len(trees)
    peak_rss = 0
    first_row_at = None
    stored = 0
    with connect(settings, autocommit=True) as connection:
        while any(worker.poll() is None for worker in running):
            usage = [tree_usage(tree) for tree in trees]
            peak_rss = max(peak_rss, sum(rss for rss, _ in usage))
            worker_cpu = [max(seen, cpu) for seen, (_, cpu) in zip(worker_cpu, usage, strict=True)]
            stored = stored_so_far(connection, expected)
            if stored and first_row_at is None:
                first_row_at = time.monotonic()
            if stored >= expected:
                break
            time.sleep(MEMORY_SAMPLE_SECONDS)
    finished = time.monotonic()
    # Read again before the workers' idle exit, so their idle seconds add next to nothing.
    worker_cpu = [max(seen, tree_usage(tree)[1]) for seen, tree in zip(worker_cpu, trees, strict=True)]

    outputs = []
    for worker in running:
        stdout, stderr = worker.communicate(timeout=120)
        if worker.returncode != 0:
            raise RuntimeError(f"deid worker failed with exit code {worker.returncode}: {stderr.decode()[-2000:]}")
        outputs.append(stdout.decode().strip())
    stored = count_rows(settings, "SELECT count(*) FROM deid.resources")
    dead = count_rows(settings, "SELECT count(*) FROM ops.dead_letter")
    steady_seconds = finished - (first_row_at or started)
    return {
        "resources_in": expected,
        "resources_stored": stored,
        "dead_lettered": dead,
        "seconds_total_with_startup": round(finished - started, 2),
        "seconds_first_to_last_row": round(steady_seconds, 2),
        "resources_per_second_with_startup": round(stored / (finished - started), 1),
        "resources_per_second_steady": round(stored / steady_seconds, 1) if steady_seconds > 0 else None,
        "peak_rss_mb_workers_and_pools": round(peak_rss / 2**20, 1),
        "worker_cpu_seconds": round(sum(worker_cpu), 2),
        "worker_cpu_ms_per_resource": round(1000 * sum(worker_cpu) / stored, 3) if stored else None,
        "worker_output": outputs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="JSON file the results are written to")
    parser.add_argument("--bundles", type=int, default=100, help="Synthea patient bundles to load (615: all)")
    parser.add_argument("--batch-size", type=int, default=500, help="HEALTHFLOW_DEID_BATCH_SIZE of the worker")
    parser.add_argument("--processes", type=int, default=2, help="HEALTHFLOW_DEID_PROCESSES of each worker")
    parser.add_argument("--workers", type=int, default=1, help="DeID workers in the consumer group")
    arguments = parser.parse_args()

    files = sorted(path for path in SYNTHEA.glob("*.json.gz") if "Information" not in path.name)[: arguments.bundles]
    if not files:
        sys.exit(f"no Synthea bundles found in {SYNTHEA}")
    base = load_settings()
    suffix = uuid.uuid4().hex[:8]
    settings = base.model_copy(update={"pg_database": f"bench_deid_{suffix}", "kafka_topic_prefix": f"bench{suffix}."})
    ensure_database(base, settings.pg_database)
    try:
        apply_migrations(settings)
        ensure_topics(settings)
        load_started = time.monotonic()
        expected = load_raw(settings, files)
        load_seconds = time.monotonic() - load_started
        with tempfile.TemporaryDirectory() as state_dir:
            result = run_workers(
                settings,
                expected,
                batch_size=arguments.batch_size,
                processes=arguments.processes,
                workers=arguments.workers,
                state_dir=Path(state_dir),
            )
    finally:
        drop_database(base, settings.pg_database)
        admin = AdminClient({"bootstrap.servers": base.kafka_bootstrap_servers})
        topics = [name for name in admin.list_topics(timeout=10).topics if name.startswith(settings.kafka_topic_prefix)]
        if topics:
            admin.delete_topics(topics)
    report = {
        "benchmark": "deid_worker",
        "bundles": len(files),
        "batch_size": arguments.batch_size,
        "processes": arguments.processes,
        "workers": arguments.workers,
        "raw_load_seconds_not_timed": round(load_seconds, 2),
        **result,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
