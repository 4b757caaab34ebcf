"""``make demo``: the whole platform on the repository's sample data, one stage after another.

Each stage runs as the ``healthflow`` command a user would type, so the demo also checks the commands. The
scoring service and the dashboard keep running afterwards (``healthflow stack down`` stops them too). The
demo acts as a clinical system: it reads real patient ids from the sample Bundles and requests scores by id.
The platform pseudonymises them and stores none.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from healthflow.db import connect
from healthflow.logs import configure_logging
from healthflow.settings import Settings, get_settings
from healthflow.stack import processes

logger = logging.getLogger("healthflow.demo")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "data" / "sample"
SYNTHEA = SAMPLE / "synthea"
UCI_ZIP = SAMPLE / "uci-diabetes-130" / "dataset_diabetes.zip"
# Bundles sent through the HTTP endpoint. The file source then ingests the whole folder, so these come back
# as "unchanged", which shows that ingesting the same content again adds nothing.
HTTP_BUNDLES = 8
SCORED_PATIENTS = 5
FEATURE_SERVICES = ("readmission_uci_v1", "readmission_fhir_v1")
INGEST_PORT = 28080
SERVE_PORT = 23000
DASHBOARD_PORT = 28050


@dataclass
class DemoRecord:
    steps: list[tuple[str, float]] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)


def healthflow(*arguments: str, capture: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    """Run one ``healthflow`` command with the demo's environment; its output goes to the terminal."""
    command = [sys.executable, "-m", "healthflow.cli", *arguments]
    logger.info("$ healthflow %s", " ".join(arguments))
    return subprocess.run(command, check=check, text=True, capture_output=capture, stdin=subprocess.DEVNULL)


@contextmanager
def timed(record: DemoRecord, name: str) -> Iterator[None]:
    """Print the step's name, run it, then append its wall time in seconds to ``record``."""
    print(f"\n=== {name}", flush=True)
    started = time.monotonic()
    yield
    record.steps.append((name, time.monotonic() - started))


def wait_for_http(url: str, *, timeout_seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(
        f"{what} did not return 200 from {url} within {timeout_seconds:.0f} s; see its log in .healthflow/logs"
    )


def start_service(
    settings: Settings, name: str, arguments: list[str], ready_url: str, *, timeout_seconds: float
) -> None:
    """Start a long-running ``healthflow`` command in the background, unless ``ready_url`` already returns 200."""
    try:
        if httpx.get(ready_url, timeout=3).status_code == 200:
            return
    except httpx.HTTPError:
        pass
    processes.stop_process(settings.state_dir, name)
    processes.start_detached(
        name,
        [sys.executable, "-m", "healthflow.cli", *arguments],
        state_dir=settings.state_dir,
        log_file=(settings.logs_dir / f"{name}.log").resolve(),
    )
    wait_for_http(ready_url, timeout_seconds=timeout_seconds, what=name)


def sample_bundles() -> list[Path]:
    return sorted(path for path in SYNTHEA.glob("*.json.gz") if "Information" not in path.name)


def ingest_over_http(settings: Settings, record: DemoRecord) -> None:
    base = f"http://127.0.0.1:{INGEST_PORT}"
    start_service(
        settings, "ingest-http", ["ingest", "serve", "--port", str(INGEST_PORT)], f"{base}/healthz", timeout_seconds=120
    )
    try:
        accepted = 0
        for path in sample_bundles()[:HTTP_BUNDLES]:
            response = httpx.post(
                f"{base}/fhir",
                content=gzip.decompress(path.read_bytes()),
                headers={"Content-Type": "application/fhir+json"},
                timeout=120,
            )
            response.raise_for_status()
            accepted += 1
        record.facts["bundles sent over HTTP"] = accepted
    finally:
        processes.stop_process(settings.state_dir, "ingest-http")


def table_counts(settings: Settings) -> dict[str, int]:
    queries = {
        "raw resources": "SELECT count(*) FROM raw.resources",
        "rejected inputs": "SELECT count(*) FROM raw.rejected",
        "deid resources": "SELECT count(*) FROM deid.resources",
        "index stays (FHIR)": "SELECT count(DISTINCT (patient_pseudonym, stay_id)) FROM features.stays",
        "UCI encounters": "SELECT count(*) FROM features.uci_encounters",
        "predictions logged": "SELECT count(*) FROM serving.predictions",
    }
    counts = {}
    with connect(settings) as connection:
        for name, query in queries.items():
            row = connection.execute(query).fetchone()
            counts[name] = row[0] if row else 0
    return counts


def train_and_promote(settings: Settings, record: DemoRecord) -> None:
    summaries = settings.state_dir.resolve() / "demo"
    summaries.mkdir(parents=True, exist_ok=True)
    for service in FEATURE_SERVICES:
        summary_file = summaries / f"train-{service}.json"
        # Both training sets come from Feast's point-in-time retrieval over the rows loaded above.
        arguments = ["train", "--feature-service", service, "--promote", "--summary-json", str(summary_file)]
        # Exit status 3 means a promotion gate kept the current champion: the run still counts.
        result = healthflow(*arguments, check=False)
        if result.returncode not in (0, 3):
            raise subprocess.CalledProcessError(result.returncode, arguments)
        record.facts[f"train {service}"] = json.loads(summary_file.read_text()) if summary_file.exists() else {}


def score_patients(settings: Settings, record: DemoRecord) -> None:
    base = f"http://127.0.0.1:{SERVE_PORT}"
    start_service(settings, "scoring", ["serve", "--port", str(SERVE_PORT)], f"{base}/readyz", timeout_seconds=240)
    token = healthflow(
        "token", "create", "--scope", "score:read", "--scope", "model:read", "--ttl", "900", capture=True
    )
    headers = {"Authorization": f"Bearer {token.stdout.strip()}"}

    scored = []
    for path in sample_bundles():
        bundle = json.loads(gzip.decompress(path.read_bytes()))
        patient_id = next(
            entry["resource"]["id"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == "Patient"
        )
        response = httpx.post(f"{base}/v1/score", json={"patient_id": patient_id}, headers=headers, timeout=60)
        if response.status_code == 404:
            continue  # no inpatient stay for this patient
        response.raise_for_status()
        body = response.json()
        scored.append((body["probability"], body["risk_level"]))
        if len(scored) == SCORED_PATIENTS:
            break
    record.facts["patients scored"] = len(scored)
    record.facts["scores (probability, risk level)"] = [(round(p, 3), level) for p, level in scored]
    record.facts["champion (serving)"] = (
        httpx.get(f"{base}/v1/model", headers=headers, timeout=30).json().get("version")
    )


def print_summary(settings: Settings, record: DemoRecord) -> None:
    print("\n" + "=" * 72)
    print("HealthFlow demo: summary")
    print("=" * 72)
    for name, seconds in record.steps:
        print(f"  {name:<46} {seconds:7.1f} s")
    print(f"  {'total':<46} {sum(seconds for _, seconds in record.steps):7.1f} s")

    print("\nCounts")
    for name, count in table_counts(settings).items():
        print(f"  {name:<46} {count:>8}")

    print("\nModels")
    for service in FEATURE_SERVICES:
        summary = record.facts.get(f"train {service}")
        if not isinstance(summary, dict) or "test_metrics" not in summary:
            print(f"  {service}: no training summary")
            continue
        model = summary["test_metrics"]["model"]
        interval = summary["test_ci95"]["model"]["auroc"]
        print(
            f"  {service} version {summary['version']}: test AUROC {model['auroc']:.3f} "
            f"({interval[0]:.3f}-{interval[1]:.3f}), AUPRC {model['auprc']:.3f}, Brier {model['brier']:.4f}, "
            f"calibration slope {model['calibration_slope']:.2f}"
        )
        print(f"    promotion: {summary['promotion']['summary']}")
    keys = (
        "bundles sent over HTTP",
        "patients scored",
        "scores (probability, risk level)",
        "champion (serving)",
        "privacy scan exit status",
    )
    for key in keys:
        if key in record.facts:
            print(f"  {key}: {record.facts[key]}")

    print("\nWhere to look")
    print(f"  MLflow UI        {settings.mlflow_tracking_uri}  (Models -> readmission_fhir_v1 -> @champion)")
    print(f"  Scoring API docs http://127.0.0.1:{SERVE_PORT}/docs")
    print("                   (token: uv run healthflow token create --scope score:read)")
    print(f"  Dashboard        http://127.0.0.1:{DASHBOARD_PORT}/?token=TOKEN")
    print("                   (TOKEN: uv run healthflow token create --scope audit:read)")
    print(f"  Reports          {(settings.state_dir / 'reports').resolve()}")
    print(f"  Screenshots      {(settings.state_dir / 'screenshots').resolve()}")


def main() -> int:
    settings = get_settings()
    configure_logging(level="INFO", log_format="text")
    os.environ.setdefault("HEALTHFLOW_LOG_FORMAT", "text")
    record = DemoRecord()

    with timed(record, "ingest: HTTP endpoint (POST /fhir)"):
        ingest_over_http(settings, record)
    with timed(record, "ingest: file source (data/sample/synthea)"):
        healthflow("ingest", str(SYNTHEA), "--no-progress")
    with timed(record, "deid: worker until fhir.raw is drained"):
        healthflow("deid", "run", "--idle-exit", "15")
    with timed(record, "features: worker until fhir.deid is drained"):
        healthflow("features", "run", "--idle-exit", "10")
    with timed(record, "features: UCI import"):
        healthflow("features", "import-uci", str(UCI_ZIP))
    with timed(record, "features: feast apply"):
        healthflow("features", "apply")
    with timed(record, "features: feast materialize"):
        healthflow("features", "materialize")
    with timed(record, "train + promote (both feature services)"):
        train_and_promote(settings, record)
    with timed(record, "serve: start BentoML and score patients"):
        score_patients(settings, record)
    with timed(record, "monitor: simulate drift, run reports"):
        healthflow("monitor", "simulate-drift", "--rows", "200")
        healthflow("monitor", "run", "--window", "7d", check=False)
    with timed(record, "dashboard: start and take screenshots"):
        base = f"http://127.0.0.1:{DASHBOARD_PORT}"
        start_service(
            settings, "dashboard", ["dashboard", "--port", str(DASHBOARD_PORT)], f"{base}/healthz", timeout_seconds=120
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "monitoring.screenshots",
                "--url",
                base,
                "--out",
                str(settings.state_dir / "screenshots"),
            ],
            check=False,
        )
    with timed(record, "privacy scan"):
        scan = healthflow("privacy", "scan", check=False)
        record.facts["privacy scan exit status"] = scan.returncode

    print_summary(settings, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
