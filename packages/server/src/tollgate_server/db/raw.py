"""A pooled asyncpg connection for the hot path's few fixed statements.

The gateway's admission and settlement are single statements; running them on the driver
connection skips SQLAlchemy's per-statement work while still sharing the engine's pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine


@contextlib.asynccontextmanager
async def raw_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """Check a connection out of the engine's pool as a bare asyncpg connection.

    Statements run in autocommit: each is its own transaction, which is what the ledger's
    single-statement admission and settlement are written for.
    """
    async with engine.connect() as conn:
        fairy = await conn.get_raw_connection()
        driver = fairy.driver_connection
        assert driver is not None
        yield driver
