"""``healthflow train`` and ``healthflow promote``: thin commands over training.pipeline and training.promotion."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from healthflow.errors import HealthFlowError
from healthflow.settings import get_settings

logger = logging.getLogger(__name__)


def train_command(
    feature_service: Annotated[
        str, typer.Option("--feature-service", help="Feature service: readmission_uci_v1 or readmission_fhir_v1.")
    ],
    promote_after: Annotated[
        bool, typer.Option("--promote", help="After registering, run the promotion gates on the new version.")
    ] = False,
    uci_zip: Annotated[
        Path | None,
        typer.Option(
            "--uci-zip",
            help="Read readmission_uci_v1 rows straight from this UCI archive instead of Feast (no database needed).",
        ),
    ] = None,
    model_name: Annotated[
        str | None, typer.Option("--model-name", help="Registered model name; default: the feature service's name.")
    ] = None,
    summary_json: Annotated[
        Path | None, typer.Option("--summary-json", help="Also write the run summary to this file.")
    ] = None,
) -> None:
    """Train CatBoost on a point-in-time training set, evaluate, explain, log to MLflow and register."""
    from training.run import run_training

    settings = get_settings()
    try:
        summary = run_training(
            settings,
            feature_service=feature_service,
            uci_zip=uci_zip,
            model_name=model_name,
            promote_after=promote_after,
        )
    except HealthFlowError as error:
        typer.echo(f"healthflow train: {error.message}", err=True)
        raise typer.Exit(code=1) from None
    text = json.dumps(summary, indent=2, default=str)
    if summary_json is not None:
        summary_json.write_text(text, encoding="utf-8")
    typer.echo(text)
    if promote_after and not summary["promotion"]["promoted"]:
        raise typer.Exit(code=3)


def promote_command(
    feature_service: Annotated[
        str, typer.Option("--feature-service", help="Feature service whose registered model contains the version.")
    ],
    version: Annotated[str, typer.Option("--version", help="Registered model version to promote.")],
    model_name: Annotated[
        str | None, typer.Option("--model-name", help="Registered model name; default: the feature service's name.")
    ] = None,
) -> None:
    """Give a version the challenger alias; move champion to it only if it passes the gates (exit 3 if not)."""
    from training.promotion import promote

    settings = get_settings()
    try:
        decision = promote(settings, name=model_name or feature_service, version=version)
    except HealthFlowError as error:
        typer.echo(f"healthflow promote: {error.message}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(decision.summary())
    if not decision.promoted:
        raise typer.Exit(code=3)
