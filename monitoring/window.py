"""The monitoring window: the prediction log over a time range, joined with labels and audit attributes.

Predictions come from ``serving.predictions`` (one row per score, features as JSONB). Labels and the audit
attributes (sex, race, ethnicity, age band) come from the feature store's offline tables
(``features.stays``, current versions, and ``features.uci_encounters``), joined by
(patient_pseudonym, stay_id). A label counts only when its ``label_available_at`` is at or before the end
of the window, so an unfinished 30-day follow-up is never read as "not readmitted".
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from healthflow.errors import InvalidInputError
from healthflow.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

WINDOW_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([hdw])\s*$")
UNIT_HOURS = {"h": 1, "d": 24, "w": 24 * 7}

# Columns the window adds next to the features; feature names must not collide with them.
LABEL = "label"
SCORE = "probability"
AUDIT_ATTRIBUTES = ("sex", "race", "ethnicity", "age_band")


@dataclass(frozen=True)
class Window:
    """A half-open time range [start, end) in UTC."""

    start: datetime
    end: datetime

    def label(self) -> str:
        return f"{self.start.isoformat(timespec='seconds')}/{self.end.isoformat(timespec='seconds')}"


def parse_window(text: str) -> timedelta:
    """Parse a window length such as ``7d``, ``36h`` or ``2w``; raise InvalidInputError for anything else."""
    match = WINDOW_PATTERN.match(text or "")
    if not match:
        raise InvalidInputError(f"invalid window {text!r}; write a number and a unit h, d or w, for example 7d")
    amount, unit = float(match.group(1)), match.group(2)
    if amount <= 0:
        raise InvalidInputError(f"invalid window {text!r}; the length must be positive")
    return timedelta(hours=amount * UNIT_HOURS[unit])


def window_ending(length: timedelta, *, end: datetime | None = None) -> Window:
    """Return the window of ``length`` that ends at ``end`` (default: now, UTC); ``end`` must be timezone-aware."""
    end = end or datetime.now(UTC)
    if end.tzinfo is None:
        raise InvalidInputError("the window end must be timezone-aware (UTC)")
    return Window(start=end - length, end=end)


PREDICTIONS_SQL = """
SELECT p.scored_at, p.model_name, p.model_version, p.run_id, p.probability, p.risk_level, p.features,
       p.lineage, p.patient_pseudonym, p.stay_id
FROM serving.predictions p
WHERE p.scored_at >= %(start)s AND p.scored_at < %(end)s
  AND (%(model_name)s::text IS NULL OR p.model_name = %(model_name)s)
ORDER BY p.scored_at
"""

STAYS_SQL = """
WITH keys AS (
    SELECT * FROM unnest(%(pseudonyms)s::text[], %(stays)s::text[]) AS k(patient_pseudonym, stay_id)
),
outcomes AS (
    SELECT patient_pseudonym, stay_id, label, label_available_at, audit FROM features.stays WHERE current
    UNION ALL
    SELECT patient_pseudonym, stay_id, label, label_available_at, audit FROM features.uci_encounters
)
SELECT o.patient_pseudonym, o.stay_id,
       CASE WHEN o.label_available_at <= %(end)s THEN o.label END AS label,
       o.audit ->> 'sex' AS sex, o.audit ->> 'race' AS race, o.audit ->> 'ethnicity' AS ethnicity,
       o.audit ->> 'age_band' AS age_band
FROM outcomes o
JOIN keys k ON o.patient_pseudonym = k.patient_pseudonym AND o.stay_id = k.stay_id
"""


@dataclass
class WindowFrame:
    """The window's rows and the names of the model inputs among its columns (the keys of the features JSON)."""

    frame: pd.DataFrame
    features: list[str]


def load_window(settings: Settings, window: Window, *, model_name: str | None = None) -> WindowFrame:
    """Return the window's predictions, one row each: features as columns, plus probability, label and attributes.

    ``label`` is NaN when the label is not known at the end of the window. Identifier columns
    (patient_pseudonym, stay_id) are dropped before returning, so nothing downstream can write them to a report.
    """
    import pandas as pd

    from healthflow.db import connect

    params = {"start": window.start, "end": window.end, "model_name": model_name}
    with connect(settings) as connection:
        cursor = connection.execute(PREDICTIONS_SQL, params)
        columns = [item.name for item in cursor.description or []]
        predictions = pd.DataFrame(cursor.fetchall(), columns=columns)
        if predictions.empty:
            return WindowFrame(frame=predictions, features=[])
        stays = read_stays(connection, predictions, end=window.end)

    predictions["stay_id"] = predictions["stay_id"].astype(str)
    features = pd.json_normalize(predictions["features"].tolist())
    features.index = predictions.index
    clash = sorted(set(features.columns) & {LABEL, SCORE, "scored_at", "model_version"})
    if clash:
        raise InvalidInputError(
            f"feature names {clash} clash with monitoring columns; rename them in the feature service"
        )
    frame = pd.concat([predictions.drop(columns=["features", "lineage"]), features], axis=1)
    # Sex and age band are also model inputs: the values the model saw (features JSON) are kept, and the
    # feature store supplies only the attributes the model does not take (race, ethnicity by default).
    stays = stays.drop(columns=[name for name in AUDIT_ATTRIBUTES if name in frame.columns])
    frame = frame.merge(stays, on=["patient_pseudonym", "stay_id"], how="left")
    logger.info(
        "window %s: %d predictions, %d with a known label", window.label(), len(frame), int(frame[LABEL].notna().sum())
    )
    return WindowFrame(frame=frame.drop(columns=["patient_pseudonym", "stay_id"]), features=list(features.columns))


def read_stays(connection: Any, predictions: pd.DataFrame, *, end: datetime) -> pd.DataFrame:
    """Return label (known by ``end``) and audit attributes for the stays in ``predictions``."""
    import pandas as pd
    import psycopg

    keys = predictions[["patient_pseudonym", "stay_id"]].astype(str).drop_duplicates()
    params = {"end": end, "pseudonyms": keys["patient_pseudonym"].tolist(), "stays": keys["stay_id"].tolist()}
    try:
        cursor = connection.execute(STAYS_SQL, params)
    except psycopg.errors.UndefinedTable as error:
        raise InvalidInputError(
            "the feature tables features.stays and features.uci_encounters do not exist; "
            "apply the migrations (`healthflow stack up`) before `healthflow monitor run`"
        ) from error
    names = [item.name for item in cursor.description or []]
    stays = pd.DataFrame(cursor.fetchall(), columns=names)
    stays["label"] = pd.to_numeric(stays["label"], errors="coerce")
    return stays.drop_duplicates(["patient_pseudonym", "stay_id"])
