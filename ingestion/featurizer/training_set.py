"""Point-in-time training frames from Feast, with labels and audit attributes from the entity rows."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from healthflow.db import connect
from healthflow.errors import InvalidInputError
from healthflow.settings import Settings
from ingestion.featurizer.feast_repo import feature_store

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

# Entity rows per feature service: the label, label time and audit attributes come from here, not from Feast.
ENTITY_QUERIES = {
    "readmission_fhir_v1": (
        "SELECT patient_pseudonym, stay_id, discharged_at AS event_timestamp, label, label_available_at,"
        " audit ->> 'race' AS race, audit ->> 'ethnicity' AS ethnicity"
        " FROM features.stays WHERE current ORDER BY discharged_at, stay_id"
    ),
    "readmission_uci_v1": (
        "SELECT patient_pseudonym, stay_id, event_timestamp, label, label_available_at,"
        " audit ->> 'race' AS race, audit ->> 'ethnicity' AS ethnicity, encounter_rank"
        " FROM features.uci_encounters ORDER BY encounter_rank"
    ),
}


def entity_frame(settings: Settings, feature_service: str) -> pd.DataFrame:
    """Return the entity rows (one per stay) of a feature service, with labels and audit attributes."""
    import pandas as pd

    if feature_service not in ENTITY_QUERIES:
        raise InvalidInputError(
            f"unknown feature service {feature_service!r}; expected one of {sorted(ENTITY_QUERIES)}"
        )
    with connect(settings) as connection:
        cursor = connection.execute(ENTITY_QUERIES[feature_service])
        columns = [column.name for column in cursor.description or []]
        frame = pd.DataFrame(cursor.fetchall(), columns=columns)
    for column in ("event_timestamp", "label_available_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def get_training_frame(
    settings: Settings, feature_service: str, *, labels_known_by: datetime | None = None
) -> pd.DataFrame:
    """Return one row per stay: Feast features as of the stay's discharge, plus label and audit columns.

    Columns:

    - ``patient_pseudonym``, ``stay_id``, ``event_timestamp`` (discharge or synthetic UCI time, UTC);
    - ``label`` (0/1) and ``label_available_at`` (UTC). Train only on rows whose label time is before the
      training cut-off;
    - audit attributes ``race`` and ``ethnicity``;
    - the features of the service, ``sex`` and ``age_band`` among them;
    - for UCI, also ``encounter_rank`` (``encounter_order`` is a feature of the service).

    Features are joined by patient at ``event_timestamp`` (Feast point-in-time join), so a row written for a
    later stay never reaches an earlier one. Rows whose join picked another stay (two stays of a patient
    discharged at the same instant) are dropped with a warning. ``labels_known_by`` (UTC), when given, keeps
    only the stays whose label was known by then.
    """
    entities = entity_frame(settings, feature_service)
    if labels_known_by is not None:
        entities = entities[entities["label_available_at"] <= labels_known_by].reset_index(drop=True)
    if entities.empty:
        raise InvalidInputError(
            f"no rows for feature service {feature_service!r}; "
            "run the Featurizer or `healthflow features import-uci` first"
        )
    with feature_store(settings) as store:
        service = store.get_feature_service(feature_service)
        frame = store.get_historical_features(entity_df=entities, features=service).to_df()

    mismatched = frame["source_stay_id"].notna() & (frame["source_stay_id"] != frame["stay_id"])
    if mismatched.any():
        logger.warning(
            "dropped %d of %d rows of %s: the point-in-time join picked another stay with the same timestamp",
            int(mismatched.sum()),
            len(frame),
            feature_service,
        )
        frame = frame[~mismatched]
    frame = frame.drop(columns=["source_stay_id"]).sort_values(["event_timestamp", "stay_id"], ignore_index=True)
    logger.info("training frame %s: %d rows, label rate %.4f", feature_service, len(frame), frame["label"].mean())
    return frame
