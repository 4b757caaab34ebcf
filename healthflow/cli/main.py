"""The ``healthflow`` command: one sub-command per stage, each a thin layer over an importable function.

Heavy libraries (pandas, CatBoost, MLflow, Feast) are imported inside the commands, so ``--help`` and the
stack commands start fast.
"""

from __future__ import annotations

import typer

from healthflow.cli.common import bootstrap
from healthflow.cli.stack import app as stack_app

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
