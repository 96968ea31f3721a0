"""The LISTEN connection reaches the configured database, whatever else answers by default."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import pytest
from support import EmbeddedCluster, ServeProcess, execute_sql, serve_env
from tollgate_server.db import listener as listener_module
from tollgate_server.db.listener import Listener
from tollgate_server.db.raw import asyncpg_dsn


async def _connections_to(dsn: str, database: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        return count
    finally:
        await conn.close()


@pytest.mark.e2e
def test_embedded_server_listens_to_itself_not_to_the_default_server(tmp_path: Path) -> None:
    """Another PostgreSQL, with a database called `tollgate`, is what libpq's defaults
    (PGHOST/PGPORT, as the default socket would be) reach; `serve` on the embedded database
    must not open a single connection to it."""
    with EmbeddedCluster(tmp_path / "other") as other:
        asyncio.run(execute_sql(asyncpg_dsn(other.url), "CREATE DATABASE tollgate"))
        env = serve_env(
            TOLLGATE_DATA_DIR=str(tmp_path / "data"),
            PGHOST=other.socket_dir,
            PGUSER="postgres",
            PGDATABASE="tollgate",
        )
        serve = ServeProcess(env)
        with serve:
            strays = asyncio.run(_connections_to(asyncpg_dsn(other.url), "tollgate"))
            assert serve.stop() == 0
        output = serve.output()
    assert strays == 0, "a connection of the server went to the other PostgreSQL"
    assert "LISTEN connection not established" not in output, output


@pytest.mark.anyio
async def test_an_unreachable_database_is_retried_and_logged_with_back_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Checked every 20 ms for 0.6 s: caches are flushed on every check, but connection
    attempts (and their log lines) back off, doubling: a handful, not thirty."""
    monkeypatch.setattr(listener_module, "CHECK_SECONDS", 0.02)
    flushes = 0

    def flushed() -> None:
        nonlocal flushes
        flushes += 1

    listener = Listener("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    listener.subscribe("anything", flushed)
    with caplog.at_level(logging.WARNING, logger="tollgate.listener"):
        await listener.start()
        await asyncio.sleep(0.6)
        await listener.stop()
    attempts = [r for r in caplog.records if "not established" in r.getMessage()]
    assert 2 <= len(attempts) <= 7, [r.getMessage() for r in attempts]
    assert flushes >= 15
