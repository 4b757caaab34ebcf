"""Run Feast on the repository in ``feature_repo/`` with connection details taken from the settings.

``feature_store.yaml`` reads the HEALTHFLOW_PG_* variables (Feast expands ``${VAR}``); these helpers put the
values of the current settings into the environment of the Feast CLI or of an in-process FeatureStore.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from healthflow.errors import ServiceUnavailableError
from healthflow.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_dir(settings: Settings) -> Path:
    """Return the Feast repository folder; a relative setting is read from the project root."""
    path = settings.features_repo_dir
    return path if path.is_absolute() else REPO_ROOT / path


def feast_environment(settings: Settings) -> dict[str, str]:
    """Return the variables feature_store.yaml expands; the result contains the password, so never log it."""
    password = settings.pg_password.get_secret_value() if settings.pg_password else ""
    return {
        "HEALTHFLOW_PG_HOST": settings.pg_host,
        "HEALTHFLOW_PG_PORT": str(settings.pg_port),
        "HEALTHFLOW_PG_USER": settings.pg_user,
        "HEALTHFLOW_PG_PASSWORD": password,
        "HEALTHFLOW_PG_DATABASE": settings.pg_database,
        "HEALTHFLOW_PG_FEAST_DATABASE": settings.pg_feast_database,
    }


@contextmanager
def feature_store(settings: Settings) -> Iterator[FeatureStore]:
    """Yield a FeatureStore for the repository, with the settings' connection details in the environment.

    The variables are restored afterwards. NOTE: os.environ is process-wide, so two threads opening stores
    for different settings at the same time would see each other's values.
    """
    from feast import FeatureStore

    values = feast_environment(settings)
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    store = None
    try:
        store = FeatureStore(repo_path=str(repo_dir(settings)))
        yield store
    finally:
        if store is not None:
            _close_connections(store)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _close_connections(store: FeatureStore) -> None:
    """Close the connections Feast keeps open: the online store's and the SQL registry's pool.

    NOTE: Feast 0.67 has no public close for a synchronous FeatureStore, so this reads private attributes;
    a missing attribute in another version is skipped.
    """
    online_store = getattr(store._get_provider(), "online_store", None)
    connection = getattr(online_store, "_conn", None)
    if connection is not None:
        connection.close()
        online_store._conn = None  # type: ignore[union-attr]
    pool = getattr(online_store, "_conn_pool", None)
    if pool is not None:
        pool.close()
        online_store._conn_pool = None  # type: ignore[union-attr]
    engines = [getattr(store.registry, name, None) for name in ("write_engine", "read_engine")]
    for engine in {id(engine): engine for engine in engines if engine is not None}.values():
        engine.dispose()


def run_feast_cli(settings: Settings, arguments: list[str]) -> None:
    """Run ``feast ARGUMENTS`` in the repository folder, as a Feast user would; raise when it fails."""
    environment = {**os.environ, **feast_environment(settings)}
    # The feast script sits beside the Python that runs HealthFlow, so the same environment is used.
    feast_executable = Path(sys.executable).parent / "feast"
    command = [str(feast_executable), *arguments]
    logger.info("running feast %s in %s", " ".join(arguments), repo_dir(settings))
    completed = subprocess.run(command, cwd=repo_dir(settings), env=environment, check=False)
    if completed.returncode != 0:
        raise ServiceUnavailableError(
            f"feast {' '.join(arguments)} failed with exit code {completed.returncode}; its output above has the reason"
        )


def apply(settings: Settings) -> None:
    """Register the entities, feature views and services of feature_repo/ in the SQL registry (feast apply)."""
    run_feast_cli(settings, ["apply"])


def materialize_incremental(settings: Settings, end: datetime | None = None) -> None:
    """Load new offline rows up to ``end`` (UTC, default now) into the online store (feast materialize-incremental)."""
    end = end or datetime.now(UTC)
    run_feast_cli(settings, ["materialize-incremental", end.isoformat()])


def materialize_all(settings: Settings, end: datetime | None = None) -> None:
    """Load the latest offline row of every entity, however old, into the online store (feast materialize).

    ``materialize-incremental`` reads only rows whose event time lies after its previous run. Rows that arrive
    late in event time never pass that test: a re-imported UCI archive (synthetic 1999 times), or the stays of a
    patient ingested today, whose shifted timeline lies in the past. This reads each view's whole ttl window.
    """
    end = end or datetime.now(UTC)
    with feature_store(settings) as store:
        window = max(view.ttl for view in store.list_feature_views() if view.online and view.ttl)
    run_feast_cli(settings, ["materialize", (end - window).isoformat(), end.isoformat()])
