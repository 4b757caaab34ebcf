"""``healthflow ingest``: load FHIR files, pull from a FHIR server, or serve the HTTP endpoint.

Only typer is imported at module level, so ``healthflow --help`` stays fast.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ingestion.fhir.pipeline import IngestSummary

# Exit status when the run finished but rejected some input (it is in the dead letter); 0 means none rejected.
EXIT_REJECTED = 3

# Types pulled by a REST search when --type is not given: what the readmission features and DeID read.
DEFAULT_REST_TYPES = [
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "Procedure",
    "MedicationRequest",
    "Immunization",
    "AllergyIntolerance",
    "CarePlan",
    "DiagnosticReport",
    "Organization",
    "Practitioner",
]


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        since = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time such as 2024-01-31T00:00:00Z") from None
    if since.tzinfo is None:
        raise typer.BadParameter("give a time zone, for example 2024-01-31T00:00:00Z (UTC)")
    return since


def _print_summary(summary: IngestSummary) -> None:
    typer.echo(
        f"accepted {summary.accepted}, unchanged {summary.unchanged}, rejected {summary.rejected} "
        f"in {summary.elapsed_seconds:.1f} s ({summary.resources_per_second:.0f} resources/s)"
    )
    if summary.skipped_entries:
        typer.echo(f"skipped {summary.skipped_entries} Bundle entries without a resource (read or delete requests)")
    for reason, count in summary.rejected_by_reason.most_common():
        typer.echo(f"  rejected {count}: {reason}")
    if summary.rejected:
        typer.echo("rejected input is in raw.rejected and ops.dead_letter, with the full OperationOutcome")


PathsArgument = Annotated[
    list[str] | None, typer.Argument(help="Files, folders or globs (.json, .json.gz, .ndjson, .ndjson.gz).")
]
TypesOption = Annotated[
    list[str] | None, typer.Option("--type", help="With --fhir-server: resource types to pull (repeatable).")
]


def ingest_command(
    paths: PathsArgument = None,
    fhir_server: Annotated[str | None, typer.Option(help="Base URL of a FHIR server to pull from.")] = None,
    bulk: Annotated[bool, typer.Option(help="With --fhir-server: use Bulk Data $export, not REST search.")] = False,
    since: Annotated[
        str | None, typer.Option(help="With --fhir-server: only resources changed after this ISO 8601 time.")
    ] = None,
    resource_types: TypesOption = None,
    host: Annotated[str | None, typer.Option(help="With serve: address to listen on (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="With serve: port to listen on (default from settings).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Ingest FHIR R4: PATH... (files, folders, globs), --fhir-server URL [--bulk] [--since TIME], or serve.

    Exits with 3 when some input was rejected (see raw.rejected and ops.dead_letter), 0 when none was.
    """
    from healthflow.settings import get_settings

    settings = get_settings()
    if paths == ["serve"]:
        from ingestion.fhir.http_app import serve

        serve(settings, host=host or settings.ingest_http_host, port=port or settings.ingest_http_port)
        return
    if bool(paths) == bool(fhir_server):
        raise typer.BadParameter("give either PATH... or --fhir-server URL (or the word serve)")

    sources, source_ref = _make_sources(settings, paths, fhir_server, bulk, _parse_since(since), resource_types)
    summary = _run(settings, sources, source_ref, show_progress=progress)
    _print_summary(summary)
    for source in sources:
        transaction_time = getattr(source, "transaction_time", None)
        if transaction_time:
            typer.echo(f"bulk export transactionTime {transaction_time}: use it as --since for the next load")
    if summary.rejected:
        raise typer.Exit(code=EXIT_REJECTED)


def _make_sources(settings, paths, fhir_server, bulk, since, resource_types):
    from ingestion.fhir.sources import BulkExportSource, RestSearchSource, Source, sources_for_paths

    if paths:
        try:
            return sources_for_paths(paths, max_bytes=settings.ingest_max_input_bytes), " ".join(paths)
        except FileNotFoundError as error:
            raise typer.BadParameter(str(error)) from None
    if not fhir_server.startswith(("http://", "https://")):
        raise typer.BadParameter("--fhir-server must be an http:// or https:// URL")
    source: Source
    if bulk:
        source = BulkExportSource(
            fhir_server,
            resource_types=resource_types or None,
            since=since,
            max_bytes=settings.ingest_max_input_bytes,
            timeout_seconds=settings.ingest_http_timeout_seconds,
            max_poll_seconds=settings.ingest_bulk_max_wait_seconds,
        )
    else:
        source = RestSearchSource(
            fhir_server,
            resource_types=resource_types or DEFAULT_REST_TYPES,
            since=since,
            page_size=settings.ingest_rest_page_size,
            max_bytes=settings.ingest_max_input_bytes,
            timeout_seconds=settings.ingest_http_timeout_seconds,
        )
    return [source], fhir_server


def _run(settings, sources, source_ref, *, show_progress):
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ingestion.fhir.pipeline import ingest_sources

    columns = [
        SpinnerColumn(),
        TextColumn("{task.completed:,.0f} resources"),
        TextColumn("{task.fields[rate]:,.0f} resources/s"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, disable=not show_progress, transient=False) as bar:
        task = bar.add_task("ingest", total=None, rate=0.0)

        def on_progress(done: int) -> None:
            bar.advance(task, done)
            elapsed = bar.tasks[task].elapsed or 0.0
            bar.update(task, rate=bar.tasks[task].completed / elapsed if elapsed else 0.0)

        return ingest_sources(settings, sources, source_ref=source_ref, on_progress=on_progress)
