"""The ingestion pipeline: check submissions (maybe in worker processes), store, publish, then commit.

One source run is one raw.batches row. Its resources are written in chunks of ``ingest_store_batch_size``;
each chunk is one database transaction. It commits only after Kafka acknowledged every event of the chunk,
so a resource counts as ingested only when both its row and its event exist. If the broker fails,
the chunk rolls back and a re-run stores and publishes it again. Events acknowledged before the failure
then name raw_ids that do not exist, so consumers skip events whose row they cannot find.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from healthflow.db import connect, transaction
from healthflow.events import DeliveryTracker
from healthflow.settings import Settings
from ingestion.fhir.checking import Checked, check_submission
from ingestion.fhir.publisher import RawEventPublisher
from ingestion.fhir.raw_store import (
    StoredRejection,
    StoredRow,
    add_batch_counts,
    start_batch,
    store_rejection,
    store_resources,
)
from ingestion.fhir.sources import Source, Submission

logger = logging.getLogger(__name__)

# Submissions handed to the worker pool ahead of the one being stored, per worker. Bounds memory: each is
# at most ingest_max_input_bytes of input.
PREFETCH_PER_WORKER = 4
MAX_SOURCE_REF_CHARS = 1000


@dataclass
class IngestSummary:
    """Counts of one run. ``accepted`` = new raw rows (new resources or new versions)."""

    accepted: int = 0
    unchanged: int = 0
    rejected: int = 0
    skipped_entries: int = 0
    accepted_by_type: Counter[str] = field(default_factory=Counter)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    batch_ids: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    @property
    def resources(self) -> int:
        return self.accepted + self.unchanged + self.rejected

    @property
    def resources_per_second(self) -> float:
        return self.resources / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "skipped_entries": self.skipped_entries,
            "accepted_by_type": dict(sorted(self.accepted_by_type.items())),
            "rejected_by_reason": dict(self.rejected_by_reason.most_common()),
            "batch_ids": self.batch_ids,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "resources_per_second": round(self.resources_per_second, 1),
        }


@dataclass
class SubmissionResult:
    """The outcome of one submission: its new rows by (type, id, hash) and its stored rejections."""

    checked: Checked
    stored: dict[tuple[str, str, str], StoredRow]
    rejections: list[StoredRejection]


class BatchWriter:
    """Writes the checked submissions of one raw.batches row, chunk by chunk."""

    def __init__(self, settings: Settings, publisher: RawEventPublisher, *, source: str, source_ref: str) -> None:
        self.settings = settings
        self.publisher = publisher
        self.source = source
        self.batch_id = uuid.uuid4().hex
        self.summary = IngestSummary(batch_ids=[self.batch_id])
        with transaction(settings) as connection:
            start_batch(
                connection,
                batch_id=self.batch_id,
                source=source,
                source_ref=source_ref[:MAX_SOURCE_REF_CHARS],
            )

    def write(self, checked_list: list[Checked], *, finished: bool = False) -> list[SubmissionResult]:
        """Store, publish and commit the chunk; raise (and roll back) when Kafka does not acknowledge."""
        candidates = [candidate for checked in checked_list for candidate in checked.candidates]
        results: list[SubmissionResult] = []
        started = time.monotonic()
        tracker = DeliveryTracker()
        with connect(self.settings) as connection, connection.transaction():
            stored = store_resources(connection, candidates, source=self.source, batch_id=self.batch_id)
            stored_at = time.monotonic()
            for checked in checked_list:
                rejections = [
                    store_rejection(connection, rejection, source=self.source, batch_id=self.batch_id)
                    for rejection in checked.rejections
                ]
                results.append(SubmissionResult(checked, {}, rejections))
            for row in stored.values():
                self.publisher.publish_stored(row, batch_id=self.batch_id, source=self.source, tracker=tracker)
            for result in results:
                for rejection in result.rejections:
                    self.publisher.publish_rejection(rejection, source=self.source, tracker=tracker)
            self.publisher.confirm(tracker)
            confirmed_at = time.monotonic()

            counts = self._count(checked_list, stored, results)
            add_batch_counts(connection, batch_id=self.batch_id, finished=finished, **counts)
        logger.debug(
            "chunk of %d resources: stored in %.2f s, acknowledged in %.2f s, committed in %.2f s",
            len(candidates),
            stored_at - started,
            confirmed_at - stored_at,
            time.monotonic() - confirmed_at,
        )
        for result in results:
            result.stored = {key: stored[key] for key in _keys_of(result.checked) if key in stored}
        return results

    def _count(
        self,
        checked_list: list[Checked],
        stored: dict[tuple[str, str, str], StoredRow],
        results: list[SubmissionResult],
    ) -> dict[str, int]:
        candidates = sum(len(checked.candidates) for checked in checked_list)
        rejected = sum(len(result.rejections) for result in results)
        summary = self.summary
        summary.accepted += len(stored)
        summary.unchanged += candidates - len(stored)
        summary.rejected += rejected
        summary.skipped_entries += sum(len(checked.skipped_entries) for checked in checked_list)
        summary.accepted_by_type.update(row.resource_type for row in stored.values())
        summary.rejected_by_reason.update(rejection.reason for result in results for rejection in result.rejections)
        return {"accepted": len(stored), "unchanged": candidates - len(stored), "rejected": rejected}

    def finish(self) -> None:
        with transaction(self.settings) as connection:
            add_batch_counts(connection, batch_id=self.batch_id, accepted=0, unchanged=0, rejected=0, finished=True)


def _keys_of(checked: Checked) -> set[tuple[str, str, str]]:
    return {(c.resource_type, c.resource_id, c.content_hash) for c in checked.candidates}


def check_all(submissions: Iterable[Submission], *, workers: int) -> Iterator[Checked]:
    """Check submissions in order, in ``workers`` processes (0: in this process), with bounded prefetch."""
    if workers <= 0:
        yield from map(check_submission, submissions)
        return
    # spawn, not fork: the parent runs librdkafka threads, which a forked child must not inherit.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pending: deque = deque()
        for submission in submissions:
            pending.append(pool.apply_async(check_submission, (submission,)))
            if len(pending) >= workers * PREFETCH_PER_WORKER:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


ProgressCallback = Callable[[int], None]


def ingest_source(
    settings: Settings,
    source: Source,
    *,
    source_ref: str,
    publisher: RawEventPublisher,
    on_progress: ProgressCallback | None = None,
) -> IngestSummary:
    """Ingest everything ``source`` yields as one batch; ``on_progress`` gets the resources done per chunk."""
    started = time.monotonic()
    writer = BatchWriter(settings, publisher, source=source.kind, source_ref=source_ref)
    chunk: list[Checked] = []
    chunk_size = 0
    for checked in check_all(source.submissions(), workers=settings.ingest_validation_workers):
        chunk.append(checked)
        chunk_size += len(checked.candidates) + len(checked.rejections)
        if chunk_size >= settings.ingest_store_batch_size:
            writer.write(chunk)
            if on_progress:
                on_progress(chunk_size)
            chunk, chunk_size = [], 0
    writer.write(chunk, finished=True)
    if on_progress and chunk_size:
        on_progress(chunk_size)
    writer.summary.elapsed_seconds = time.monotonic() - started
    logger.info(
        "ingested batch %s from %s: %d accepted, %d unchanged, %d rejected",
        writer.batch_id,
        source.kind,
        writer.summary.accepted,
        writer.summary.unchanged,
        writer.summary.rejected,
    )
    return writer.summary


def ingest_sources(
    settings: Settings, sources: list[Source], *, source_ref: str, on_progress: ProgressCallback | None = None
) -> IngestSummary:
    """Ingest each source as its own batch and return the combined counts."""
    started = time.monotonic()
    total = IngestSummary()
    publisher = RawEventPublisher(settings)
    try:
        for source in sources:
            summary = ingest_source(
                settings, source, source_ref=source_ref, publisher=publisher, on_progress=on_progress
            )
            merge_summary(total, summary)
    finally:
        publisher.close()
    total.elapsed_seconds = time.monotonic() - started
    return total


def merge_summary(total: IngestSummary, part: IngestSummary) -> None:
    total.accepted += part.accepted
    total.unchanged += part.unchanged
    total.rejected += part.rejected
    total.skipped_entries += part.skipped_entries
    total.accepted_by_type.update(part.accepted_by_type)
    total.rejected_by_reason.update(part.rejected_by_reason)
    total.batch_ids.extend(part.batch_ids)
