"""Which schema revision the code needs and the database has, without importing Alembic.

Alembic (with Mako and its script machinery) adds about 13 MB to a process. A serving worker
needs only to compare two revision names, so `tollgate serve` on a database already at head,
and `/readyz`, never load it; `tollgate_server.db.migrate` does when there is work to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from tollgate_server.db.raw import asyncpg_dsn

SCHEMA_HEAD = "0015"
"""The newest migration in `tollgate_server/migrations/versions`. A test compares it with
Alembic's own head, so a new migration that forgets to move it fails the suite."""


@dataclass(frozen=True)
class SchemaState:
    current: str | None
    head: str

    @property
    def at_head(self) -> bool:
        return self.current == self.head


async def schema_state(url: str) -> SchemaState:
    """Which revision the database is at (None when it was never migrated)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        current = None
        if await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
            current = await conn.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await conn.close()
    return SchemaState(current=current, head=SCHEMA_HEAD)
