"""One LISTEN connection per process, shared by the in-process caches.

A cache subscribes a callback to a channel; the callback runs on every NOTIFY on that channel
and also whenever the connection had to be re-established (notifications may have been missed
while it was down), so a cache is never left believing stale data is fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger("tollgate.listener")

CHECK_SECONDS = 1.0


class Listener:
    def __init__(self, engine: AsyncEngine) -> None:
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._conn: asyncpg.Connection | None = None
        self._watch: asyncio.Task[None] | None = None

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
            conn = await asyncpg.connect(self._dsn)
            for channel, callbacks in self._callbacks.items():
                await conn.add_listener(
                    channel, lambda *_args, _cbs=callbacks: [cb() for cb in _cbs]
                )
            self._conn = conn
        except (OSError, asyncpg.PostgresError) as exc:
            logger.warning("LISTEN connection not established (%s); will retry", exc)
            self._conn = None

    async def _keep_connected(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            if self._conn is None or self._conn.is_closed():
                # Whatever was announced while we were away is lost: treat all as changed.
                self._notify_all()
                await self._connect()
