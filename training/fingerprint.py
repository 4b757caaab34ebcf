"""The training set's fingerprint: feature service, row count, time range and a content hash."""

from __future__ import annotations

import hashlib
import logging
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from training.spec import TrainingSpec

logger = logging.getLogger(__name__)


def data_fingerprint(frame: pd.DataFrame, *, spec: TrainingSpec) -> dict[str, Any]:
    """Return the fingerprint of a training frame.

    ``content_sha256`` hashes the label, time and feature columns row by row (pandas' stable per-row hash,
    in frame order, column names included), so the same rows in the same order give the same hash.
    """
    columns = [spec.label_column, *spec.features]
    if spec.time_column:
        columns.insert(0, spec.time_column)
    digest = hashlib.sha256(",".join(columns).encode("utf-8"))
    digest.update(pd.util.hash_pandas_object(frame[columns], index=False).to_numpy().tobytes())

    fingerprint: dict[str, Any] = {
        "feature_service": spec.feature_service,
        "row_count": len(frame),
        "patient_count": int(frame[spec.patient_column].nunique()),
        "positive_rate": float(frame[spec.label_column].mean()),
        "content_sha256": digest.hexdigest(),
        "time_min": None,
        "time_max": None,
    }
    if spec.time_column and frame[spec.time_column].notna().any():
        times = pd.to_datetime(frame[spec.time_column], utc=True)
        fingerprint["time_min"] = times.min().isoformat()
        fingerprint["time_max"] = times.max().isoformat()
    return fingerprint


def git_commit(folder: Path | None = None) -> str:
    """Return the checked-out commit of the repository holding ``folder``, or ``unknown``."""
    folder = folder or Path(__file__).resolve().parent
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning("git commit unknown: %s", error)
        return "unknown"
    return completed.stdout.strip()
