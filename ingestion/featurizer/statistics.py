"""Summary statistics of the stored index stays: count, readmission rate and feature completeness."""

from __future__ import annotations

from typing import Any

from healthflow.db import connect
from healthflow.settings import Settings


def stay_statistics(settings: Settings) -> dict[str, Any]:
    """Return the current index stays' count, patients, readmission rate and the completeness (0-1) of each feature."""
    with connect(settings) as connection:
        stays, patients, readmitted = connection.execute(
            "SELECT count(*), count(DISTINCT patient_pseudonym), coalesce(sum(label), 0)"
            " FROM features.stays WHERE current"
        ).fetchone() or (0, 0, 0)
        completeness: dict[str, float] = dict(
            connection.execute(
                "SELECT item.key, avg(CASE WHEN item.value = 'null'::jsonb THEN 0 ELSE 1 END)::float"
                " FROM features.stays, jsonb_each(features) AS item WHERE current GROUP BY item.key ORDER BY 1"
            ).fetchall()
        )
    return {
        "index_stays": stays,
        "patients": patients,
        "readmissions_30d": int(readmitted),
        "readmission_rate": (int(readmitted) / stays) if stays else None,
        "completeness": completeness,
    }
