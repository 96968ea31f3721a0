"""The `tollgate` command: `serve`, and admin commands by noun.

Each noun lives in its own module and calls the same `tollgate_server.services` as the API. The
modules import the server lazily, inside the commands, so `--help` and shell completion stay
fast. Failures become one line on stderr (see `tollgate_cli.errors.CliGroup`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tollgate_cli import credits, db, deployments, keys, models, providers, users
from tollgate_cli.errors import CliGroup

app = typer.Typer(
    name="tollgate",
    cls=CliGroup,
    help="Tollgate: an LLM gateway with an exact credit ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(users.app, name="users")
app.add_typer(credits.app, name="credits")
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
app.add_typer(providers.app, name="providers")
app.add_typer(deployments.app, name="deployments")


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
    from tollgate_server.settings import load_settings

    from tollgate_cli.serve import run_server

    settings = load_settings()
    try:
        run_server(settings=settings, host=host, port=port, workers=workers, log_level=log_level)
    except KeyboardInterrupt:
        pass


def main() -> None:  # pragma: no cover - console entry for `python -m tollgate_cli`
    sys.exit(app())
