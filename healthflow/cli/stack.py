"""``healthflow stack``: run the local PostgreSQL, Kafka and MLflow services as processes."""

from __future__ import annotations

import typer

from healthflow.settings import get_settings

app = typer.Typer(
    help="Start, stop and inspect the local stack (PostgreSQL, Kafka, MLflow) on 127.0.0.1.", no_args_is_help=True
)


@app.command("up")
def up() -> None:
    """Start every managed service and wait until all are healthy; safe to run again."""
    from healthflow.stack import control

    settings = get_settings()
    try:
        control.up(settings)
    except (OSError, TimeoutError) as error:
        typer.echo(f"stack up failed: {error}", err=True)
        raise typer.Exit(code=1) from None
    _print_status(settings)


@app.command("down")
def down() -> None:
    """Stop the managed services; their data stays under the state folder."""
    from healthflow.stack import control

    stopped = control.down(get_settings())
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command("status")
def status() -> None:
    """Print what runs, where, and where its log is; exit 1 when a service is not healthy."""
    settings = get_settings()
    if not _print_status(settings):
        raise typer.Exit(code=1)


@app.command("env")
def env() -> None:
    """Print export lines for the stack's addresses: eval "$(healthflow stack env)"."""
    from healthflow.stack import control

    for line in control.env_lines(get_settings()):
        typer.echo(line)


def _print_status(settings) -> bool:
    from healthflow.stack import control

    rows = control.status(settings)
    typer.echo(f"{'service':<10} {'state':<10} {'address':<22} {'pid':<8} log")
    for row in rows:
        state = "healthy" if row.healthy else "down"
        origin = "" if row.managed else " (external)"
        pid = str(row.pid) if row.pid else "-"
        typer.echo(f"{row.name:<10} {state:<10} {row.address:<22} {pid:<8} {row.log or '-'}{origin}")
    return all(row.healthy for row in rows)
