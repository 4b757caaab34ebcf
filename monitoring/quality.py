"""Data quality checks of a prediction window against the training reference.

A check fails when a feature column is absent from the window, or when its missing share rose by more than
the limit over the reference. The Evidently DataSummaryPreset in the same report shows the full column
statistics; these checks are the part that raises alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class QualityCheck:
    """One data quality check on one column; ``value`` and ``limit`` are shares (0..1)."""

    check: str
    column: str
    passed: bool
    value: float
    limit: float
    message: str


def quality_checks(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str],
    missing_share_limit: float,
) -> list[QualityCheck]:
    """Return one presence check and one missing-share check per column of ``columns``."""
    checks = []
    for column in columns:
        present = column in current.columns
        checks.append(
            QualityCheck(
                check="column_present",
                column=column,
                passed=present,
                value=1.0 if present else 0.0,
                limit=1.0,
                message=f"column {column} is present" if present else f"column {column} is missing from the window",
            )
        )
        if not present:
            continue

        reference_share = float(reference[column].isna().mean()) if column in reference.columns else 0.0
        current_share = float(current[column].isna().mean()) if len(current) else 0.0
        rise = current_share - reference_share
        passed = rise <= missing_share_limit
        checks.append(
            QualityCheck(
                check="missing_share",
                column=column,
                passed=passed,
                value=rise,
                limit=missing_share_limit,
                message=(
                    f"missing share of {column} rose from {reference_share:.3f} to {current_share:.3f}"
                    + ("" if passed else f", more than the limit {missing_share_limit:.3f}")
                ),
            )
        )
    return checks
