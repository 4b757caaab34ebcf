"""Write the UCI Diabetes 130-US rows into features.uci_encounters, replacing a previous import."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from healthflow.db import transaction
from healthflow.settings import Settings
from ingestion.uci.adapter import AUDIT_COLUMNS, FEATURE_COLUMNS, load_uci

logger = logging.getLogger(__name__)

_COPY_SQL = (
    "COPY features.uci_encounters (stay_id, patient_pseudonym, event_timestamp, label, label_available_at,"
    " encounter_rank, encounter_order, features, audit, import_id) FROM STDIN"
)


def import_uci(settings: Settings, zip_path: Path | str) -> dict[str, Any]:
    """Load the archive and replace the table's rows in one transaction; return counts, label rate and seconds."""
    started = time.perf_counter()
    key = settings.pseudonym_key.get_secret_value().encode("utf-8") if settings.pseudonym_key else b""
    frame = load_uci(zip_path, key)
    loaded = time.perf_counter()
    import_id = uuid.uuid4().hex

    features = frame[FEATURE_COLUMNS].to_dict(orient="records")
    audits = frame[AUDIT_COLUMNS].to_dict(orient="records")
    with transaction(settings) as connection:
        connection.execute("DELETE FROM features.uci_encounters")
        with connection.cursor().copy(_COPY_SQL) as copy:
            for index, row in enumerate(frame.itertuples(index=False)):
                copy.write_row(
                    (
                        row.stay_id,
                        row.patient_pseudonym,
                        row.event_timestamp.to_pydatetime(),
                        int(row.label),
                        row.label_available_at.to_pydatetime(),
                        int(row.encounter_rank),
                        int(row.encounter_order),
                        orjson.dumps(features[index], option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                        orjson.dumps(audits[index]).decode(),
                        import_id,
                    )
                )
    finished = time.perf_counter()
    result = {
        "rows": len(frame),
        "patients": int(frame["patient_pseudonym"].nunique()),
        "label_rate": float(frame["label"].mean()),
        "load_seconds": round(loaded - started, 3),
        "write_seconds": round(finished - loaded, 3),
        "total_seconds": round(finished - started, 3),
        "import_id": import_id,
    }
    logger.info(
        "imported %d UCI encounters (%d patients), label rate %.4f, in %.1f s",
        result["rows"],
        result["patients"],
        result["label_rate"],
        result["total_seconds"],
    )
    return result
