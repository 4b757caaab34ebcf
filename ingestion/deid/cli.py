"""``healthflow deid run|file`` and ``healthflow privacy scan``.

The de-identification modules import fhir.resources, so they are imported inside the commands to keep
``healthflow --help`` fast.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from healthflow.settings import get_settings

logger = logging.getLogger(__name__)

deid_app = typer.Typer(help="De-identify FHIR resources (pseudonyms, date shift, allowlist).", no_args_is_help=True)
privacy_app = typer.Typer(help="Check that no identifier from the raw zone leaked downstream.", no_args_is_help=True)


@deid_app.command("run")
def run(
    max_events: Annotated[int | None, typer.Option(help="Stop after this many events (default: never).")] = None,
    idle_exit: Annotated[float | None, typer.Option(help="Stop after this many seconds without a new event.")] = None,
) -> None:
    """Run the DeID worker: consume fhir.raw, store in the deid zone, publish fhir.deid; stop with Ctrl-C."""
    from healthflow.db import apply_migrations
    from healthflow.events import ensure_topics
    from ingestion.deid.worker import DeidWorker

    settings = get_settings()
    apply_migrations(settings)
    ensure_topics(settings)
    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    stats = DeidWorker(settings).run(stop=stop, max_events=max_events, idle_exit_seconds=idle_exit)
    typer.echo(
        f"events {stats.events}, stored {stats.stored}, published {stats.published}, "
        f"dropped {sum(stats.dropped.values())}, dead-lettered {stats.dead_lettered}"
    )


@deid_app.command("file")
def deid_file(
    source: Annotated[Path, typer.Argument(help="FHIR Bundle (.json, .json.gz) or NDJSON (.ndjson, .ndjson.gz).")],
    target: Annotated[Path, typer.Argument(help="Output: a collection Bundle, or NDJSON when named *.ndjson.")],
) -> None:
    """De-identify one file offline with the same rules and key as the worker."""
    import orjson

    from healthflow.errors import HealthFlowError
    from ingestion.deid.offline import deidentify_file
    from ingestion.deid.rules import RulesError, load_rules
    from ingestion.deid.transform import DeidConfig, Deidentifier

    settings = get_settings()
    try:
        deidentifier = Deidentifier(load_rules(settings.deid_rules_file), DeidConfig.from_settings(settings))
        report = deidentify_file(deidentifier, source, target)
    except (HealthFlowError, RulesError) as error:
        typer.echo(f"deid file failed: {error}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    if report.failures:
        typer.echo(f"{len(report.failures)} resources could not be de-identified and were left out", err=True)
        raise typer.Exit(code=1)


@privacy_app.command("scan")
def scan(
    topics: Annotated[bool, typer.Option(help="Also read every Kafka topic under the prefix.")] = True,
    files: Annotated[bool, typer.Option(help="Also search the state folder's files and privacy_scan_dirs.")] = True,
    output: Annotated[Path | None, typer.Option(help="Also write the report as JSON to this file.")] = None,
) -> None:
    """Search tables, topics, logs and artifacts for identifiers from the raw zone; exit 1 on any hit."""
    from ingestion.deid.scan import run_scan

    report = run_scan(get_settings(), topics=topics, files=files)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(report.to_json())
    searched = ", ".join(f"{count} {kind}" for kind, count in sorted(report.searched_for.items()))
    typer.echo(f"searched for {searched}")
    if report.hits:
        for hit in report.hits:
            typer.echo(f"FOUND {hit}")
        typer.echo(f"privacy scan failed: {len(report.hits)} hits", err=True)
        raise typer.Exit(code=1)
    typer.echo("privacy scan passed: no identifier from the raw zone found downstream")
