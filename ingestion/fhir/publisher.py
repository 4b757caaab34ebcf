"""Kafka events of the ingestion stage: ``fhir.raw.stored`` per new raw row, ``deadletter`` per rejection.

Events are keyed by the patient pseudonym (HMAC of the original Patient id), so one patient's events stay
on one partition in order. A resource without a patient is keyed by the pseudonym of its own type and id.
Payloads carry row ids, resource types and versions only: no resource, no name, no original id.
"""

from __future__ import annotations

from typing import Any

from healthflow.events import (
    DEAD_LETTER,
    FHIR_RAW,
    DeliveryTracker,
    Envelope,
    flush_or_raise,
    make_producer,
)
from healthflow.pseudonym import key_bytes, patient_pseudonym, pseudonymise
from healthflow.settings import Settings
from ingestion.fhir.raw_store import STAGE, StoredRejection, StoredRow

EVENT_STORED = "fhir.raw.stored"
EVENT_DEAD_LETTER = "deadletter"


class RawEventPublisher:
    """Publishes asynchronously with delivery callbacks; ``confirm`` waits for the broker's acknowledgements."""

    def __init__(self, settings: Settings, *, flush_timeout_seconds: float = 60.0) -> None:
        assert settings.pseudonym_key is not None
        self._key = key_bytes(settings.pseudonym_key.get_secret_value())
        self._raw_topic = settings.topic(FHIR_RAW)
        self._dead_letter_topic = settings.topic(DEAD_LETTER)
        self._producer = make_producer(settings, **{"client.id": "healthflow-ingest"})
        self._flush_timeout_seconds = flush_timeout_seconds

    def event_key(self, *, patient_id: str | None, resource_type: str, resource_id: str) -> str:
        if patient_id:
            return patient_pseudonym(self._key, patient_id)
        return pseudonymise(self._key, resource_type, resource_id)

    def publish_stored(self, row: StoredRow, *, batch_id: str, source: str, tracker: DeliveryTracker) -> None:
        key = self.event_key(patient_id=row.patient_id, resource_type=row.resource_type, resource_id=row.resource_id)
        payload = {
            "raw_id": row.raw_id,
            "resource_type": row.resource_type,
            "version": row.version,
            "batch_id": batch_id,
            "source": source,
        }
        envelope = Envelope(event_type=EVENT_STORED, key=key, source=STAGE, payload=payload)
        self._send(self._raw_topic, envelope, tracker)

    def publish_rejection(self, rejection: StoredRejection, *, source: str, tracker: DeliveryTracker) -> None:
        # Rejected input has no trusted patient link, so the key is derived from the raw.rejected row id.
        key = pseudonymise(self._key, "rejected", str(rejection.rejected_id))
        payload: dict[str, Any] = {
            "stage": STAGE,
            "source": source,
            "reason": rejection.reason,
            "dead_letter_id": rejection.dead_letter_id,
            "rejected_id": rejection.rejected_id,
            "resource_type": rejection.resource_type,
        }
        envelope = Envelope(event_type=EVENT_DEAD_LETTER, key=key, source=STAGE, payload=payload)
        self._send(self._dead_letter_topic, envelope, tracker)

    def _send(self, topic: str, envelope: Envelope, tracker: DeliveryTracker) -> None:
        while True:
            try:
                self._producer.produce(topic, key=envelope.key, value=envelope.to_bytes(), on_delivery=tracker)
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room, then try again.
                self._producer.poll(0.5)
        self._producer.poll(0)

    def confirm(self, tracker: DeliveryTracker) -> int:
        """Wait for outstanding events; return how many ``tracker`` saw acknowledged, raise if any failed."""
        flush_or_raise(self._producer, tracker, timeout_seconds=self._flush_timeout_seconds)
        return tracker.delivered

    def close(self) -> None:
        self._producer.flush(self._flush_timeout_seconds)
