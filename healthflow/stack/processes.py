"""Start, find and stop the stack's background processes through pid files under the state folder."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

# Detached children outlive this process on purpose. Keeping their Popen objects referenced stops Python from
# warning that a still-running child was garbage-collected.
_detached: list[subprocess.Popen] = []


def pid_file(state_dir: Path, name: str) -> Path:
    return state_dir / "run" / f"{name}.pid"


def read_pid(state_dir: Path, name: str) -> int | None:
    """Return the pid recorded for ``name`` if that process is still alive, else None."""
    path = pid_file(state_dir, name)
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
    except ValueError:
        return None
    return pid if is_alive(pid) else None


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) still accepts kill(0), but it is not running.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return status != "Z"


def start_detached(
    name: str,
    command: list[str],
    *,
    state_dir: Path,
    log_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``command`` in its own session, output appended to ``log_file``; record and return its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_path = pid_file(state_dir, name)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    _detached.append(process)
    pid_path.write_text(str(process.pid))
    logger.info("started %s (pid %d), log %s", name, process.pid, log_file)
    return process.pid


def stop_process(state_dir: Path, name: str, *, timeout_seconds: float = 30.0) -> bool:
    """Send SIGTERM to the process group of ``name``, then SIGKILL after the timeout; return True if one ran."""
    pid = read_pid(state_dir, name)
    pid_file(state_dir, name).unlink(missing_ok=True)
    if pid is None:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if is_alive(pid):
        logger.warning("%s (pid %d) did not stop within %.0f s; killing it", name, pid, timeout_seconds)
        _signal_group(pid, signal.SIGKILL)
    logger.info("stopped %s (pid %d)", name, pid)
    return True


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def port_open(host: str, port: int, *, timeout_seconds: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_seconds):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], *, what: str, timeout_seconds: float, log_file: Path | None = None) -> None:
    """Poll ``check`` until it returns True; raise TimeoutError naming ``what`` and its log otherwise."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    where = f"; see {log_file}" if log_file else ""
    raise TimeoutError(f"{what} was not ready after {timeout_seconds:.0f} s{where}")
