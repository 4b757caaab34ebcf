"""Start-up shared by every command: settings first (fail fast, naming the variable), then logging."""

from __future__ import annotations

import typer

from healthflow.logs import configure_logging
from healthflow.settings import Settings, SettingsError, get_settings


def bootstrap(*, log_format: str | None = None) -> Settings:
    try:
        settings = get_settings()
    except SettingsError as error:
        typer.echo(f"healthflow: {error}", err=True)
        raise typer.Exit(code=2) from None
    configure_logging(level=settings.log_level, log_format=log_format or settings.log_format)
    return settings
