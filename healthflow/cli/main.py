"""The ``healthflow`` command: one sub-command per stage, each a thin layer over an importable function.

Heavy libraries (pandas, CatBoost, MLflow, Feast) are imported inside the commands, so ``--help`` and the
stack commands start fast.
"""

from __future__ import annotations

import typer

from healthflow.cli.common import bootstrap
from healthflow.cli.stack import app as stack_app
from ingestion.deid import cli as deid_cli
from ingestion.featurizer.cli import features_app
from ingestion.fhir.cli import ingest_command
from monitoring import cli as monitoring_cli
from serving import cli as serving_cli
from training import cli as training_cli

app = typer.Typer(
    name="healthflow",
    help="HealthFlow: FHIR R4 to 30-day readmission risk, with de-identification, MLflow, BentoML and audits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    log_format: str = typer.Option(None, help="Log format: json or text (default: HEALTHFLOW_LOG_FORMAT)."),
) -> None:
    """Load and validate settings, then configure logging once for the command."""
    bootstrap(log_format=log_format)


@app.command("settings")
def show_settings(
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table, as in the README."),
) -> None:
    """Print every HEALTHFLOW_* setting with its type, default and meaning."""
    from healthflow.settings import settings_table
    from healthflow.settings_doc import markdown_table

    if markdown:
        typer.echo(markdown_table())
        return
    for variable, annotation, default, meaning in settings_table():
        typer.echo(f"{variable}\n    type: {annotation}; default: {default or '(none)'}\n    {meaning}")


app.add_typer(stack_app, name="stack")
app.command("ingest")(ingest_command)
app.command("serve")(serving_cli.serve)
app.add_typer(serving_cli.token_app, name="token")
app.add_typer(deid_cli.deid_app, name="deid")
app.add_typer(deid_cli.privacy_app, name="privacy")
app.add_typer(features_app, name="features")
app.add_typer(monitoring_cli.monitor_app, name="monitor")
app.command("dashboard")(monitoring_cli.dashboard)
app.command("train")(training_cli.train_command)
app.command("promote")(training_cli.promote_command)
