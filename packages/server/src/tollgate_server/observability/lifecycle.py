"""What observability runs beside the app: traces set up from OTEL_*, the sampler of this
process's gauges, and the metrics' own listener (``TOLLGATE_METRICS=listen:HOST:PORT``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client.multiprocess import mark_process_dead

from tollgate_server.observability import tracing
from tollgate_server.observability.access import MetricsAccess
from tollgate_server.observability.metrics import (
    CONTENT_TYPE,
    MULTIPROC_ENV,
    get_metrics,
    run_sampler,
)
from tollgate_server.runtime import Runtime

logger = logging.getLogger("tollgate.metrics")


async def start_observability(
    runtime: Runtime, access: MetricsAccess
) -> Callable[[], Awaitable[None]]:
    """Start what `access` and the environment ask for; returns the coroutine that stops it."""
    tracing.configure()
    runner: web.AppRunner | None = None
    if access.recording:
        runtime.background.append(asyncio.create_task(run_sampler(runtime), name="metrics"))
    if access.mode == "listen":
        runner = await _serve_metrics(runtime, access)

    async def stop() -> None:
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        tracing.shutdown()
        if access.recording and os.environ.get(MULTIPROC_ENV):
            # This worker's live gauges (pools, settlements waiting) leave the sums with it.
            with contextlib.suppress(Exception):
                mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    return stop


async def _serve_metrics(runtime: Runtime, access: MetricsAccess) -> web.AppRunner:
    """An aiohttp site answering GET /metrics on its own address. Every worker binds it with
    SO_REUSEPORT; whichever answers renders the sum over workers."""
    assert access.host is not None and access.port is not None

    async def metrics(request: web.Request) -> web.Response:
        body = await get_metrics().render(runtime)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, access.host, access.port, reuse_port=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    logger.info("metrics on http://%s:%d/metrics", access.host, access.port)
    return runner
