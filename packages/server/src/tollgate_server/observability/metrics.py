"""Prometheus metrics: defined once per process, recorded from the request-context
middleware's per-request log dict, rendered for `GET /metrics`.

Labels are of bounded cardinality: route templates (never paths), model names from the
catalogue, providers, statuses and error codes; never an account, a key or a generation.

With ``PROMETHEUS_MULTIPROC_DIR`` set (`tollgate serve --workers N` sets it), prometheus-client
keeps each worker's values in memory-mapped files in that folder and a scrape of any worker adds
them up. What the database knows for every worker at once (credits held, generations in flight)
is read at scrape time by one statement, never kept per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator, MutableMapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from tollgate_server.db.raw import raw_connection
from tollgate_server.runtime import Runtime
from tollgate_server.services.spool import count_spooled

logger = logging.getLogger("tollgate.metrics")

Scope = MutableMapping[str, Any]
"""An ASGI scope, without importing a framework: the sweeper (a service) imports this module."""

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which `generate_latest` writes and every Prometheus reads."""
CHAT_ROUTE = "/v1/chat/completions"
"""Served by the fast path, which never passes through the router that names routes."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_GENERATION_STATUSES = frozenset(
    {
        "completed",
        "client_disconnected",
        "upstream_error",
        "upstream_timeout",
        "generation_timeout",
        "error",
        "shutdown",
    }
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Any other method (a client may send anything) is counted as ``other``: bounded labels."""
HELD_SQL = "SELECT coalesce(sum(held), 0)::bigint, coalesce(sum(running), 0)::bigint FROM accounts"
SAMPLE_SECONDS = 5.0


class Metrics:
    """Every metric family of the process. Built once (`get_metrics`): prometheus-client keeps
    one value per family and label set, and in multiprocess mode one file per process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "tollgate_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "tollgate_http_request_duration_seconds",
            "Time from the request's arrival to its last byte, by route, method and status",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.generations = Counter(
            "tollgate_generations",
            "Generations settled, by model, provider, endpoint and final status",
            ["model", "provider", "endpoint", "status"],
            registry=r,
        )
        self.refusals = Counter(
            "tollgate_admission_refusals",
            "Generations refused at admission (balance, concurrency, rate), by reason",
            ["reason"],
            registry=r,
        )
        self.input_tokens = Counter(
            "tollgate_input_tokens", "Input tokens charged (cached included)", ["model"], registry=r
        )
        self.cached_input_tokens = Counter(
            "tollgate_cached_input_tokens", "Input tokens read from a cache", ["model"], registry=r
        )
        self.output_tokens = Counter(
            "tollgate_output_tokens",
            "Output tokens charged (reasoning included)",
            ["model"],
            registry=r,
        )
        self.reasoning_tokens = Counter(
            "tollgate_reasoning_tokens", "Output tokens spent reasoning", ["model"], registry=r
        )
        self.credits_charged = Counter(
            "tollgate_credits_charged_microcredits",
            "Credits charged at settlement, in micro-credits (an integer count: exact up to 2^53)",
            ["model"],
            registry=r,
        )
        self.first_token = Histogram(
            "tollgate_upstream_first_token_seconds",
            "Time from admission to the upstream's first token",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "tollgate_upstream_duration_seconds",
            "Time from admission to the end of the upstream's answer (or its failure)",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "tollgate_upstream_errors",
            "Generations ended by the upstream, by provider, kind (an error code) and the "
            "deployment that failed last (its id, or the provider's name for its default)",
            ["provider", "kind", "deployment"],
            registry=r,
        )
        self.pool_in_use = Gauge(
            "tollgate_db_pool_connections_in_use",
            "Database connections checked out, by pool (hot: the generation path)",
            ["pool"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.pool_waiting = Gauge(
            "tollgate_db_pool_waiting",
            "Tasks waiting for a connection of the pool",
            ["pool"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.settlements_waiting = Gauge(
            "tollgate_settlements_waiting",
            "Settlements waiting for the database to come back",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.settlements_spooled = Gauge(
            "tollgate_settlements_spooled",
            "Settlements written to disk in this data directory and not yet in the database",
            # Every worker of a data directory reads the same files: the largest, not the sum.
            multiprocess_mode="max",
            registry=r,
        )
        self.sweeper_released = Counter(
            "tollgate_sweeper_released_holds",
            "Holds of generations that never ended, released by the sweeper",
            registry=r,
        )
        # The labelled children of each label set, looked up once: `labels()` validates and
        # locks on every call, several times the cost of the increment itself.
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._generation: dict[tuple[str, str, str, str], _GenerationChildren] = {}

    # --- recording ------------------------------------------------------------------------

    def record_request(
        self, scope: Scope, state: dict[str, Any], status: int, seconds: float
    ) -> None:
        """Count one answered request and, from the gateway's log dict, its generation."""
        route = route_template(scope)
        method = scope.get("method", "")
        key = (route, method if method in _METHODS else "other", status)
        children = self._http.get(key)
        if children is None:
            labels = (key[0], key[1], str(status))
            children = self._http[key] = (
                self.http_requests.labels(*labels),
                self.http_duration.labels(*labels),
            )
        children[0].inc()
        children[1].observe(seconds)
        log = state.get("log")
        if log:
            self.record_generation(log, endpoint=route)

    def record_generation(self, log: dict[str, Any], *, endpoint: str) -> None:
        refused = log.get("refused")
        if refused is not None:
            self.refusals.labels(str(refused)).inc()
            return
        status = log.get("status")
        if status not in _GENERATION_STATUSES:
            return  # refused before admission (or never started): the HTTP counters tell
        model = str(log.get("model", ""))
        provider = str(log.get("provider", ""))
        key = (model, provider, endpoint, status)
        c = self._generation.get(key)
        if c is None:
            c = self._generation[key] = _GenerationChildren(self, key)
        c.generations.inc()
        c.input_tokens.inc(log.get("input_tokens") or 0)
        if cached := log.get("cached_input_tokens"):
            c.cached_input_tokens.inc(cached)
        c.output_tokens.inc(log.get("output_tokens") or 0)
        if reasoning := log.get("reasoning_tokens"):
            c.reasoning_tokens.inc(reasoning)
        c.credits_charged.inc(log.get("cost") or 0)
        ttft_ms = log.get("ttft_ms")
        if ttft_ms is not None:
            c.first_token.observe(ttft_ms / 1000)
        duration_ms = log.get("duration_ms")
        if duration_ms is not None:
            c.upstream_duration.observe(duration_ms / 1000)
        if status in ("upstream_error", "upstream_timeout"):
            self.upstream_errors.labels(
                provider, str(log.get("error_code") or status), str(log.get("deployment", ""))
            ).inc()

    def sample(self, runtime: Runtime) -> None:
        """This process's pools and waiting settlements (added up over workers on a scrape)."""
        pool = runtime.hot_pool
        self.pool_in_use.labels("hot").set(pool.get_size() - pool.get_idle_size())
        self.pool_waiting.labels("hot").set(_waiters(pool))
        engine_pool: Any = runtime.engine.pool
        with contextlib.suppress(AttributeError):
            self.pool_in_use.labels("sessions").set(engine_pool.checkedout())
        self.settlements_waiting.set(len(runtime.pending_settlements))

    # --- rendering ------------------------------------------------------------------------

    async def render(self, runtime: Runtime) -> bytes:
        """The text exposition: every worker's counts, and the database's gauges of now."""
        self.sample(runtime)
        self.settlements_spooled.set(await count_spooled(runtime.spool.directory))
        held, running = await _held_and_running(runtime)
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(_DatabaseGauges(held, running))
        if os.environ.get(MULTIPROC_ENV):
            MultiProcessCollector(scrape)  # type: ignore[no-untyped-call]
            return generate_latest(scrape)
        return generate_latest(self.registry) + generate_latest(scrape)


class _GenerationChildren:
    """Every child a settled generation of one (model, provider, endpoint, status) moves."""

    __slots__ = (
        "cached_input_tokens",
        "credits_charged",
        "first_token",
        "generations",
        "input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "upstream_duration",
    )

    def __init__(self, metrics: Metrics, key: tuple[str, str, str, str]) -> None:
        model, provider, _, _ = key
        self.generations = metrics.generations.labels(*key)
        self.input_tokens = metrics.input_tokens.labels(model)
        self.cached_input_tokens = metrics.cached_input_tokens.labels(model)
        self.output_tokens = metrics.output_tokens.labels(model)
        self.reasoning_tokens = metrics.reasoning_tokens.labels(model)
        self.credits_charged = metrics.credits_charged.labels(model)
        self.first_token = metrics.first_token.labels(provider, model)
        self.upstream_duration = metrics.upstream_duration.labels(provider, model)


def route_template(scope: Scope) -> str:
    """The matched route's template (``/v1/keys/{key_id}``), never the path itself."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    root = scope.get("root_path", "")
    raw = str(scope.get("path", ""))
    if (raw[len(root) :] if root and raw.startswith(root) else raw) == CHAT_ROUTE:
        return CHAT_ROUTE
    return "unmatched"


def _waiters(pool: Any) -> int:
    # asyncpg exposes no count of waiters; its queue's getters are them. Zero when that changes.
    queue = getattr(pool, "_queue", None)
    getters = getattr(queue, "_getters", None)
    return len(getters) if getters is not None else 0


async def _held_and_running(runtime: Runtime) -> tuple[int | None, int | None]:
    try:
        async with raw_connection(runtime.hot_pool) as conn:
            row = await conn.fetchrow(HELD_SQL)
    except Exception as exc:  # a scrape during an outage still shows the process's counts
        logger.warning("metrics: the database gauges are unavailable (%s)", type(exc).__name__)
        return None, None
    assert row is not None
    return int(row[0]), int(row[1])


class _DatabaseGauges(Collector):
    def __init__(self, held: int | None, running: int | None) -> None:
        self.held, self.running = held, running

    def collect(self) -> Iterator[Metric]:
        if self.held is not None:
            yield GaugeMetricFamily(
                "tollgate_credits_held_microcredits",
                "Credits held by generations still running, in micro-credits (all workers)",
                value=self.held,
            )
        if self.running is not None:
            yield GaugeMetricFamily(
                "tollgate_generations_in_flight",
                "Generations admitted and not yet settled (all workers)",
                value=self.running,
            )


_metrics: Metrics | None = None


def get_metrics() -> Metrics:
    """The process's metric families, built on first use (nothing at import time)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


async def run_sampler(runtime: Runtime) -> None:
    """Keep this process's pool and settlement gauges fresh between scrapes, so that a scrape
    answered by another worker sees them too."""
    metrics = get_metrics()
    while True:
        with contextlib.suppress(Exception):
            metrics.sample(runtime)
        await asyncio.sleep(SAMPLE_SECONDS)
