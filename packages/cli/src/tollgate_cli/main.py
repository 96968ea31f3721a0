"""The `tollgate` command."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from tollgate_core import ConfigurationError, TollgateError

app = typer.Typer(
    name="tollgate",
    help="Tollgate: an LLM gateway with an exact credit ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def fail(message: str) -> None:
    """One line on stderr and exit status 1: never a traceback for a user's mistake."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def load() -> object:
    from tollgate_server.settings import load_settings

    try:
        return load_settings()
    except ConfigurationError as exc:
        fail(exc.message)
        raise  # unreachable


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the API (on an embedded PostgreSQL unless TOLLGATE_DATABASE_URL is set).

    Example: tollgate serve --port 8000
    """
    from tollgate_server.settings import Settings

    from tollgate_cli.serve import run_server

    settings = load()
    assert isinstance(settings, Settings)
    try:
        run_server(settings=settings, host=host, port=port, workers=workers, log_level=log_level)
    except TollgateError as exc:
        fail(exc.message)
    except KeyboardInterrupt:
        pass


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the schema to the newest migration.

    Example: TOLLGATE_DATABASE_URL=postgresql+asyncpg://u@host/db tollgate db upgrade
    """
    from tollgate_server.settings import Settings

    from tollgate_cli.serve import migrate, resolve_database

    settings = load()
    assert isinstance(settings, Settings)
    try:
        url, embedded = resolve_database(settings)
        try:
            migrate(url)
        finally:
            if embedded is not None:
                embedded.cleanup()
    except TollgateError as exc:
        fail(exc.message)
    typer.echo("schema is at the newest migration")


def main() -> None:  # pragma: no cover - console entry for `python -m tollgate_cli`
    sys.exit(app())
