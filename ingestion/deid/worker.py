"""The DeID worker: consumes ``fhir.raw``, writes the deid zone and publishes ``fhir.deid``.

Delivery is at least once. For each batch of events the worker reads the raw rows, de-identifies them,
stores the results in one transaction, publishes them, waits for the broker's acknowledgements, and only
then commits the consumer offsets. A crash anywhere before the commit replays the batch. The stores are
idempotent on (raw row id, profile), and the republished events carry the stored content, so a replay
adds no row and publishes the same resource.

Fail closed: a resource that cannot be de-identified is never published. It goes to ``ops.dead_letter``
and the ``fhir.deadletter`` topic with the reason (element paths and types only), and the worker goes on.
A database or Kafka failure stops the worker without committing, so the batch is replayed on restart.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from healthflow.db import connect
from healthflow.errors import DeidentificationError
from healthflow.events import (
    DEAD_LETTER,
    FHIR_DEID,
    FHIR_RAW,
    DeliveryTracker,
    Envelope,
    flush_or_raise,
    make_consumer,
    make_producer,
)
from healthflow.pseudonym import pseudonymise
from healthflow.settings import Settings
from ingestion.deid.rules import load_rules
from ingestion.deid.store import (
    STAGE,
    RawRow,
    fetch_raw_rows,
    record_dead_letter,
    record_dropped,
    resource_types_by_id,
    store_deidentified,
)
from ingestion.deid.transform import DeidConfig, Deidentifier, ResourceTypeDropped

logger = logging.getLogger(__name__)

EVENT_RAW_STORED = "fhir.raw.stored"
EVENT_DEID_STORED = "fhir.deid.stored"
EVENT_DEAD_LETTER = "deadletter"


@dataclass
class WorkerStats:
    """Counts since the worker started."""

    events: int = 0
    stored: int = 0
    published: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    dead_lettered: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "stored": self.stored,
            "published": self.published,
            "dropped": dict(self.dropped),
            "dead_lettered": self.dead_lettered,
            "batches": self.batches,
        }


@dataclass
class _Failure:
    reason: str
    dedup_key: str
    details: dict[str, Any]
    key: str


# The de-identifier of a pool process, built once by _init_process.
_process_deidentifier: Deidentifier | None = None


def _init_process(settings: Settings) -> None:
    global _process_deidentifier
    _process_deidentifier = Deidentifier(load_rules(settings.deid_rules_file), DeidConfig.from_settings(settings))


def _deidentify_task(task: tuple[dict[str, Any], str, str | None, dict[str, str]]) -> tuple[str, Any]:
    assert _process_deidentifier is not None, "pool process not initialised"
    return deidentify_outcome(_process_deidentifier, *task)


def deidentify_outcome(
    deidentifier: Deidentifier,
    content: dict[str, Any],
    resource_id: str,
    patient_id: str | None,
    known_types: dict[str, str],
) -> tuple[str, Any]:
    """Return ("stored", result fields), ("dropped", None) or ("failed", reason) for one raw resource."""
    try:
        result = deidentifier.deidentify(
            content, resource_id=resource_id, patient_id=patient_id, resolve=known_types.get
        )
    except ResourceTypeDropped:
        return "dropped", None
    except DeidentificationError as error:
        return "failed", error.message
    except Exception as error:  # noqa: BLE001 - fail closed on any bug and go on with the batch
        # The exception text may quote the resource, so only its type is reported.
        return "failed", f"unexpected {type(error).__name__} during de-identification"
    return "stored", (result.resource_type, result.pseudo_id, result.patient_pseudonym, result.resource)


class DeidWorker:
    """One member of the DeID consumer group."""

    def __init__(self, settings: Settings, *, group_id: str | None = None) -> None:
        self.settings = settings
        self.config = DeidConfig.from_settings(settings)
        self.deidentifier = Deidentifier(load_rules(settings.deid_rules_file), self.config)
        self.profile = self.config.profile
        self.group_id = group_id or settings.deid_consumer_group
        self.stats = WorkerStats()
        self._deid_topic = settings.topic(FHIR_DEID)
        self._dead_letter_topic = settings.topic(DEAD_LETTER)
        self._pool: Any = None

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        max_events: int | None = None,
        idle_exit_seconds: float | None = None,
    ) -> WorkerStats:
        """Consume until ``stop`` is set, ``max_events`` were handled, or no event came for ``idle_exit_seconds``."""
        stop = stop or threading.Event()
        if self.settings.deid_processes > 0:
            # Spawned before the Kafka clients start their threads; each process loads the rules once.
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(
                self.settings.deid_processes, initializer=_init_process, initargs=(self.settings,)
            )
        consumer = make_consumer(self.settings, self.group_id, [FHIR_RAW])
        producer = make_producer(self.settings, **{"client.id": "healthflow-deid"})
        logger.info("deid worker started: group %s, profile %s", self.group_id, self.profile)
        last_event = time.monotonic()
        try:
            with connect(self.settings) as connection:
                while not stop.is_set():
                    if max_events is not None and self.stats.events >= max_events:
                        break
                    batch_size = self.settings.deid_batch_size
                    if max_events is not None:
                        batch_size = min(batch_size, max_events - self.stats.events)
                    messages = consumer.consume(batch_size, timeout=self.settings.deid_poll_timeout_seconds)
                    messages = [message for message in messages if not self._is_partition_eof(message)]
                    if not messages:
                        if not consumer.assignment():
                            # Still joining the group, because a killed member keeps its partitions until its
                            # session times out. Waiting for an assignment is not idleness.
                            last_event = time.monotonic()
                        elif idle_exit_seconds is not None and time.monotonic() - last_event > idle_exit_seconds:
                            break
                        continue
                    last_event = time.monotonic()
                    self.process_batch(connection, producer, messages)
                    consumer.commit(asynchronous=False)
        finally:
            consumer.close()
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            producer.flush(30)
            logger.info("deid worker stopped: %s", self.stats.as_dict())
        return self.stats

    @staticmethod
    def _is_partition_eof(message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        logger.warning("consumer error on %s: %s", message.topic(), error.str())
        return True

    def process_batch(self, connection: Any, producer: Any, messages: list[Message]) -> None:
        """De-identify, store and publish one batch; return only after the broker acknowledged every event."""
        tracker = DeliveryTracker()
        failures: list[_Failure] = []
        events: list[tuple[Message, Envelope]] = []
        for message in messages:
            envelope = self._parse(message, failures)
            if envelope is not None:
                events.append((message, envelope))

        with connection.transaction():
            raw_ids = [int(envelope.payload["raw_id"]) for _, envelope in events]
            rows = fetch_raw_rows(connection, raw_ids)
            known_types = self._known_types(connection, rows)
            records: list[dict[str, Any]] = []
            dropped_rows: list[RawRow] = []
            found: list[RawRow] = []
            for _, envelope in events:
                raw_id = int(envelope.payload["raw_id"])
                row = rows.get(raw_id)
                if row is None:
                    failures.append(
                        self._failure(
                            f"raw row {raw_id} not found in raw.resources",
                            raw_id=raw_id,
                            key=envelope.key,
                            resource_type=str(envelope.payload.get("resource_type", "")),
                        )
                    )
                else:
                    found.append(row)

            for row, (status, value) in zip(found, self._deidentify_rows(found, known_types), strict=True):
                if status == "stored":
                    records.append(self._record(row, value))
                elif status == "dropped":
                    dropped_rows.append(row)
                else:
                    if value.startswith("unexpected "):
                        logger.error("%s on raw row %d (%s)", value, row.raw_id, row.resource_type)
                    failures.append(
                        self._failure(
                            value, raw_id=row.raw_id, key=self._event_key(row), resource_type=row.resource_type
                        )
                    )

            stored = store_deidentified(connection, records, profile=self.profile)
            counted = record_dropped(connection, dropped_rows, profile=self.profile)
            dead_letters = [
                (
                    failure,
                    record_dead_letter(
                        connection,
                        source=self.settings.topic(FHIR_RAW),
                        reason=failure.reason,
                        dedup_key=failure.dedup_key,
                        details=failure.details,
                    ),
                )
                for failure in failures
            ]

        for deid in stored.values():
            self._send(
                producer,
                tracker,
                self._deid_topic,
                Envelope(
                    event_type=EVENT_DEID_STORED,
                    key=deid.patient_pseudonym or deid.pseudo_id,
                    source=STAGE,
                    payload={
                        "deid_id": deid.deid_id,
                        "raw_id": deid.raw_id,
                        "resource_type": deid.resource_type,
                        "pseudo_id": deid.pseudo_id,
                        "version": deid.version,
                        "batch_id": deid.batch_id,
                        "profile": self.profile,
                        "resource": deid.content,
                    },
                ),
            )
        for failure, (dead_letter_id, is_new) in dead_letters:
            if is_new:
                logger.warning(
                    "resource not de-identified, sent to the dead letter %d: %s", dead_letter_id, failure.reason
                )
            self._send(
                producer,
                tracker,
                self._dead_letter_topic,
                Envelope(
                    event_type=EVENT_DEAD_LETTER,
                    key=failure.key,
                    source=STAGE,
                    payload={
                        "stage": STAGE,
                        "reason": failure.reason,
                        "dead_letter_id": dead_letter_id,
                        **{name: value for name, value in failure.details.items() if name != "dedup_key"},
                    },
                ),
            )
        flush_or_raise(producer, tracker)

        self.stats.events += len(messages)
        self.stats.stored += len(stored)
        self.stats.published += tracker.delivered
        self.stats.dead_lettered += len(failures)
        for (_, resource_type), count in counted.items():
            self.stats.dropped[resource_type] += count
        self.stats.batches += 1
        logger.info(
            "deid batch: %d events, %d stored, %d dropped, %d dead-lettered",
            len(messages),
            len(stored),
            len(dropped_rows),
            len(failures),
        )

    def _parse(self, message: Message, failures: list[_Failure]) -> Envelope | None:
        where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
        try:
            envelope = Envelope.from_bytes(message.value() or b"")
        except ValueError:
            failures.append(
                _Failure(
                    reason=f"event at {where} is not a valid event envelope",
                    dedup_key=f"event:{where}",
                    details={"event": where},
                    key="deid-unreadable",
                )
            )
            return None
        if envelope.event_type != EVENT_RAW_STORED:
            return None  # other event types on the topic are not ours to handle
        if not isinstance(envelope.payload.get("raw_id"), int):
            failures.append(
                _Failure(
                    reason=f"event at {where} has no integer raw_id",
                    dedup_key=f"event:{where}",
                    details={"event": where},
                    key=envelope.key,
                )
            )
            return None
        return envelope

    def _failure(self, reason: str, *, raw_id: int, key: str, resource_type: str) -> _Failure:
        return _Failure(
            reason=reason,
            dedup_key=f"raw:{raw_id}:{self.profile}",
            details={"raw_id": raw_id, "resource_type": resource_type, "profile": self.profile},
            key=key,
        )

    def _known_types(self, connection: Any, rows: dict[int, RawRow]) -> dict[str, str]:
        """Map every ``urn:uuid:`` reference in the batch to the type of the raw resource it names."""
        references = {reference for row in rows.values() for reference in row.urn_references}
        by_id = resource_types_by_id(connection, sorted(reference[len("urn:uuid:") :] for reference in references))
        known = {f"urn:uuid:{resource_id}": resource_type for resource_id, resource_type in by_id.items()}
        for row in rows.values():
            if row.patient_id:
                known[f"urn:uuid:{row.patient_id}"] = "Patient"
        return known

    def _deidentify_rows(self, rows: list[RawRow], known_types: dict[str, str]) -> list[tuple[str, Any]]:
        tasks = [
            (
                row.content,
                row.resource_id,
                row.patient_id,
                {reference: known_types[reference] for reference in row.urn_references if reference in known_types},
            )
            for row in rows
        ]
        if self._pool is None or len(tasks) < 2:
            return [deidentify_outcome(self.deidentifier, *task) for task in tasks]
        chunk = max(1, len(tasks) // (4 * self.settings.deid_processes))
        return self._pool.map(_deidentify_task, tasks, chunksize=chunk)

    def _event_key(self, row: RawRow) -> str:
        if row.patient_id:
            return pseudonymise(self.config.key, "Patient", row.patient_id)
        return pseudonymise(self.config.key, row.resource_type, row.resource_id)

    @staticmethod
    def _record(row: RawRow, value: tuple[str, str, str | None, dict[str, Any]]) -> dict[str, Any]:
        resource_type, pseudo_id, patient_key, resource = value
        return {
            "raw_id": row.raw_id,
            "resource_type": resource_type,
            "pseudo_id": pseudo_id,
            "version": row.version,
            "patient_pseudonym": patient_key,
            "batch_id": row.batch_id,
            "content": resource,
        }

    @staticmethod
    def _send(producer: Any, tracker: DeliveryTracker, topic: str, envelope: Envelope) -> None:
        while True:
            try:
                producer.produce(topic, key=envelope.key, value=envelope.to_bytes(), on_delivery=tracker)
                break
            except BufferError:
                producer.poll(0.5)  # the local queue is full: serve delivery reports to make room
        producer.poll(0)
