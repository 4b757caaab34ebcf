"""``healthflow features``: the Featurizer worker, rebuilds, statistics, Feast apply/materialize, UCI import.

pandas and Feast are imported inside the commands, so ``healthflow --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from healthflow.settings import get_settings

logger = logging.getLogger(__name__)

features_app = typer.Typer(
    help="Build index-stay features and labels, and manage the Feast feature store.", no_args_is_help=True
)

DEFAULT_UCI_ZIP = Path("../shared/data/uci-diabetes-130/dataset_diabetes.zip")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"healthflow features: {message}", err=True)
    return typer.Exit(code=1)


@features_app.command("run")
def run(
    idle_exit: int = typer.Option(None, help="Stop after this many empty polls in a row (default: run until stopped)."),
) -> None:
    """Run the Featurizer: consume fhir.deid and recompute the touched patients' stays; stop with Ctrl-C."""
    from healthflow.db import apply_migrations
    from ingestion.featurizer.worker import run_worker

    settings = get_settings()
    apply_migrations(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        counts = run_worker(settings, max_idle_polls=idle_exit, should_stop=stop.is_set)
    except KeyboardInterrupt:
        return
    typer.echo(f"events: {counts.events}; patients recomputed: {counts.patients}; rows inserted: {counts.inserted}")


@features_app.command("rebuild")
def rebuild() -> None:
    """Recompute the stays of every patient in the deid zone (no Kafka); unchanged stays are kept."""
    from healthflow.db import apply_migrations
    from ingestion.featurizer.worker import rebuild_all

    settings = get_settings()
    apply_migrations(settings)
    counts = rebuild_all(settings)
    typer.echo(
        f"patients: {counts.patients}; stays: {counts.stays}; inserted: {counts.inserted}; "
        f"unchanged: {counts.unchanged}; retired: {counts.retired}; seconds: {counts.durations['rebuild_seconds']:.1f}"
    )


@features_app.command("stats")
def stats() -> None:
    """Print, as JSON, the number of index stays, the readmission rate and each feature's completeness."""
    from ingestion.featurizer.statistics import stay_statistics

    typer.echo(json.dumps(stay_statistics(get_settings()), indent=2))


@features_app.command("apply")
def apply() -> None:
    """Run `feast apply` in the feature repository with the connection details of the settings."""
    from healthflow.errors import ServiceUnavailableError
    from ingestion.featurizer import feast_repo

    try:
        feast_repo.apply(get_settings())
    except ServiceUnavailableError as error:
        raise _fail(error.message) from None


@features_app.command("materialize")
def materialize(
    incremental: Annotated[
        bool,
        typer.Option(
            "--incremental",
            help="Only rows whose event time is after the previous run (feast materialize-incremental). Faster, "
            "but misses rows that arrive late in event time.",
        ),
    ] = False,
) -> None:
    """Load the latest offline row of every patient and stay into the online store (`feast materialize`)."""
    from healthflow.errors import ServiceUnavailableError
    from ingestion.featurizer import feast_repo

    try:
        if incremental:
            feast_repo.materialize_incremental(get_settings())
        else:
            feast_repo.materialize_all(get_settings())
    except ServiceUnavailableError as error:
        raise _fail(error.message) from None


@features_app.command("import-uci")
def import_uci(
    zip_path: Annotated[
        Path, typer.Argument(help="Path of dataset_diabetes.zip (UCI data set 296).")
    ] = DEFAULT_UCI_ZIP,
) -> None:
    """Load the UCI Diabetes 130-US archive into features.uci_encounters (replacing a previous import)."""
    from healthflow.db import apply_migrations
    from healthflow.errors import InvalidInputError
    from ingestion.uci.importer import import_uci as run_import

    settings = get_settings()
    apply_migrations(settings)
    try:
        result = run_import(settings, zip_path)
    except InvalidInputError as error:
        raise _fail(error.message) from None
    typer.echo(json.dumps(result, indent=2))
