"""The FastAPI application factory. Nothing runs at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from types import ModuleType
from typing import Any

import aiohttp
from fastapi import FastAPI
from tollgate_core import load_providers

from tollgate_server.api.chat_fast_path import ChatCompletionsFastPath
from tollgate_server.api.errors import install_error_handlers
from tollgate_server.api.openapi import install_docs
from tollgate_server.api.routes import ROUTERS
from tollgate_server.console import install_console
from tollgate_server.db.engine import make_engine, make_sessionmaker
from tollgate_server.db.listener import Listener
from tollgate_server.db.pool_budget import engine_pool_size
from tollgate_server.db.raw import create_hot_pool
from tollgate_server.logs import install_redaction
from tollgate_server.middleware import RequestContextMiddleware
from tollgate_server.observability import get_metrics, parse_metrics_access
from tollgate_server.runtime import Runtime
from tollgate_server.security.tokens import VerifiedAccessTokens
from tollgate_server.services.account_states import AccountStates
from tollgate_server.services.catalogue import Catalogue
from tollgate_server.services.keys import KeyCache
from tollgate_server.services.providers import build_providers
from tollgate_server.settings import Settings, load_settings

logger = logging.getLogger("tollgate")

DESCRIPTION = """
Tollgate puts text models (OpenAI-compatible APIs, Gemini, Anthropic and any plugin) behind one
OpenAI-compatible API, with accounts, roles, an exact credit ledger and streaming.

Amounts of credits are decimal strings with up to six decimal places. Every error is
`{"error": {"code", "message", "request_id"}}`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    plugins: list[ModuleType | object] | None = None,
    connector: aiohttp.BaseConnector | None = None,
    provider_env: Mapping[str, str] | None = None,
) -> FastAPI:
    """Build the app.

    Args:
        settings: defaults to the environment's (`TOLLGATE_*`). Must name a database URL:
            `tollgate serve` starts the embedded database before it builds the app.
        plugins: provider plugins to use instead of the installed entry points (tests).
        connector: the aiohttp connector for upstream traffic (tests and benchmarks).
        provider_env: the environment providers read their upstreams and keys from; defaults
            to the process environment.
    """
    settings = settings or load_settings()
    metrics_access = parse_metrics_access(settings.metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from tollgate_server.observability.lifecycle import start_observability

        env = dict(provider_env) if provider_env is not None else settings.provider_env()
        runtime = await _start_runtime(settings, plugins=plugins, connector=connector, env=env)
        app.state.runtime = runtime
        try:
            stop_observability = await start_observability(runtime, metrics_access)
        except BaseException:
            await _stop_runtime(runtime)
            raise
        try:
            yield
        finally:
            await _stop_runtime(runtime)
            await stop_observability()

    app = FastAPI(
        # No OpenTelemetry middleware: it costs every request, and nothing here consumes it.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        title="Tollgate",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    if metrics_access.on_api_port:
        from tollgate_server.api.routes.metrics import metrics_router

        app.include_router(metrics_router(metrics_access))
    install_docs(app)
    install_console(app)
    # Added first, so it runs inside RequestContextMiddleware (request id, body limit, log).
    app.add_middleware(ChatCompletionsFastPath, state=app.state)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics=get_metrics() if metrics_access.recording else None,
    )
    return app


async def _start_runtime(
    settings: Settings,
    *,
    plugins: list[ModuleType | object] | None,
    connector: aiohttp.BaseConnector | None,
    env: Mapping[str, str],
) -> Runtime:
    if not settings.database_url:
        raise RuntimeError("create_app needs TOLLGATE_DATABASE_URL; `tollgate serve` sets it")
    engine = make_engine(settings.database_url, pool_size=engine_pool_size(settings.db_pool_size))
    try:
        hot_pool = await create_hot_pool(settings.database_url, size=settings.db_pool_size)
    except BaseException:
        await engine.dispose()
        raise
    http = aiohttp.ClientSession(
        connector=connector or aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.upstream_connect_timeout),
        # Upstreams get our request bodies as we built them; no cookies, no redirects.
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
    )
    jwt_secret = settings.resolved_jwt_secret()
    report = load_providers(plugins=plugins)
    providers = build_providers(report, env, http)
    install_redaction(
        [
            jwt_secret,
            settings.admin_password.get_secret_value() if settings.admin_password else None,
            *(provider.config.api_key for provider in providers.values()),
        ]
    )
    listener = Listener(settings.database_url)
    from tollgate_server.services.credentials import CredentialBox
    from tollgate_server.services.routing import Router

    router = Router(
        settings=settings,
        classes=report.providers,
        defaults=providers,
        env=env,
        http=http,
        box=CredentialBox(settings.resolved_secret_key()),
        engine=engine,
        listener=listener,
    )
    runtime = Runtime(
        settings=settings,
        engine=engine,
        hot_pool=hot_pool,
        sessions=make_sessionmaker(engine),
        http=http,
        plugins=report,
        providers=providers,
        jwt_secret=jwt_secret,
        listener=listener,
        catalogue=Catalogue(engine, listener),
        keys=KeyCache(hot_pool, listener),
        access_tokens=VerifiedAccessTokens(settings, jwt_secret),
        accounts=AccountStates(hot_pool, listener),
        router=router,
    )
    from tollgate_server.services.shutdown import install_drain_on_signals
    from tollgate_server.services.startup import on_startup

    try:
        await runtime.listener.start()
        await runtime.catalogue.reload()
        # A stored key that cannot be decrypted (a lost TOLLGATE_SECRET_KEY) stops the start
        # here, with what to do, rather than failing requests later.
        await runtime.router.reload(strict=True)
        await on_startup(runtime)
        install_drain_on_signals(runtime)
    except BaseException:
        await _stop_runtime(runtime)
        raise
    return runtime


async def _stop_runtime(runtime: Runtime) -> None:
    from tollgate_server.services.shutdown import finish_draining
    from tollgate_server.services.sweeper import unregister_instance

    await finish_draining(runtime)
    with contextlib.suppress(Exception):
        await unregister_instance(runtime)
    # Settlements still waiting for the database are in the spool (see below): stop retrying.
    waiting = [*runtime.background, *runtime.pending_settlements]
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    await runtime.listener.stop()
    await runtime.http.close()
    await runtime.engine.dispose()
    try:
        await asyncio.wait_for(runtime.hot_pool.close(), timeout=5)
    except TimeoutError:
        runtime.hot_pool.terminate()
    kept = runtime.spool.close()
    if kept:
        # Written before each answer's last byte; the next start on this data directory
        # settles them before its sweeper runs.
        logger.error(
            "%d settlements could not reach the database; kept in %s for the next start",
            kept,
            runtime.spool.path,
        )


def app_from_env() -> Any:
    """Factory for uvicorn workers: ``tollgate_server.app:app_from_env``."""
    return create_app()
