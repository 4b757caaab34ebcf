"""PostgreSQL access: connections from settings and the schema migrations every stage shares.

Migrations are plain SQL files in ``healthflow/migrations/`` named ``NNNN_description.sql``, applied in
order once each and recorded in ``healthflow_meta.schema_migrations``. A stage adds its tables by adding a
file, never by editing an applied one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from healthflow.settings import Settings

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def jsonb(value: Any) -> Jsonb:
    """Wrap ``value`` as a JSONB query parameter, serialised with orjson (faster than json; numpy values allowed)."""
    return Jsonb(value, dumps=_orjson_text)


def _orjson_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def connect(settings: Settings, database: str | None = None, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection; the error names host, port and database (never the password) and how to start one."""
    target = database or settings.pg_database
    try:
        return psycopg.connect(settings.pg_dsn(target), autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as error:
        raise ConnectionError(
            f"cannot connect to PostgreSQL database {target!r} at {settings.pg_host}:{settings.pg_port}; "
            "start the local stack with `healthflow stack up` (or `make stack`) or set HEALTHFLOW_PG_HOST/PORT"
        ) from error


@contextmanager
def transaction(settings: Settings, database: str | None = None) -> Iterator[psycopg.Connection]:
    """Yield a connection inside one transaction: committed on success, rolled back on error, then closed."""
    with connect(settings, database) as connection, connection.transaction():
        yield connection


def ensure_database(settings: Settings, name: str, *, template: str | None = None) -> bool:
    """Create database ``name`` if it does not exist; return True when it was created."""
    with connect(settings, "postgres", autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        connection.execute(statement)
        logger.info("created database %s", name)
        return True


def drop_database(settings: Settings, name: str) -> None:
    """Drop database ``name`` if it exists, ending its open sessions first."""
    with connect(settings, "postgres", autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def apply_migrations(settings: Settings, database: str | None = None) -> list[str]:
    """Apply the migrations not yet applied to ``database``; return the names applied now."""
    applied_now = []
    with connect(settings, database) as connection:
        connection.execute("CREATE SCHEMA IF NOT EXISTS healthflow_meta")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS healthflow_meta.schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # One migrator at a time: concurrent `stack up` and a worker start must not apply a file twice.
        connection.execute("SELECT pg_advisory_xact_lock(hashtext('healthflow_migrations'))")
        done = {row[0] for row in connection.execute("SELECT name FROM healthflow_meta.schema_migrations")}
        for path in migration_files():
            if path.name in done:
                continue
            connection.execute(path.read_text(encoding="utf-8"))
            connection.execute("INSERT INTO healthflow_meta.schema_migrations (name) VALUES (%s)", (path.name,))
            applied_now.append(path.name)
        connection.commit()
    if applied_now:
        logger.info("applied %d migrations to %s: %s", len(applied_now), database or settings.pg_database, applied_now)
    return applied_now


def prepare_platform_databases(settings: Settings) -> None:
    """Create the platform's databases if missing and bring the main one to the latest migration."""
    for database in (settings.pg_database, settings.pg_mlflow_database, settings.pg_feast_database):
        ensure_database(settings, database)
    apply_migrations(settings)
