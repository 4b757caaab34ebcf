"""Report files of one monitoring run, under ``<state_dir>/reports/<UTC timestamp>/``.

Files: ``drift.html`` and ``drift.json`` (Evidently data drift and data summary), ``classification.html``
and ``classification.json`` when labels are known, ``fairness.json`` and ``summary.json`` (the aggregates
the database also stores). The reports are built from feature columns only: the window drops pseudonyms
and stay ids before any report sees it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from healthflow.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportFiles:
    """Paths of one run's report files; ``classification_html`` is None when labels were not known."""

    folder: Path
    html: Path
    json: Path
    summary: Path
    fairness: Path
    classification_html: Path | None


def reports_root(settings: Settings) -> Path:
    return settings.state_dir / "reports"


def report_folder(settings: Settings, created_at: datetime) -> Path:
    """Return a new folder named by ``created_at`` (UTC, to the microsecond, so two runs never share one)."""
    folder = reports_root(settings) / created_at.strftime("%Y%m%dT%H%M%S%fZ")
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def write_reports(
    folder: Path,
    *,
    drift_snapshot: Any,
    classification_snapshot: Any,
    summary: dict[str, Any],
    fairness: dict[str, Any],
) -> ReportFiles:
    """Write the Evidently HTML and JSON reports and the summary and fairness JSON into ``folder``."""
    html = folder / "drift.html"
    drift_snapshot.save_html(str(html))
    drift_json = folder / "drift.json"
    drift_snapshot.save_json(str(drift_json))

    classification_html = None
    if classification_snapshot is not None:
        classification_html = folder / "classification.html"
        classification_snapshot.save_html(str(classification_html))
        classification_snapshot.save_json(str(folder / "classification.json"))

    summary_path = folder / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    fairness_path = folder / "fairness.json"
    fairness_path.write_text(json.dumps(fairness, indent=2, default=str), encoding="utf-8")
    logger.info("monitoring reports written to %s", folder)
    return ReportFiles(
        folder=folder,
        html=html,
        json=drift_json,
        summary=summary_path,
        fairness=fairness_path,
        classification_html=classification_html,
    )
