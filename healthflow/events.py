"""Kafka events between stages: topic names, the event envelope, and producer/consumer factories.

Every event is keyed by the patient's pseudonym, so one patient's events land on one partition and stay
in order. Envelopes never carry identifiable data: a ``fhir.raw`` event refers to the raw-zone row instead
of carrying the resource.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import BaseModel, Field
from pydantic_core import to_jsonable_python

from healthflow.settings import Settings

logger = logging.getLogger(__name__)

FHIR_RAW = "fhir.raw"
FHIR_DEID = "fhir.deid"
DEAD_LETTER = "fhir.deadletter"
SCORES = "scores"
ALERTS = "audit.alerts"
ALL_TOPICS = (FHIR_RAW, FHIR_DEID, DEAD_LETTER, SCORES, ALERTS)

# Event contracts (payload fields by event type):
# - "fhir.raw.stored" on fhir.raw: raw_id, resource_type, version, batch_id, source. The resource itself
#   stays in raw.resources; consumers read it by raw_id.
# - "fhir.deid.stored" on fhir.deid: deid_id, raw_id, resource_type, pseudo_id, version, batch_id, profile,
#   resource (the de-identified resource).
# - "deadletter" on fhir.deadletter: stage, reason, dead_letter_id, and rejected_id (a raw.rejected row)
#   when the rejected input may hold PHI. Never the payload itself.
# - "score" on scores and "alert" on audit.alerts: see serving and monitoring.


class Envelope(BaseModel):
    """One event on a topic. ``key`` is the patient pseudonym (or another non-identifying key)."""

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    event_type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    key: str
    source: str = ""
    payload: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        # The fields are listed by hand because model_dump walks the whole payload, and for a de-identified
        # resource that walk cost more than the rest of publishing it. Types orjson lacks go through pydantic.
        document = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "occurred_at": self.occurred_at,
            "key": self.key,
            "source": self.source,
            "payload": self.payload,
        }
        return orjson.dumps(document, option=orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY, default=to_jsonable_python)

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        return cls.model_validate(orjson.loads(data))


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Return an idempotent producer configuration: acks from all in-sync replicas, no duplicates on retry."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "client.id": "healthflow",
    }
    config.update(overrides)
    return config


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))


def make_consumer(settings: Settings, group_id: str, topics: list[str], **overrides: Any) -> Consumer:
    """Return a consumer in ``group_id`` subscribed to the full names of ``topics``; offsets are committed by hand."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    }
    config.update(overrides)
    consumer = Consumer(config)
    consumer.subscribe([settings.topic(name) for name in topics])
    return consumer


class DeliveryTracker:
    """Collect delivery reports so a caller can count a message as sent only once the broker acknowledged it."""

    def __init__(self) -> None:
        self.delivered = 0
        self.errors: list[str] = []

    def __call__(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self.errors.append(f"{message.topic()}: {error.str()}")
        else:
            self.delivered += 1


def flush_or_raise(producer: Producer, tracker: DeliveryTracker, *, timeout_seconds: float = 30.0) -> None:
    """Wait for outstanding messages; raise when any was not acknowledged or the wait timed out."""
    remaining = producer.flush(timeout_seconds)
    if remaining:
        raise KafkaException(
            KafkaError(KafkaError._TIMED_OUT, f"{remaining} messages not acknowledged after {timeout_seconds} s")
        )
    if tracker.errors:
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "delivery failed: " + "; ".join(tracker.errors[:5])))


def ensure_topics(
    settings: Settings, names: tuple[str, ...] = ALL_TOPICS, *, timeout_seconds: float = 30.0
) -> list[str]:
    """Create the missing topics with the configured partition count; return the full names created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    existing = set(admin.list_topics(timeout=timeout_seconds).topics)
    wanted = [settings.topic(name) for name in names if settings.topic(name) not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=settings.kafka_partitions, replication_factor=1) for name in wanted]
    )
    for future in futures.values():
        try:
            future.result(timeout_seconds)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    logger.info("created topics %s with %d partitions", wanted, settings.kafka_partitions)
    return wanted
