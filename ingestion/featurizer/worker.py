"""The Featurizer worker: recompute the stay rows of every patient that new de-identified data touches.

A ``fhir.deid.stored`` event only names the patient (its key). The worker rereads that patient's resources
from the deid zone and rebuilds all its rows, so a late resource, a replayed event or events in any order
give the same rows as one ordered load. Offsets are committed after the rows are written (at least once;
a repeat recomputation changes nothing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from healthflow.db import transaction
from healthflow.events import FHIR_DEID, Envelope, make_consumer
from healthflow.settings import Settings
from ingestion.featurizer import store
from ingestion.featurizer.stays import FeaturizerConfig, build_patient_rows

logger = logging.getLogger(__name__)

DEID_STORED = "fhir.deid.stored"
# Patients read from the deid zone per query during a full rebuild.
REBUILD_CHUNK = 100


@dataclass
class RecomputeCounts:
    """Counts of one recomputation: patients, stay rows inserted, unchanged and retired, and events read."""

    patients: int = 0
    inserted: int = 0
    unchanged: int = 0
    retired: int = 0
    events: int = 0
    skipped_events: int = 0
    stays: int = 0
    durations: dict[str, float] = field(default_factory=dict)

    def add(self, counts: dict[str, int]) -> None:
        self.inserted += counts["inserted"]
        self.unchanged += counts["unchanged"]
        self.retired += counts["retired"]


def config_from_settings(settings: Settings) -> FeaturizerConfig:
    return FeaturizerConfig(
        short_lookback_days=settings.features_short_lookback_days,
        long_lookback_days=settings.features_long_lookback_days,
        readmission_window_days=settings.features_readmission_window_days,
        ed_to_admission_hours=settings.features_ed_to_admission_hours,
        lab_lookback_days=settings.features_lab_lookback_days,
        medication_lookback_days=settings.features_medication_lookback_days,
    )


def recompute_patients(
    settings: Settings, patients: list[str], counts: RecomputeCounts | None = None
) -> RecomputeCounts:
    """Rebuild the stay rows of ``patients`` from the deid zone, in one transaction."""
    counts = counts or RecomputeCounts()
    config = config_from_settings(settings)
    with transaction(settings) as connection:
        resources = store.load_patient_resources(connection, patients, profile=settings.features_deid_profile)
        rows_by_patient = {
            patient: build_patient_rows(patient, records, config) for patient, records in resources.items()
        }
        batch_ids = {batch for rows in rows_by_patient.values() for row in rows for batch in row["lineage"]["batches"]}
        sources = store.batch_sources(connection, batch_ids)
        for patient in sorted(rows_by_patient):
            rows = rows_by_patient[patient]
            counts.add(store.replace_patient_rows(connection, patient, rows, sources))
            counts.stays += len(rows)
    counts.patients += len(patients)
    return counts


def rebuild_all(settings: Settings) -> RecomputeCounts:
    """Recompute the rows of every patient in the deid zone; return the counts and the time taken (seconds)."""
    started = time.perf_counter()
    with transaction(settings) as connection:
        patients = store.patients_in_deid_zone(connection, profile=settings.features_deid_profile)
    counts = RecomputeCounts()
    for start in range(0, len(patients), REBUILD_CHUNK):
        recompute_patients(settings, patients[start : start + REBUILD_CHUNK], counts)
    counts.durations["rebuild_seconds"] = time.perf_counter() - started
    logger.info(
        "rebuilt features of %d patients: %d stays, %d inserted, %d unchanged, %d retired in %.1f s",
        counts.patients,
        counts.stays,
        counts.inserted,
        counts.unchanged,
        counts.retired,
        counts.durations["rebuild_seconds"],
    )
    return counts


def run_worker(
    settings: Settings,
    *,
    max_idle_polls: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RecomputeCounts:
    """Consume fhir.deid and recompute the touched patients, batch by batch, until stopped.

    ``max_idle_polls`` stops the worker after that many empty polls in a row (None: run until ``should_stop``).
    """
    consumer = make_consumer(settings, settings.features_consumer_group, [FHIR_DEID])
    counts = RecomputeCounts()
    idle_polls = 0
    logger.info("featurizer started: group %s, topic %s", settings.features_consumer_group, settings.topic(FHIR_DEID))
    try:
        while not should_stop():
            messages = consumer.consume(settings.features_batch_size, timeout=settings.features_poll_timeout_seconds)
            if not messages:
                idle_polls += 1
                if max_idle_polls is not None and idle_polls >= max_idle_polls:
                    break
                continue
            idle_polls = 0
            patients = _patients_of(messages, counts)
            if patients:
                recompute_patients(settings, sorted(patients), counts)
            consumer.commit(asynchronous=False)
            logger.info("featurizer batch: %d events, %d patients recomputed", len(messages), len(patients))
    finally:
        consumer.close()
        logger.info(
            "featurizer stopped: %d events, %d patient recomputations, %d rows inserted",
            counts.events,
            counts.patients,
            counts.inserted,
        )
    return counts


def _patients_of(messages: list, counts: RecomputeCounts) -> set[str]:
    patients: set[str] = set()
    for message in messages:
        if message.error() is not None:
            logger.error("featurizer consume error on %s: %s", message.topic(), message.error())
            continue
        counts.events += 1
        try:
            envelope = Envelope.from_bytes(message.value())
        except ValueError as error:
            counts.skipped_events += 1
            logger.warning(
                "skipped an unreadable event at %s[%d]@%d: %s",
                message.topic(),
                message.partition(),
                message.offset(),
                type(error).__name__,
            )
            continue
        if envelope.event_type != DEID_STORED or not envelope.key:
            continue
        patients.add(envelope.key)
    return patients
