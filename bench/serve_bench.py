"""Benchmark the ScoreAPI: latency and throughput over HTTP against the in-process model time.

Usage: ``uv run python bench/serve_bench.py OUTPUT.json [--rates 50 200] [--duration 30]``

Needs the local stack (``healthflow stack up``). In databases of its own it imports the UCI set, applies and
materialises the Feast repository and trains the real UCI model with ``healthflow train`` (about 3 minutes),
makes that version champion, starts ``healthflow serve`` on a free loopback port, then:

- single scores sent one at a time (closed loop), for the service time without queueing;
- single scores (``POST /v1/score``, SHAP included) sent at a steady rate from a second process: requests
  leave on a fixed schedule whether or not earlier ones have returned (open loop);
- batches of 100 patients (``POST /v1/score/batch``) sent one after another;
- the same model's in-process predict + SHAP time for 1 and 100 rows, and the ratio HTTP p50 / in-process p50;
- the service's whole scoring path in process (Feast read, model, prediction log), and the ratio HTTP p50 /
  scoring path p50: what the HTTP layer adds;
- the resident memory (RSS) of the server's process tree after the runs.

Latency is measured from the moment a request is sent to the moment its response is read, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

BATCH_SIZE = 100
# Concurrent senders of the open-loop load; more than the server can serve at once, so the schedule holds.
SENDER_THREADS = 32


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {"count": 0}
    values = np.asarray(samples_ms)
    return {
        "count": int(values.size),
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p90_ms": round(float(np.percentile(values, 90)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "max_ms": round(float(values.max()), 3),
        "mean_ms": round(float(values.mean()), 3),
    }


def _open_loop(url: str, token: str, bodies: list[dict[str, Any]], rate: float, duration: float) -> dict[str, Any]:
    """Send ``rate`` requests per second for ``duration`` s on a fixed schedule, from a pool of sender threads.

    A request's latency runs from its send to its response; ``send_lag`` is how late it left against the
    schedule, which grows when every sender is waiting on the server. Each sender first opens its keep-alive
    connection with one request, as a client with a connection pool would, and the clock starts when all are
    open. Those first requests, sent together on new connections, are reported apart as ``connect_burst``.
    """
    import queue
    import threading

    import httpx

    total = int(rate * duration)
    schedule: queue.Queue = queue.Queue()
    latencies: list[float] = []
    send_lag: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()

    connected = threading.Barrier(SENDER_THREADS + 1)
    burst: list[float] = []

    def sender() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            opened = time.perf_counter()
            client.post("/v1/score", json=bodies[0])
            with lock:
                burst.append((time.perf_counter() - opened) * 1000)
            connected.wait()
            while True:
                item = schedule.get()
                if item is None:
                    return
                body, scheduled = item
                sent = time.perf_counter()
                outcome = None
                try:
                    response = client.post("/v1/score", json=body)
                    outcome = "ok" if response.status_code == 200 else str(response.status_code)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                elapsed_ms = (time.perf_counter() - sent) * 1000
                with lock:
                    send_lag.append((sent - scheduled) * 1000)
                    if outcome == "ok":
                        latencies.append(elapsed_ms)
                    else:
                        errors[outcome] = errors.get(outcome, 0) + 1

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(SENDER_THREADS)]
    for thread in threads:
        thread.start()
    connected.wait()
    started = time.perf_counter()
    for index in range(total):
        scheduled = started + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        schedule.put((bodies[index % len(bodies)], scheduled))
    for _ in threads:
        schedule.put(None)
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "target_rate_per_s": rate,
        "duration_s": duration,
        "sent": total,
        "ok": len(latencies),
        "errors": errors,
        "achieved_rate_per_s": round(len(latencies) / elapsed, 2),
        "latency": percentiles(latencies),
        "connect_burst": percentiles(burst),
        "send_lag_p99_ms": round(float(np.percentile(send_lag, 99)), 3) if send_lag else None,
    }


def _load_process(url: str, token: str, bodies: list[dict[str, Any]], rate: float, duration: float, queue: Any) -> None:
    queue.put(_open_loop(url, token, bodies, rate, duration))


def run_rate(url: str, token: str, bodies: list[dict[str, Any]], rate: float, duration: float) -> dict[str, Any]:
    """Send single scores at ``rate`` per second for ``duration`` seconds from a separate process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_load_process, args=(url, token, bodies, rate, duration, queue))
    process.start()
    result = queue.get(timeout=duration + 300)
    process.join(60)
    return result


def run_sequential(url: str, token: str, bodies: list[dict[str, Any]], count: int) -> dict[str, Any]:
    """Send single scores one at a time (closed loop): the service time without queueing."""
    import httpx

    latencies = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for index in range(count):
            sent = time.perf_counter()
            client.post("/v1/score", json=bodies[index % len(bodies)]).raise_for_status()
            latencies.append((time.perf_counter() - sent) * 1000)
    return percentiles(latencies)


def run_batches(url: str, token: str, bodies: list[dict[str, Any]], count: int) -> dict[str, Any]:
    import httpx

    latencies = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for index in range(count):
            start = (index * BATCH_SIZE) % max(1, len(bodies) - BATCH_SIZE)
            items = bodies[start : start + BATCH_SIZE]
            sent = time.perf_counter()
            response = client.post("/v1/score/batch", json={"items": items})
            response.raise_for_status()
            latencies.append((time.perf_counter() - sent) * 1000)
    stats = percentiles(latencies)
    stats["batch_size"] = BATCH_SIZE
    stats["rows_per_s"] = round(BATCH_SIZE * 1000 / stats["mean_ms"], 1)
    return stats


def in_process_times(settings: Any, model_name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Time predict + SHAP (the served model's explain, then calibration) in this process, without HTTP or features."""
    from serving.model_handle import load_champion

    model = load_champion(settings.mlflow_tracking_uri, model_name, "champion")

    def timed(batch: list[dict[str, Any]], repeat: int) -> list[float]:
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            margins, _, _ = model.explain(batch)
            model.calibrator.probability(margins)
            samples.append((time.perf_counter() - started) * 1000)
        return samples

    def timed_catboost_shap(batch: list[dict[str, Any]]) -> float:
        started = time.perf_counter()
        model.booster.get_feature_importance(model.pool(batch), type="ShapValues")
        return (time.perf_counter() - started) * 1000

    timed(rows[:1], 20)
    # One sample per served row, so the single-row time covers the patients the HTTP runs score.
    single = [timed(rows[index : index + 1], 1)[0] for index in range(min(len(rows), 500))]
    result = {
        "shap_method": "leaf table" if model.shap_table is not None else "CatBoost ShapValues",
        "single": percentiles(single),
        "batch_100": percentiles(timed(rows[:BATCH_SIZE], 50)),
    }
    # CatBoost's own ShapValues for the same rows, for comparison with the leaf table the service uses.
    result["catboost_shap_single"] = percentiles([timed_catboost_shap(rows[index : index + 1]) for index in range(200)])
    return result


def in_process_scoring_path(settings: Any, model_name: str, source: Any, pseudonyms: list[str]) -> dict[str, Any]:
    """Time the service's whole scoring path in this process, without HTTP, for 1 and 100 patients.

    That is what a request does besides HTTP: the Feast online read, predict + SHAP, calibration, the
    synchronous prediction log insert and the Kafka score event. The HTTP time over this time shows what the
    HTTP layer adds (uvicorn, Starlette, FastAPI, BentoML and the token check).
    """
    from serving.model_handle import ModelHandle
    from serving.prediction_log import PredictionLog
    from serving.requests import ScoreRequest
    from serving.scoring import Scorer

    model = ModelHandle(tracking_uri=settings.mlflow_tracking_uri, name=model_name, alias="champion", poll_seconds=3600)
    model.refresh()
    prediction_log = PredictionLog(settings, publish_to_kafka=settings.serve_kafka_log)
    scorer = Scorer(settings, model=model, features=source, prediction_log=prediction_log)
    requests = [ScoreRequest(pseudonym=pseudonym) for pseudonym in pseudonyms]

    def timed(batch: list[ScoreRequest]) -> float:
        started = time.perf_counter()
        scorer.score(batch, subject="bench")
        return (time.perf_counter() - started) * 1000

    try:
        for request in requests[:20]:
            timed([request])
        single = [timed([request]) for request in requests[:500]]
        batches = [
            timed(requests[start : start + BATCH_SIZE])
            for start in range(0, min(len(requests), 30 * BATCH_SIZE) - BATCH_SIZE + 1, BATCH_SIZE)
        ]
    finally:
        prediction_log.close()
    return {"single": percentiles(single), "batch_100": percentiles(batches)}


def prepare_uci_champion(settings: Any, uci_zip: Path, model_name: str, workdir: Path) -> dict[str, Any]:
    """Load the UCI set into the bench's own databases and train the real model on it, as a user would.

    Runs ``healthflow features import-uci``, ``features apply``, ``features materialize`` and ``train`` (on
    Feast's point-in-time training set), then gives the new version the alias champion directly: the
    promotion gates are a governance step, not what this benchmark measures. Returns the training summary.
    """
    import mlflow
    from tests.integration.serve_support import server_environment

    environment = server_environment(settings, LOG_FORMAT="text", LOG_LEVEL="WARNING")
    summary_file = workdir / "train-summary.json"
    steps = [
        ["features", "import-uci", str(uci_zip)],
        ["features", "apply"],
        ["features", "materialize"],
        [
            "train",
            "--feature-service",
            "readmission_uci_v1",
            "--model-name",
            model_name,
            "--summary-json",
            str(summary_file),
        ],
    ]
    for step in steps:
        print(f"$ healthflow {' '.join(step)}", flush=True)
        subprocess.run([sys.executable, "-m", "healthflow.cli", *step], env=environment, cwd=REPO_ROOT, check=True)
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    client.set_registered_model_alias(model_name, "champion", summary["version"])
    return summary


def served_patients(settings: Any, count: int) -> list[str]:
    """Return the first ``count`` patient pseudonyms of the UCI feature table in sorted order: a fixed sample."""
    from healthflow.db import connect

    with connect(settings) as connection:
        rows = connection.execute(
            "SELECT DISTINCT patient_pseudonym FROM features.uci_encounter_features "
            "ORDER BY patient_pseudonym LIMIT %s",
            (count,),
        ).fetchall()
    return [row[0] for row in rows]


def uci_feature_source(settings: Any) -> Any:
    """Open the online store of the UCI feature service, as the server does."""
    from ingestion.featurizer.feast_repo import feast_environment, repo_dir
    from serving.features import FeastFeatureSource

    return FeastFeatureSource(repo_dir(settings), "readmission_uci_v1", environment=feast_environment(settings))


def online_rows(source: Any, pseudonyms: list[str]) -> list[dict[str, Any]]:
    """Read the served feature rows from the online store, for the in-process timing."""
    from serving.features import Entity

    return [row.values for row in source.get_rows([Entity(pseudonym=p, stay_id="") for p in pseudonyms])]


def add_ratios(result: dict[str, Any], name: str, reference: dict[str, Any]) -> None:
    """Add ``ratio_p50_to_<name>`` to each HTTP run: its p50 over the reference's p50 for 1 or 100 patients."""
    single_p50 = reference["single"]["p50_ms"]
    for run in [result["sequential"], *result["single"]]:
        # The sequential run keeps its percentiles at the top, the rate runs under "latency".
        p50 = run["p50_ms"] if "p50_ms" in run else run["latency"].get("p50_ms", float("nan"))
        run[f"ratio_p50_to_{name}"] = round(p50 / single_p50, 2)
    result["batch"][f"ratio_p50_to_{name}"] = round(result["batch"]["p50_ms"] / reference["batch_100"]["p50_ms"], 2)


def tree_rss_mb(pid: int) -> dict[str, Any]:
    import psutil

    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    per_process = {}
    for process in processes:
        try:
            per_process[f"{process.pid} {' '.join(process.cmdline()[1:4])}"] = round(
                process.memory_info().rss / 2**20, 1
            )
        except psutil.Error:
            continue
    return {"total_mb": round(sum(per_process.values()), 1), "processes_mb": per_process}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="Path of the JSON result file.")
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 200], help="Request rates, per second.")
    parser.add_argument("--duration", type=float, default=30, help="Seconds per rate.")
    parser.add_argument("--batches", type=int, default=30, help="Number of batch requests of 100 patients.")
    parser.add_argument("--patients", type=int, default=2000, help="Distinct UCI patients the requests cycle over.")
    parser.add_argument("--uci-zip", type=Path, default=default_uci_zip(), help="UCI Diabetes 130-US archive.")
    arguments = parser.parse_args()

    from healthflow.db import apply_migrations, drop_database, ensure_database
    from healthflow.settings import load_settings
    from serving.tokens import create_token
    from tests.integration.serve_support import (
        drop_isolated,
        free_port,
        isolated_settings,
        running_server,
        server_environment,
    )

    stack = load_settings()
    # A migrated database to copy, as the test suite's template_database fixture makes one.
    template = f"serve_bench_template_{os.getpid()}"
    ensure_database(stack, template)
    apply_migrations(stack, template)
    settings = isolated_settings(stack, template, "bench")
    model_name = f"serve_bench_{settings.pg_database}"
    workdir = Path(tempfile.mkdtemp(prefix="serve_bench_"))
    try:
        setup_started = time.perf_counter()
        summary = prepare_uci_champion(settings, arguments.uci_zip, model_name, workdir)
        pseudonyms = served_patients(settings, arguments.patients)
        environment = server_environment(
            settings, SERVE_MODEL_NAME=model_name, SERVE_FEATURE_SERVICE="readmission_uci_v1", LOG_LEVEL="WARNING"
        )
        bodies = [{"pseudonym": pseudonym} for pseudonym in pseudonyms]
        token = create_token(settings, subject="bench", scopes=["score:read"], ttl_seconds=settings.jwt_max_ttl_seconds)
        port = free_port()
        command = [str(Path(sys.executable).parent / "healthflow"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        result: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "model": {
                "description": "the real UCI model: CatBoost trained by `healthflow train` on Feast's training set",
                "registered_model": model_name,
                "version": summary["version"],
                "test_auroc": summary["test_metrics"]["model"]["auroc"],
            },
            "setup_seconds": round(time.perf_counter() - setup_started, 1),
        }
        with running_server(command, environment, workdir / "server.log", wait_for="/readyz") as url:
            server_pid = _server_pid(port)
            # Warm-up, so the first requests do not pay for lazy imports and connection set-up.
            run_rate(url, token, bodies, 20, 5)
            result["load_average_before"] = os.getloadavg()
            result["sequential"] = run_sequential(url, token, bodies, 300)
            result["single"] = [run_rate(url, token, bodies, rate, arguments.duration) for rate in arguments.rates]
            result["batch"] = run_batches(url, token, bodies, arguments.batches)
            result["service_rss"] = tree_rss_mb(server_pid) if server_pid else None
            result["load_average_after"] = os.getloadavg()
        source = uci_feature_source(settings)
        result["in_process"] = in_process_times(settings, model_name, online_rows(source, pseudonyms[:500]))
        result["in_process_scoring_path"] = in_process_scoring_path(settings, model_name, source, pseudonyms)
        add_ratios(result, "in_process", result["in_process"])
        add_ratios(result, "scoring_path", result["in_process_scoring_path"])
    finally:
        drop_isolated(stack, settings)
        drop_database(stack, template)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def default_uci_zip() -> Path:
    """Return the shared data's archive when it sits beside the repository, else the repository's own copy."""
    shared = REPO_ROOT.parent / "shared" / "data" / "uci-diabetes-130" / "dataset_diabetes.zip"
    return shared if shared.exists() else REPO_ROOT / "data" / "sample" / "uci-diabetes-130" / "dataset_diabetes.zip"


def _server_pid(port: int) -> int | None:
    """Return the pid of the `healthflow serve` process listening on ``port`` (the root of the server tree)."""
    import psutil

    for connection in psutil.net_connections(kind="tcp"):
        if (
            connection.laddr
            and connection.laddr.port == port
            and connection.status == psutil.CONN_LISTEN
            and connection.pid
        ):
            process = psutil.Process(connection.pid)
            # Walk up through BentoML's server process to the `healthflow serve` wrapper, so every worker counts.
            while process.parent() is not None and any(
                part.endswith("/healthflow") or part == "bentoml" for part in process.parent().cmdline()
            ):
                process = process.parent()
            return process.pid
    return None


if __name__ == "__main__":
    main()
