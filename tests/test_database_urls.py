"""Every way of writing the database URL that the settings accept reaches the database the same
way on every path: the SQLAlchemy engine (sessions, migrations), the hot asyncpg pool and the
schema check, the LISTEN connection and the connection budget all read it through
`tollgate_server.db.raw.asyncpg_dsn`."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from tollgate_server.db.engine import make_engine
from tollgate_server.db.listener import Listener
from tollgate_server.db.pool_budget import read_budget
from tollgate_server.db.raw import create_hot_pool
from tollgate_server.db.revision import SCHEMA_HEAD, schema_state
from tollgate_server.settings import Settings

pytestmark = pytest.mark.postgres


def _variant(database_url: str, scheme: str, **query: str) -> str:
    url = make_url(database_url)
    rendered = url.update_query_dict(query).render_as_string(hide_password=False)
    return f"{scheme}://{rendered.partition('://')[2]}"


@pytest.mark.parametrize(
    ("scheme", "query"),
    [
        ("postgresql+asyncpg", {}),
        ("postgresql", {}),
        ("postgres", {}),
        ("POSTGRESQL", {}),
        ("postgresql", {"sslmode": "disable"}),
        ("postgresql+asyncpg", {"ssl": "disable"}),
        ("postgresql", {"application_name": "ops-dashboard"}),
    ],
)
def test_each_accepted_url_form_works_on_every_path(
    database_url: str, server: object, scheme: str, query: dict[str, str]
) -> None:
    """`server` has migrated the database."""
    url = Settings(database_url=_variant(database_url, scheme, **query)).database_url
    assert url is not None

    async def check() -> None:
        engine = make_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        finally:
            await engine.dispose()
        pool = await create_hot_pool(url, size=1)
        try:
            assert await pool.fetchval("SELECT 1") == 1
        finally:
            await pool.close()
        assert (await schema_state(url)).current == SCHEMA_HEAD
        listener = Listener(url)
        try:
            await listener.start()
            assert listener.connected
        finally:
            await listener.stop()
        assert (await read_budget(url)).max_connections > 0

    asyncio.run(check())
