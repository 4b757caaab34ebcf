"""Helpers for the ScoreAPI integration tests: isolated settings, a running server, tokens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from healthflow.db import drop_database, ensure_database
from healthflow.events import ensure_topics
from healthflow.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]

# bench/ is not a package; its set-up module is shared by the benchmark and these tests.
sys.path.insert(0, str(REPO_ROOT))


def isolated_settings(stack_settings: Settings, template_database: str, tag: str) -> Settings:
    """Return settings with a fresh migrated database, a Feast database and a topic prefix of their own."""
    suffix = f"{tag}_{uuid.uuid4().hex[:8]}"
    ensure_database(stack_settings, f"serve_{suffix}", template=template_database)
    ensure_database(stack_settings, f"serve_{suffix}_feast")
    settings = stack_settings.model_copy(
        update={
            "pg_database": f"serve_{suffix}",
            "pg_feast_database": f"serve_{suffix}_feast",
            "kafka_topic_prefix": f"s{suffix}.",
            "kafka_partitions": 2,
        }
    )
    ensure_topics(settings)
    return settings


def drop_isolated(stack_settings: Settings, settings: Settings) -> None:
    drop_database(stack_settings, settings.pg_database)
    drop_database(stack_settings, settings.pg_feast_database)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """Return the process environment that makes a server use ``settings`` (plus ``extra`` HEALTHFLOW_* values)."""
    environment = {key: value for key, value in os.environ.items() if not key.upper().startswith("HEALTHFLOW_")}
    values = {
        "PG_HOST": settings.pg_host,
        "PG_PORT": str(settings.pg_port),
        "PG_DATABASE": settings.pg_database,
        "PG_FEAST_DATABASE": settings.pg_feast_database,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "LOG_FORMAT": "json",
        **extra,
    }
    environment.update({f"HEALTHFLOW_{key}": value for key, value in values.items()})
    return environment


@contextmanager
def running_server(
    command: list[str], environment: dict[str, str], log_path: Path, *, wait_for: str, timeout: float = 300
) -> Iterator[str]:
    """Run ``command`` (a server on 127.0.0.1), yield its base URL once ``wait_for`` answers 200, then stop it."""
    port = command[command.index("--port") + 1]
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=environment, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait(process, base_url + wait_for, log_path, timeout)
            yield base_url
        finally:
            # The server was started in its own session, so its workers stop with it.
            os.killpg(process.pid, 15)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(10)


def _wait(process: subprocess.Popen, url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; log:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout} s; log:\n{log_path.read_text()[-4000:]}")
