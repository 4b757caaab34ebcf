"""The local stack itself: real PostgreSQL and Kafka round trips, and data that survives restarts."""

from __future__ import annotations

import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from healthflow.db import connect
from healthflow.events import DeliveryTracker, Envelope, flush_or_raise, make_consumer, make_producer
from healthflow.settings import Settings
from healthflow.stack import control, kafka

pytestmark = pytest.mark.integration


def consume(consumer: Consumer, count: int, *, timeout_seconds: float = 60.0) -> list[Envelope]:
    import time

    events: list[Envelope] = []
    deadline = time.monotonic() + timeout_seconds
    while len(events) < count and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        assert message.error() is None, message.error()
        events.append(Envelope.from_bytes(message.value()))
    return events


def produce(settings: Settings, topic: str, events: list[Envelope]) -> None:
    producer = make_producer(settings)
    tracker = DeliveryTracker()
    for event in events:
        producer.produce(settings.topic(topic), key=event.key, value=event.to_bytes(), on_delivery=tracker)
    flush_or_raise(producer, tracker)
    assert tracker.delivered == len(events)


def test_kafka_round_trip_keeps_per_key_order(settings: Settings) -> None:
    events = [Envelope(event_type="test", key=f"p{index % 3}", payload={"seq": index}) for index in range(30)]
    produce(settings, "fhir.raw", events)

    consumer = make_consumer(settings, f"test-{uuid.uuid4().hex[:8]}", ["fhir.raw"])
    try:
        received = consume(consumer, len(events))
    finally:
        consumer.close()

    assert len(received) == len(events)
    for key in ("p0", "p1", "p2"):
        sequence = [event.payload["seq"] for event in received if event.key == key]
        assert sequence == sorted(sequence)


def test_postgres_write_then_read(settings: Settings) -> None:
    with connect(settings) as connection:
        connection.execute(
            "INSERT INTO ops.dead_letter (stage, source, reason, details) VALUES (%s, %s, %s, %s::jsonb)",
            ("test", "unit", "a reason", '{"n": 1}'),
        )
        connection.commit()
    with connect(settings) as connection:
        row = connection.execute("SELECT stage, reason, details FROM ops.dead_letter").fetchone()
    assert row == ("test", "a reason", {"n": 1})


def test_migrations_created_the_zones(settings: Settings) -> None:
    with connect(settings) as connection:
        schemas = {row[0] for row in connection.execute("SELECT schema_name FROM information_schema.schemata")}
    assert {"raw", "deid", "features", "serving", "monitoring", "ops"} <= schemas


# --- A private stack on free ports, so restarts do not disturb the session's shared stack ---


def free_port_pair() -> int:
    """Return a port p such that p and p + 1 were both free (Kafka uses p + 1 for its controller)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as neighbour:
            try:
                neighbour.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports found on 127.0.0.1")


@pytest.fixture(scope="module")
def private_stack(stack_settings: Settings) -> Iterator[Settings]:
    # Not under pytest's temporary folder: pytest makes its base folder private (0700) at every session start,
    # which would lock PostgreSQL's service account out of a data folder below it.
    state_dir: Path = (stack_settings.state_dir / f"private-stack-{uuid.uuid4().hex[:8]}").resolve()
    state_dir.mkdir(parents=True)
    settings = stack_settings.model_copy(
        update={
            "state_dir": state_dir,
            "pg_port": free_port_pair(),
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port_pair()}",
            "mlflow_tracking_uri": f"http://127.0.0.1:{free_port_pair()}",
            "kafka_partitions": 1,
        }
    )
    control.up(settings)
    yield settings
    control.down(settings)
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.mark.slow
def test_stack_down_then_up_keeps_data(private_stack: Settings) -> None:
    assert all(service.healthy for service in control.status(private_stack))
    with connect(private_stack) as connection:
        connection.execute(
            "INSERT INTO ops.dead_letter (stage, source, reason) VALUES ('restart-test', 'test', 'kept')"
        )
        connection.commit()
    produce(private_stack, "scores", [Envelope(event_type="test", key="k", payload={"kept": True})])

    stopped = control.down(private_stack)
    assert stopped == ["mlflow", "kafka", "postgres"]
    assert not any(service.healthy for service in control.status(private_stack))

    control.up(private_stack)
    assert all(service.healthy for service in control.status(private_stack))
    with connect(private_stack) as connection:
        kept = connection.execute("SELECT count(*) FROM ops.dead_letter WHERE stage = 'restart-test'").fetchone()
    assert kept == (1,)
    consumer = make_consumer(private_stack, "restart-reader", ["scores"])
    try:
        received = consume(consumer, 1)
    finally:
        consumer.close()
    assert [event.payload for event in received] == [{"kept": True}]


@pytest.mark.slow
def test_messages_survive_broker_restart(private_stack: Settings) -> None:
    events = [Envelope(event_type="test", key="patient-a", payload={"seq": index}) for index in range(20)]
    produce(private_stack, "fhir.deid", events)

    kafka.stop(private_stack)
    assert not kafka.is_healthy(private_stack)
    kafka.start(private_stack)

    consumer = make_consumer(private_stack, f"after-restart-{uuid.uuid4().hex[:6]}", ["fhir.deid"])
    try:
        received = consume(consumer, len(events))
    finally:
        consumer.close()
    assert [event.payload["seq"] for event in received] == list(range(20))


def test_stack_env_lines_load_as_settings(stack_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    from healthflow.settings import load_settings

    for line in control.env_lines(stack_settings):
        name, value = line.removeprefix("export ").split("=", 1)
        monkeypatch.setenv(name, shlex.split(value)[0])
    loaded = load_settings()
    assert loaded.pg_port == stack_settings.pg_port
    assert loaded.kafka_bootstrap_servers == stack_settings.kafka_bootstrap_servers
