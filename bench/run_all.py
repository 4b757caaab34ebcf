"""``make bench``: run every stage benchmark on the full shared data and collect one results file.

Each benchmark is its own script (``bench/<stage>_bench.py OUTPUT.json``) run in its own process, so peak
memory is measured per process. This runner writes ``results.json`` (every script's JSON, keyed by stage)
and ``results.md`` (a table of the numbers) into the output folder. Both record the core count and the load
average at the start of each stage, because other work on the machine changes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

# (stage, script, extra arguments). deid runs on all 615 bundles with two workers in one consumer group,
# each de-identifying in the worker process itself (no pool). On 2 cores that matched three workers'
# throughput (4,594 and 4,671 resources/s) with 339 MB instead of 472 MB.
STAGES = (
    ("ingest", "ingest_bench.py", []),
    ("deid", "deid_bench.py", ["--bundles", "615", "--workers", "2", "--processes", "0"]),
    ("features", "features_bench.py", []),
    ("train", "train_bench.py", []),
    ("serve", "serve_bench.py", []),
)


def run_stage(stage: str, script: str, extra: list[str], out_dir: Path) -> dict:
    output = out_dir / f"{stage}.json"
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    print(f"=== {stage}: {script} {' '.join(extra)}", flush=True)
    completed = subprocess.run([sys.executable, str(BENCH_DIR / script), str(output), *extra], check=False)
    record = {
        "started_at": datetime.fromtimestamp(time.time() - (time.monotonic() - started), UTC).isoformat(
            timespec="seconds"
        ),
        "exit_status": completed.returncode,
        "wall_seconds": round(time.monotonic() - started, 1),
        "load_average_at_start": round(load_before, 2),
    }
    if output.exists():
        record["results"] = json.loads(output.read_text(encoding="utf-8"))
    return record


def flatten(prefix: str, value: object, rows: list[tuple[str, str]]) -> None:
    """Collect numeric leaves as (dotted name, value) rows for the markdown table."""
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), item, rows)
    elif isinstance(value, list):
        # Runs of one stage, such as the serving benchmark's request rates, are numbered in order.
        for index, item in enumerate(value):
            flatten(f"{prefix}[{index}]", item, rows)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int | float):
        rows.append((prefix, f"{value:,.3f}".rstrip("0").rstrip(".")))


def write_markdown(path: Path, summary: dict) -> None:
    lines = [
        "# HealthFlow benchmark results",
        "",
        f"Run at {summary['started_at']} on {summary['machine']['cores']} cores, "
        f"Python {summary['machine']['python']}.",
        "Load average at the start of each stage is given, because other work on the machine slows every stage.",
        "",
    ]
    for stage, record in summary["stages"].items():
        lines += [
            f"## {stage}",
            "",
            f"Started {record.get('started_at', 'with the run')}; exit status {record['exit_status']}, "
            f"wall time {record['wall_seconds']} s, load average at start {record['load_average_at_start']}.",
            "",
        ]
        rows: list[tuple[str, str]] = []
        flatten("", record.get("results", {}), rows)
        if rows:
            lines += ["| measure | value |", "| --- | --- |"]
            lines += [f"| `{name}` | {value} |" for name, value in rows]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every stage benchmark and write results.json and results.md.")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="Folder for the result files.")
    parser.add_argument(
        "--only", nargs="+", default=None, help="Run only these stages (ingest deid features train serve)."
    )
    arguments = parser.parse_args(argv)

    arguments.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()},
        "stages": {},
    }
    results_file = arguments.out / "results.json"
    if arguments.only and results_file.exists():
        # Stages not named in --only keep their earlier results; each keeps its own load average and date.
        summary["stages"] = json.loads(results_file.read_text(encoding="utf-8")).get("stages", {})
    for stage, script, extra in STAGES:
        if arguments.only and stage not in arguments.only:
            continue
        summary["stages"][stage] = run_stage(stage, script, extra, arguments.out)
        (arguments.out / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    write_markdown(arguments.out / "results.md", summary)

    failed = [stage for stage, record in summary["stages"].items() if record["exit_status"] != 0]
    print(f"results: {arguments.out / 'results.json'} and {arguments.out / 'results.md'}")
    print(f"failed stages: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
