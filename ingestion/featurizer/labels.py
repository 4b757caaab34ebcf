"""The 30-day unplanned readmission label of an index stay."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class Readmission:
    """The label of one index stay.

    ``label`` is 1 when the next unplanned inpatient stay starts within (0, window] days after discharge.
    ``days_to_next_stay`` is the gap in days to the next unplanned stay at any distance (None when there is
    none); ``next_stay_id`` is that stay's id. ``available_at`` (UTC) is discharge + window: the first moment
    the label is known.
    """

    label: int
    days_to_next_stay: float | None
    next_stay_id: str | None
    available_at: datetime


def readmission_label(
    *,
    discharged_at: datetime,
    later_stays: list[tuple[datetime, str, bool]],
    window_days: int,
) -> Readmission:
    """Label an index stay from the other stays of the patient, given as (admitted_at, stay_id, planned).

    A stay that starts at or before discharge is a transfer or an overlap, not a readmission, and planned stays
    never count. Ties in start time go to the smaller stay id, so the result does not depend on input order.
    """
    window = timedelta(days=window_days)
    candidates = sorted(
        (admitted_at, stay_id)
        for admitted_at, stay_id, planned in later_stays
        if not planned and admitted_at > discharged_at
    )
    available_at = discharged_at + window
    if not candidates:
        return Readmission(0, None, None, available_at)

    admitted_at, stay_id = candidates[0]
    gap = admitted_at - discharged_at
    return Readmission(int(gap <= window), gap.total_seconds() / SECONDS_PER_DAY, stay_id, available_at)
