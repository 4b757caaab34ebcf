"""Time the whole UCI training run (load, train, evaluate, SHAP, MLflow log) and record peak memory.

Usage: ``uv run python bench/train_bench.py OUTPUT.json [--uci-zip PATH] [--model-name NAME] [--no-log]``

Writes one JSON object: wall and CPU seconds per phase, and the peak resident memory of the process in MiB
(from getrusage, so CatBoost's threads are included). It also records the core count and the load average at
start and end, because other processes on the machine slow the wall time, and the run's test-side metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_ZIP = SHARED_DATA / "uci-diabetes-130" / "dataset_diabetes.zip"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="Where to write the JSON result.")
    parser.add_argument("--uci-zip", type=Path, default=DEFAULT_ZIP, help="UCI Diabetes 130-US archive.")
    parser.add_argument(
        "--model-name",
        default="readmission_uci_v1_bench",
        help="Registered model name for the logged run (kept apart from the real readmission_uci_v1).",
    )
    parser.add_argument("--no-log", action="store_true", help="Skip MLflow logging (no server needed).")
    arguments = parser.parse_args()

    from healthflow.logs import configure_logging
    from healthflow.settings import get_settings

    settings = get_settings()
    configure_logging(level="INFO", log_format="text")
    load_at_start = os.getloadavg()
    wall_start, cpu_start = time.perf_counter(), time.process_time()

    from ingestion.uci.adapter import load_uci
    from training.pipeline import train
    from training.specs import UCI_SPEC

    frame = load_uci(arguments.uci_zip, settings.pseudonym_key.get_secret_value().encode("utf-8"))
    after_load = time.perf_counter()
    result = train(frame, spec=UCI_SPEC, settings=settings)
    after_train = time.perf_counter()
    logged = None
    if not arguments.no_log:
        from training.tracking import log_training

        logged = log_training(result, settings=settings, model_name=arguments.model_name)
    wall_end, cpu_end = time.perf_counter(), time.process_time()

    model = result.evaluations["model"]
    race_gaps = result.fairness.gaps.get("race", {})
    record = {
        "benchmark": "uci_train_run",
        "cores": os.cpu_count(),
        "load_average_start": load_at_start,
        "load_average_end": os.getloadavg(),
        "wall_seconds_total": wall_end - wall_start,
        "cpu_seconds_total": cpu_end - cpu_start,
        "wall_seconds_load": after_load - wall_start,
        "wall_seconds_train_evaluate_shap": after_train - after_load,
        "wall_seconds_mlflow_log": wall_end - after_train,
        "phase_seconds": result.timings,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": {
            "train": len(result.split.train),
            "validation": len(result.split.validation),
            "test": len(result.split.test),
        },
        "best_iteration": int(result.model.get_best_iteration()),
        "calibration": result.calibrator.method,
        "operating_point": result.thresholds.operating_point,
        "test": {name: {"metrics": item.metrics, "ci95": item.intervals} for name, item in result.evaluations.items()},
        "confusion_at_operating_point": model.confusion,
        "race_gaps": race_gaps,
        "fairness_gaps": result.fairness.gaps,
        "race_groups": result.fairness.by_group["race"].reset_index().to_dict(orient="records")
        if "race" in result.fairness.by_group
        else [],
        "mlflow": None
        if logged is None
        else {
            "run_id": logged.run_id,
            "model": logged.registered_model_name,
            "version": logged.version,
        },
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(record, indent=2, default=float), encoding="utf-8")
    print(json.dumps({key: record[key] for key in ("wall_seconds_total", "cpu_seconds_total", "peak_rss_mib")}))
    return 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
