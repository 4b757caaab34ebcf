"""Data drift and data quality of a prediction window against the training reference, with Evidently.

``drift_report`` runs Evidently's DataDriftPreset and DataSummaryPreset (and ClassificationPreset when the
window's labels are known) on two frames and returns the per-column drift verdicts next to the Evidently
snapshot, which ``monitoring.reports`` saves as HTML and JSON. Evidently picks each column's test from its
type and the sample size (for example K-S p-value for small numeric samples, normed Wasserstein distance
above 1000 rows); the verdict is Evidently's own, read from its per-column drift test.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from healthflow.errors import InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

# Columns with at most this many distinct values in the reference are tested as categories, because a
# numeric test on a 0/1 flag is weak.
CATEGORICAL_MAX_VALUES = 2


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's drift verdict for one column: the test used, its score and threshold."""

    column: str
    column_type: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    """Per-column drift, the drifted share, and the Evidently snapshot for the HTML and JSON reports."""

    columns: list[ColumnDrift]
    reference_rows: int
    current_rows: int
    labels_known: bool
    snapshot: Any = field(repr=False)
    classification_snapshot: Any = field(default=None, repr=False)

    @property
    def drifted_columns(self) -> list[str]:
        return [item.column for item in self.columns if item.drifted]

    @property
    def drift_share(self) -> float:
        """Share of tested columns that drifted, 0..1 (0 when no column was tested)."""
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    def summary(self) -> dict[str, Any]:
        """Return a JSON-ready summary (aggregates only, no rows)."""
        return {
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "labels_known": self.labels_known,
            "drift_share": self.drift_share,
            "drifted_columns": self.drifted_columns,
            "columns": [vars(item) for item in self.columns],
        }


def import_evidently() -> None:
    """Import Evidently once with its import-time deprecation warnings silenced.

    Evidently 0.7.23 imports numpy.core and deprecated litestar helpers and has invalid escape sequences in
    docstrings; these warnings are about its own code, and tests run with warnings as errors.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import evidently.presets  # noqa: F401


def split_column_types(reference: pd.DataFrame, columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Return (numerical, categorical) columns: numbers with more than two distinct values are numerical."""
    import pandas as pd

    numerical, categorical = [], []
    for column in columns:
        series = reference[column]
        is_number = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        if is_number and series.nunique(dropna=True) > CATEGORICAL_MAX_VALUES:
            numerical.append(column)
        else:
            categorical.append(column)
    return numerical, categorical


def check_frames(reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise InvalidInputError when a frame is empty or lacks a requested column."""
    if not columns:
        raise InvalidInputError("no columns to compare; give at least one feature column")
    for name, frame in (("reference", reference), ("current", current)):
        if frame.empty:
            raise InvalidInputError(f"the {name} frame has no rows; drift needs rows on both sides")
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise InvalidInputError(f"the {name} frame lacks columns {missing}")


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str],
    target: str | None = None,
    score: str | None = None,
) -> DriftResult:
    """Compare ``current`` with ``reference`` on ``columns`` and return Evidently's per-column verdicts.

    ``target`` (0/1 labels) and ``score`` (probability of the positive class) name columns of ``current``;
    when both are given and every current label is known, a ClassificationPreset report of the current
    window is added (the training reference holds no production scores to compare with). The frames are
    not modified.
    """
    import_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    columns = list(dict.fromkeys(columns))
    check_frames(reference, current, columns)
    numerical, categorical = split_column_types(reference, columns)
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)

    report = Report([DataDriftPreset(columns=columns), DataSummaryPreset(columns=columns)], include_tests=True)
    snapshot = report.run(
        current_data=Dataset.from_pandas(normalise_types(current[columns], categorical), data_definition=definition),
        reference_data=Dataset.from_pandas(
            normalise_types(reference[columns], categorical), data_definition=definition
        ),
    )

    labels_known = bool(target and score and {target, score} <= set(current.columns) and current[target].notna().all())
    # Evidently's classification metrics need both outcomes in the window (0.7.23 fails with a KeyError on a
    # window of one class, as when only patients' latest stays, never readmitted yet, were scored).
    both_outcomes = labels_known and current[str(target)].nunique() == 2
    if labels_known and not both_outcomes:
        logger.warning("drift: the window's labels have one value only; no classification report")
    result = DriftResult(
        columns=read_column_drift(snapshot.dict(), numerical=numerical),
        reference_rows=len(reference),
        current_rows=len(current),
        labels_known=labels_known,
        snapshot=snapshot,
        classification_snapshot=(
            classification_report(current, target=str(target), score=str(score)) if both_outcomes else None
        ),
    )
    logger.info(
        "drift: %d of %d columns drifted (%d reference rows, %d current rows)",
        len(result.drifted_columns),
        len(result.columns),
        result.reference_rows,
        result.current_rows,
    )
    return result


def classification_report(current: pd.DataFrame, *, target: str, score: str) -> Any:
    """Run Evidently's ClassificationPreset on the window's labels and scores; return the snapshot."""
    import_evidently()
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    frame = labelled_scores(current, target=target, score=score)
    definition = DataDefinition(
        numerical_columns=[score],
        categorical_columns=[target],
        classification=[BinaryClassification(target=target, prediction_probas=score, pos_label=1)],
    )
    return Report([ClassificationPreset()]).run(current_data=Dataset.from_pandas(frame, data_definition=definition))


def labelled_scores(current: pd.DataFrame, *, target: str, score: str) -> pd.DataFrame:
    frame = current[[target, score]].copy()
    frame[target] = frame[target].astype(int)
    frame[score] = frame[score].astype(float)
    return frame


def normalise_types(frame: pd.DataFrame, categorical: Sequence[str]) -> pd.DataFrame:
    """Return a copy with categorical columns as strings, so both sides compare the same category labels."""
    copy = frame.copy()
    for column in categorical:
        copy[column] = copy[column].astype("string").astype(object).where(copy[column].notna(), None)
    return copy


def read_column_drift(snapshot: dict[str, Any], *, numerical: Sequence[str]) -> list[ColumnDrift]:
    """Read each column's drift score, method and threshold, and Evidently's verdict from its drift test."""
    verdicts = {}
    for test in snapshot.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type") == "evidently:metric_v2:ValueDrift":
            verdicts[params["column"]] = str(test["status"]).endswith("FAIL")

    results = []
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config.get("type") != "evidently:metric_v2:ValueDrift":
            continue
        column = config["column"]
        if column not in verdicts:
            raise RuntimeError(f"Evidently returned no drift test for column {column!r}; the report format changed")
        results.append(
            ColumnDrift(
                column=column,
                column_type="numerical" if column in numerical else "categorical",
                method=str(config.get("method")),
                score=float(metric["value"]),
                threshold=float(config.get("threshold")),
                drifted=verdicts[column],
            )
        )
    return results
