"""Alembic, driven from code so `tollgate db upgrade` works from an installed package.

Imported only when there is a migration to run or list: see `tollgate_server.db.revision`.
"""

from __future__ import annotations

import asyncio
import functools

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from tollgate_core import ConfigurationError

from tollgate_server.db.revision import schema_state


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "tollgate_server:migrations")
    # Percent signs in a URL (escaped passwords) must survive configparser interpolation.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@functools.cache
def head_revision() -> str:
    """The newest migration this code ships, as Alembic reads it from the package."""
    script = ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://unused/"))
    head = script.get_current_head()
    assert head is not None
    return head


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:  # alembic raises rather than answer None for a revision it lacks
        return False


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`. Refuses a database newer than this code."""
    state = asyncio.run(schema_state(url))
    script = ScriptDirectory.from_config(alembic_config(url))
    if state.current is not None and not _known(script, state.current):
        raise ConfigurationError(
            f"the database schema ({state.current}) is newer than this Tollgate "
            f"(head {state.head}): upgrade Tollgate"
        )
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str) -> None:
    """`upgrade` from inside a running event loop (Alembic's env.py runs its own loop)."""
    await asyncio.to_thread(upgrade, url)
