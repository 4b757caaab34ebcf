"""Fixtures shared by the whole suite.

Integration tests share one local stack per test session (``healthflow stack up``: PostgreSQL, Kafka and
MLflow on 127.0.0.1) and isolate themselves with a fresh database and topic prefix per test. With CI=true a
stack that cannot start fails the run with instructions; elsewhere the integration tests are skipped with
the same instructions.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthflow.db import apply_migrations, drop_database, ensure_database
from healthflow.events import ensure_topics
from healthflow.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SAMPLE_DATA = REPO_ROOT / "data" / "sample"

HOW_TO_START = (
    "start it with `uv run healthflow stack up` (needs Java 17+ and Maven for Kafka), "
    "or point HEALTHFLOW_PG_*/HEALTHFLOW_KAFKA_BOOTSTRAP_SERVERS/HEALTHFLOW_MLFLOW_TRACKING_URI at running services"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data sets beside the repository (Synthea, UCI, HL7 examples)."""
    if not SHARED_DATA.exists():
        message = f"shared data folder {SHARED_DATA} not found; tests on the full data sets need it"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    """Settings of the session's stack, started (or found running) once; databases migrated."""
    from healthflow.stack import control

    settings = load_settings()
    try:
        control.up(settings)
    except Exception as error:  # noqa: BLE001 - any start-up failure gets the same instructions
        message = f"the local stack is not available ({type(error).__name__}: {error}); {HOW_TO_START}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    return settings


@pytest.fixture(scope="session")
def template_database(stack_settings: Settings) -> Iterator[str]:
    """A database with every migration applied, so each test's database is a fast copy of it.

    Its name is unique to this session, so concurrent test sessions on one stack keep their own.
    """
    template = f"test_template_{uuid.uuid4().hex[:8]}"
    ensure_database(stack_settings, template)
    apply_migrations(stack_settings, template)
    yield template
    drop_database(stack_settings, template)


@pytest.fixture
def settings(stack_settings: Settings, template_database: str) -> Iterator[Settings]:
    """Settings for one test: its own main and Feast databases (migrated) and its own topic prefix."""
    suffix = uuid.uuid4().hex[:10]
    database = f"test_{suffix}"
    feast_database = f"test_{suffix}_feast"
    ensure_database(stack_settings, database, template=template_database)
    ensure_database(stack_settings, feast_database)
    isolated = stack_settings.model_copy(
        update={
            "pg_database": database,
            "pg_feast_database": feast_database,
            "kafka_topic_prefix": f"t{suffix}.",
            "kafka_partitions": 2,
        }
    )
    ensure_topics(isolated)
    yield isolated
    drop_database(stack_settings, database)
    drop_database(stack_settings, feast_database)
