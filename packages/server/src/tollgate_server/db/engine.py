"""The async engine. One per process, owned by the app's lifespan or the CLI command."""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from tollgate_server.db.raw import SERVER_SETTINGS, asyncpg_dsn


def engine_for(url: str, **options: Any) -> AsyncEngine:
    """An engine whose connections asyncpg makes from `url`, read by `asyncpg_dsn` exactly as
    the hot pool and the schema check read it.

    SQLAlchemy's own asyncpg dialect would pass every query option of the URL to
    `asyncpg.connect` as a keyword, so a libpq-style ``?sslmode=require`` (or
    ``?application_name=``) would pass the start-up check and then fail on the first session.
    """
    return create_async_engine(
        make_url(url).set(query={}),  # the options are asyncpg's to read, below
        async_creator=lambda: asyncpg.connect(asyncpg_dsn(url), server_settings=SERVER_SETTINGS),
        **options,
    )


def make_engine(url: str, *, pool_size: int = 20) -> AsyncEngine:
    """An asyncpg engine whose pool survives a PostgreSQL restart (pre-ping on checkout).

    The generation path does not use it: it has a bare asyncpg pool (`tollgate_server.db.raw`).
    """
    return engine_for(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=3600,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
