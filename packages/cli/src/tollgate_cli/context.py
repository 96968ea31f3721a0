"""The one way a command reaches the database: the same one `tollgate serve` uses.

`run(operation)` reads the settings, picks the database (``TOLLGATE_DATABASE_URL``, or else the
embedded server in the data directory), brings the schema to the newest migration, opens a small
engine, runs the async `operation` with it, and closes everything again, whatever happens.

Only `tollgate serve` and `tollgate db upgrade` create the embedded database. Any other command
that finds none in the data directory (run as another user, with another HOME or
TOLLGATE_DATA_DIR) refuses in one line, instead of working on a new, empty database that no
server uses; and every command run on the embedded database says, on stderr, which one it is.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tollgate_core import ConfigurationError
from tollgate_server.settings import Settings, load_settings

from tollgate_cli.output import note
from tollgate_cli.serve import migrate, resolve_database

T = TypeVar("T")

POOL_SIZE = 2


@dataclass(frozen=True, slots=True)
class Db:
    """What an operation gets: the settings, the engine, and sessions on it."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    def session(self) -> AsyncSession:
        return self.sessions()


@contextmanager
def database(settings: Settings, *, create: bool = False) -> Iterator[str]:
    """The database URL; the embedded server, when one was started, is stopped afterwards.

    `create`: start a new embedded database when the data directory has none (otherwise that
    is refused).
    """
    if settings.database_url is None:
        from tollgate_server.db.embedded import embedded_exists

        folder = settings.data_dir / "postgres"
        if not create and not embedded_exists(folder):
            raise ConfigurationError(
                f"no database: TOLLGATE_DATABASE_URL is unset and there is no embedded database "
                f"in {settings.data_dir}; set TOLLGATE_DATABASE_URL or TOLLGATE_DATA_DIR to the "
                "server's, or create one with `tollgate db upgrade`"
            )
        note(f"database: the embedded one in {settings.data_dir}")
    with warnings.catch_warnings():
        # The embedded server's lock file falls back to /tmp when XDG_RUNTIME_DIR is unset
        # (root in a container) and says so on stderr: noise to an operator.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        url, embedded = resolve_database(settings)
    try:
        yield url
    finally:
        if embedded is not None:
            embedded.cleanup()


def run(operation: Callable[[Db], Awaitable[T]]) -> T:
    """Run `operation` against the database, with the schema at the newest migration first
    (so a fresh data directory works). Errors propagate; the root command shows them."""
    settings = load_settings()
    with database(settings) as url:
        migrate(url)
        return asyncio.run(_run(url, settings, operation))


async def _run(url: str, settings: Settings, operation: Callable[[Db], Awaitable[T]]) -> T:
    from tollgate_server.db.engine import make_engine, make_sessionmaker

    engine = make_engine(url, pool_size=POOL_SIZE)
    try:
        return await operation(
            Db(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
        )
    finally:
        await engine.dispose()
