"""The prediction log: every score goes to ``serving.predictions`` and to the Kafka topic ``scores``.

The PostgreSQL insert is part of the request: a score the log could not store is not returned (503), so
monitoring reads every score a caller received. The Kafka event is published asynchronously (delivery errors are
counted and logged, never raised), because the table is the record and the topic a feed.

``score`` event payload: prediction_id, scored_at (UTC ISO 8601), patient_pseudonym, stay_id,
feature_service, model_name, model_version, run_id, probability, risk_level, features, missing_features.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from healthflow.db import jsonb
from healthflow.errors import InvalidInputError, ServiceUnavailableError
from healthflow.events import SCORES, Envelope
from healthflow.settings import Settings

logger = logging.getLogger(__name__)

RISK_LEVELS = ("low", "medium", "high")


@dataclass(frozen=True)
class PredictionRecord:
    """One logged score; ``features`` are the values the model saw, by feature name."""

    scored_at: datetime
    patient_pseudonym: str
    stay_id: str
    feature_service: str
    model_name: str
    model_version: str
    run_id: str
    probability: float
    risk_level: str
    features: dict[str, Any]
    missing_features: list[str]
    lineage: dict[str, Any]
    discharged_at: datetime | None
    request_subject: str


_INSERT = (
    "INSERT INTO serving.predictions (scored_at, patient_pseudonym, stay_id, feature_service, model_name, "
    "model_version, run_id, probability, risk_level, features, missing_features, lineage, discharged_at, "
    "request_subject) VALUES "
)
_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"


class PredictionLog:
    """Write scores to PostgreSQL (pooled connections) and Kafka; read them back for GET /v1/scores."""

    def __init__(self, settings: Settings, *, publish_to_kafka: bool = True) -> None:
        from psycopg_pool import ConnectionPool

        self.settings = settings
        self._pool = ConnectionPool(
            settings.pg_dsn(), min_size=1, max_size=8, open=True, timeout=10, kwargs={"autocommit": True}
        )
        self._producer = None
        self._topic = settings.topic(SCORES)
        self.kafka_errors = 0
        self._lock = threading.Lock()
        if publish_to_kafka:
            from healthflow.events import make_producer

            self._producer = make_producer(settings, **{"client.id": "healthflow-serving"})

    def close(self) -> None:
        if self._producer is not None:
            remaining = self._producer.flush(10)
            if remaining:
                logger.warning("%d score events not acknowledged by Kafka at shutdown", remaining)
        self._pool.close()

    def check(self) -> None:
        """Raise ServiceUnavailableError when PostgreSQL cannot be reached."""
        try:
            with self._pool.connection(timeout=3) as connection:
                connection.execute("SELECT 1")
        except Exception as error:
            raise ServiceUnavailableError("the prediction log database cannot be reached") from error

    def write(self, records: list[PredictionRecord]) -> list[int]:
        """Insert the records in one statement and publish them; return their ids in order."""
        import psycopg

        # One multi-row statement in autocommit mode: one round trip and one commit for the whole batch.
        statement = _INSERT + ", ".join([_ROW] * len(records)) + " RETURNING id"
        parameters = [value for record in records for value in self._parameters(record)]
        try:
            with self._pool.connection() as connection:
                # Ids come from one sequence in VALUES order, so sorting them restores the records' order.
                ids = sorted(int(row[0]) for row in connection.execute(statement, parameters).fetchall())
        except psycopg.Error as error:
            logger.error("prediction log insert failed for %d scores: %s", len(records), type(error).__name__)
            raise ServiceUnavailableError(
                "the score could not be logged, so it is not returned; retry later"
            ) from error

        if self._producer is not None:
            for prediction_id, record in zip(ids, records, strict=True):
                self._publish(prediction_id, record)
            self._producer.poll(0)
        return ids

    @staticmethod
    def _parameters(record: PredictionRecord) -> tuple[Any, ...]:
        return (
            record.scored_at,
            record.patient_pseudonym,
            record.stay_id,
            record.feature_service,
            record.model_name,
            record.model_version,
            record.run_id,
            record.probability,
            record.risk_level,
            jsonb(record.features),
            record.missing_features,
            jsonb(record.lineage),
            record.discharged_at,
            record.request_subject,
        )

    def _publish(self, prediction_id: int, record: PredictionRecord) -> None:
        if self._producer is None:
            return
        envelope = Envelope(
            event_type="score",
            key=record.patient_pseudonym,
            source="serving",
            occurred_at=record.scored_at,
            payload={
                "prediction_id": prediction_id,
                "scored_at": record.scored_at.isoformat(),
                "patient_pseudonym": record.patient_pseudonym,
                "stay_id": record.stay_id,
                "feature_service": record.feature_service,
                "model_name": record.model_name,
                "model_version": record.model_version,
                "run_id": record.run_id,
                "probability": record.probability,
                "risk_level": record.risk_level,
                "features": record.features,
                "missing_features": record.missing_features,
            },
        )
        try:
            self._producer.produce(
                self._topic,
                key=record.patient_pseudonym.encode(),
                value=envelope.to_bytes(),
                on_delivery=self._delivered,
            )
        except BufferError:
            self._count_kafka_error("local queue full")

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._count_kafka_error(error.str())

    def _count_kafka_error(self, reason: str) -> None:
        with self._lock:
            self.kafka_errors += 1
            count = self.kafka_errors
        # Rate-limited: the first error and then every 100th, so an outage does not flood the log.
        if count == 1 or count % 100 == 0:
            logger.error("score event not published to %s (%d failures so far): %s", self._topic, count, reason)

    def history(
        self,
        *,
        pseudonym: str | None,
        discharged_from: datetime | None,
        discharged_to: datetime | None,
        risk_level: str | None,
        model_version: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """Return (rows newest first, total matching) for the filters; None means no filter on that field."""
        if risk_level is not None and risk_level not in RISK_LEVELS:
            raise InvalidInputError(f"risk_level must be one of {', '.join(RISK_LEVELS)}")
        conditions, parameters = [], []
        for clause, value in (
            ("patient_pseudonym = %s", pseudonym),
            ("discharged_at >= %s", discharged_from),
            ("discharged_at <= %s", discharged_to),
            ("risk_level = %s", risk_level),
            ("model_version = %s", model_version),
        ):
            if value is not None:
                conditions.append(clause)
                parameters.append(value)
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        columns = (
            "id, scored_at, patient_pseudonym, stay_id, feature_service, model_name, model_version, run_id, "
            "probability, risk_level, features, missing_features, lineage, discharged_at"
        )
        with self._pool.connection() as connection:
            counted = connection.execute(f"SELECT count(*) FROM serving.predictions{where}", parameters).fetchone()  # noqa: S608
            total = counted[0] if counted else 0
            cursor = connection.execute(
                f"SELECT {columns} FROM serving.predictions{where} ORDER BY scored_at DESC, id DESC LIMIT %s OFFSET %s",  # noqa: S608
                [*parameters, limit, offset],
            )
            names = [column.name for column in cursor.description or []]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        for row in rows:
            row["scored_at"] = row["scored_at"].isoformat()
            row["discharged_at"] = row["discharged_at"].isoformat() if row["discharged_at"] else None
        return rows, int(total)
