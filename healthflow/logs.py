"""Logging set-up: JSON lines by default, a readable format on request, configured once at the entry point.

Modules use ``logging.getLogger(__name__)`` with lazy ``%s`` arguments. Never log a FHIR payload, a name or a
raw identifier: log counts, resource types and pseudonyms. As a safety net, ``PayloadGuard`` replaces any
log argument that looks like a FHIR resource (a mapping with ``resourceType``, or its JSON text) before the
record is formatted.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REDACTED = "<redacted FHIR payload>"

# Record attributes set by the logging module itself; anything else was passed through ``extra=``.
_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _looks_like_fhir(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "resourceType" in value
    if isinstance(value, bytes | bytearray):
        return b'"resourceType"' in value
    if isinstance(value, str):
        return '"resourceType"' in value
    return False


class PayloadGuard(logging.Filter):
    """Replace FHIR payloads in a record's message, arguments and extra fields with a placeholder."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _looks_like_fhir(record.msg):
            record.msg = REDACTED
        if isinstance(record.args, tuple):
            record.args = tuple(REDACTED if _looks_like_fhir(arg) else arg for arg in record.args)
        elif isinstance(record.args, Mapping) and _looks_like_fhir(record.args):
            record.args = {}
            record.msg = REDACTED
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRIBUTES and _looks_like_fhir(value):
                setattr(record, key, REDACTED)
        return True


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time (UTC), level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(*, level: str = "INFO", log_format: str = "json", log_file: Path | None = None) -> None:
    """Configure the root logger once, at a program's entry point; calling it again replaces the handlers."""
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(PayloadGuard())
        root.addHandler(handler)
    root.setLevel(level)

    # Chatty third-party loggers stay at WARNING unless we debug.
    if level != "DEBUG":
        for name in ("urllib3", "httpx", "alembic", "botocore", "numba", "matplotlib", "git"):
            logging.getLogger(name).setLevel(logging.WARNING)
