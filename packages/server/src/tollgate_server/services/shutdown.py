"""Graceful shutdown: stop taking generations, let running ones finish, end the rest.

On SIGTERM (or SIGINT) the server starts draining at once: `/readyz` answers 503 and new
generations are refused with 503, while uvicorn stops accepting connections. Running
generations get `shutdown_grace_seconds` to finish; any still running then are ended with a final
SSE error event and charged for what they were sent. Only then are the database pool and the HTTP
client closed, so no settlement is lost on the way out. Settlements waiting for a database that is
away get the grace period too; what is still waiting after it was spooled to disk before its
answer ended, and the next start settles it (`tollgate_server.services.spool`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from types import FrameType
from typing import Any

from tollgate_server.runtime import Runtime

logger = logging.getLogger("tollgate.shutdown")


def install_drain_on_signals(runtime: Runtime) -> None:
    """Chain a drain onto whatever handles SIGTERM/SIGINT (uvicorn's own handler).

    Signal handlers can only be set from the main thread; a server run in a thread (tests)
    drains from its lifespan shutdown instead.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(sig: int, frame: FrameType | None, _previous: Any = previous) -> None:
            loop.call_soon_threadsafe(begin_drain, runtime)
            if callable(_previous):
                _previous(sig, frame)

        signal.signal(signum, handler)


def begin_drain(runtime: Runtime) -> None:
    if runtime.draining:
        return
    runtime.draining = True
    logger.warning("draining: %d generations running", len(runtime.generations))
    runtime.background.append(asyncio.create_task(drain(runtime), name="drain"))


async def drain(runtime: Runtime) -> None:
    """Wait out the grace period, then end what still runs; returns when all have settled."""
    await runtime.generations.drain(runtime.settings.shutdown_grace_seconds)
    if runtime.pending_settlements:
        # Settlements held up by a database outage get the grace period too; any still
        # pending after it are in this process's spool file, settled by the next start.
        await asyncio.wait(
            set(runtime.pending_settlements), timeout=runtime.settings.shutdown_grace_seconds
        )


async def finish_draining(runtime: Runtime) -> None:
    """Called from the lifespan shutdown: make sure every generation has settled."""
    begin_drain(runtime)
    with contextlib.suppress(asyncio.CancelledError):
        await drain(runtime)
