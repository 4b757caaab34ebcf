"""``healthflow serve`` (run the ScoreAPI) and ``healthflow token create`` (mint a development token)."""

from __future__ import annotations

import os
import sys

import typer

from healthflow.settings import get_settings

SERVICE_TARGET = "serving.service:ScoreService"

token_app = typer.Typer(help="Mint API tokens for development and tests.", no_args_is_help=True)


def serve(
    host: str = typer.Option(None, help="Address to bind (default: HEALTHFLOW_SERVE_HOST)."),
    port: int = typer.Option(None, help="Port to listen on (default: HEALTHFLOW_SERVE_PORT)."),
) -> None:
    """Run the scoring API: `bentoml serve serving.service:ScoreService` with the configured address."""
    settings = get_settings()
    # Fail here, with the setting's name, rather than inside a BentoML worker.
    from serving.auth import AuthConfigError, TokenVerifier

    try:
        TokenVerifier.from_settings(settings)
    except AuthConfigError as error:
        typer.echo(f"cannot start the scoring API: {error}", err=True)
        raise typer.Exit(code=2) from None

    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE_TARGET,
        "--host",
        host or settings.serve_host,
        "--port",
        str(port or settings.serve_port),
    ]
    # BentoML takes over this process instead of running as its child. A parent process would wait beside
    # the server for its whole life and hold about 50 MB.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)  # noqa: S606 - a fixed argument list, no shell


@token_app.command("create")
def create(
    scope: list[str] = typer.Option(  # noqa: B008 - typer declares options as defaults
        ..., "--scope", help="Scope to grant; repeat for several (score:read, model:read, audit:read)."
    ),
    ttl: int = typer.Option(900, "--ttl", help="Lifetime in seconds, at most HEALTHFLOW_JWT_MAX_TTL_SECONDS."),
    subject: str = typer.Option("dev-user", "--subject", help="Token subject (`sub`), logged in audit events."),
    kid: str = typer.Option(None, "--kid", help="Key id header, for a JWKS-verified deployment."),
) -> None:
    """Print a signed token for the configured algorithm and key (HS256 secret or RS256/ES256 private key)."""
    from healthflow.errors import InvalidInputError
    from serving.auth import AuthConfigError
    from serving.tokens import create_token

    scopes = [item for value in scope for item in value.replace(",", " ").split()]
    try:
        token = create_token(get_settings(), subject=subject, scopes=scopes, ttl_seconds=ttl, kid=kid)
    except (InvalidInputError, AuthConfigError) as error:
        typer.echo(f"cannot create a token: {error}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(token)
