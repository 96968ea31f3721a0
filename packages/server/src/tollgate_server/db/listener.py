"""One LISTEN connection per process, shared by the in-process caches.

A cache subscribes a callback to a channel; the callback runs on every NOTIFY on that channel
and also whenever the connection is down or had to be re-established (notifications may have
been missed meanwhile), so a cache is never left believing stale data is fresh.

The connection is made from the configured URL by `asyncpg_dsn`, as every other connection of
the server is: built any other way, a URL whose server is named in its query (the embedded
database's ``?host=<socket dir>``) lost it, and the listener reached whatever server answered on
the default socket instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import asyncpg

from tollgate_server.db.raw import SERVER_SETTINGS, asyncpg_dsn

logger = logging.getLogger("tollgate.listener")

CHECK_SECONDS = 1.0
"""How often the connection is checked (and, while it is down, the caches are flushed)."""
MAX_RETRY_SECONDS = 60.0
"""Failed connection attempts back off, doubling from CHECK_SECONDS up to this: a database that
stays away costs one log line a minute, not one a second."""


class Listener:
    def __init__(self, url: str) -> None:
        """`url` is the server's database URL (``postgresql+asyncpg://...``), as configured."""
        self._dsn = asyncpg_dsn(url)
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._conn: asyncpg.Connection | None = None
        self._watch: asyncio.Task[None] | None = None
        self._retry_seconds = CHECK_SECONDS
        self._next_attempt = 0.0
        self._failures = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def subscribe(self, channel: str, callback: Callable[[], None]) -> None:
        self._callbacks.setdefault(channel, []).append(callback)

    async def start(self) -> None:
        await self._connect()
        self._watch = asyncio.create_task(self._keep_connected(), name="listener")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)

    def _notify_all(self) -> None:
        for callbacks in self._callbacks.values():
            for callback in callbacks:
                callback()

    async def _connect(self) -> None:
        try:
            conn = await asyncpg.connect(self._dsn, server_settings=SERVER_SETTINGS, timeout=10)
            for channel, callbacks in self._callbacks.items():
                await conn.add_listener(
                    channel, lambda *_args, _cbs=callbacks: [cb() for cb in _cbs]
                )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            self._conn = None
            self._failures += 1
            logger.warning(
                "LISTEN connection not established (%s); attempt %d, next in %.0f s",
                exc,
                self._failures,
                self._retry_seconds,
            )
            self._next_attempt = time.monotonic() + self._retry_seconds
            self._retry_seconds = min(self._retry_seconds * 2, MAX_RETRY_SECONDS)
            return
        if self._failures:
            logger.warning("LISTEN connection re-established after %d attempts", self._failures)
        self._conn = conn
        self._failures = 0
        self._retry_seconds = CHECK_SECONDS

    async def _keep_connected(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            if self._conn is None or self._conn.is_closed():
                # Whatever was announced while we were away is lost: treat all as changed,
                # on every check until the connection is back.
                self._notify_all()
                if time.monotonic() >= self._next_attempt:
                    await self._connect()
