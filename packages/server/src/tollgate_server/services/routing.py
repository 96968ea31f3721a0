"""Routing: which deployment serves a generation, retries before the first token, fallbacks
and cooldowns. One client request makes at most `route_max_attempts` upstream calls, each to
another deployment, and only until something committed the answer (its first delta, or its end).

Deployment health (in-flight calls, recent errors, time to first token, cooldowns, per-minute
counters) lives in memory in each server process: with several workers each one learns an
upstream's failures by itself, and per-minute limits apply per worker.

Choosing: the highest priority first; within a priority, a weighted choice among deployments
that are enabled, not cooling down and under their per-minute limits. A model's deployments are
tried before its fallbacks', in the order the model lists them. When every deployment of the
request is cooling down, the one whose cooldown ends first is tried (a single upstream is never
shut off by its own cooldown).

Cooldowns: `cooldown_after_failures` consecutive failures start one of `cooldown_seconds`,
doubled at each repeat (five minutes at most); when it ends, one request probes the deployment,
and only its success brings the deployment back. An upstream's 401 or 403 disables a stored
deployment (in the database, with the reason) until an admin enables it again.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import statistics
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine
from tollgate_core import (
    ConfigurationError,
    GenerationRequest,
    Provider,
    ProviderConfig,
    StreamEvent,
    UpstreamError,
    UpstreamTimeout,
    UsageReport,
)
from tollgate_core.errors import (
    UpstreamAuthenticationError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)

from tollgate_server.db.listener import Listener
from tollgate_server.logs import install_redaction
from tollgate_server.services.catalogue import CHANNEL, CatalogueModel
from tollgate_server.services.credentials import CredentialBox
from tollgate_server.services.deployments import DISABLE_SQL, DeploymentRow, read_deployments
from tollgate_server.settings import Settings

logger = logging.getLogger("tollgate.routing")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
"""Upstream statuses worth another deployment; never 400, 401, 403, 404 or 422."""
MAX_COOLDOWN_SECONDS = 300.0
RECENT_CALLS = 100


def retryable(exc: UpstreamError) -> bool:
    """Whether a failure before the first token may be retried on another deployment."""
    if exc.upstream_status is None:
        # Below HTTP: a refused or reset connection, or a first token that never came.
        return isinstance(exc, UpstreamUnavailable | UpstreamTimeout)
    return exc.upstream_status in RETRY_STATUSES


@dataclass(eq=False)
class RouteState:
    """One deployment's health in this process."""

    in_flight: int = 0
    failures: int = 0
    """Consecutive failures."""
    cooldowns: int = 0
    """Cooldowns in a row: each doubles the next."""
    cooldown_until: float = 0.0
    probing: bool = False
    """True while the one probe after a cooldown runs: nothing else is sent meanwhile."""
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=RECENT_CALLS))
    ttft_ms: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_CALLS))
    minute: int = -1
    minute_requests: int = 0
    minute_tokens: int = 0

    def cooling(self, now: float) -> bool:
        return self.cooldowns > 0 and (now < self.cooldown_until or self.probing)

    def stats(self, now: float) -> dict[str, Any]:
        return {
            "in_flight": self.in_flight,
            "error_rate": (
                round(self.recent.count(False) / len(self.recent), 4) if self.recent else None
            ),
            "ttft_ms": round(statistics.median(self.ttft_ms)) if self.ttft_ms else None,
            "cooldown_seconds": (
                round(max(0.0, self.cooldown_until - now), 3) if self.cooling(now) else None
            ),
        }


@dataclass(eq=False)
class Route:
    """One deployment ready to call: a provider instance and its serving model."""

    deployment_id: int | None
    """None for the zero-configuration default upstream of a provider (from the environment)."""
    label: str
    model: CatalogueModel
    provider: Provider
    upstream_model: str
    weight: int
    priority: int
    state: RouteState
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    first_token_timeout: float | None = None

    def under_limits(self, minute: int, tokens: int) -> bool:
        state = self.state
        if state.minute != minute:
            return True
        if self.requests_per_minute is not None:
            if state.minute_requests >= self.requests_per_minute:
                return False
        if self.tokens_per_minute is not None:
            if state.minute_tokens + tokens > self.tokens_per_minute:
                return False
        return True

    def count(self, minute: int, tokens: int) -> None:
        state = self.state
        if state.minute != minute:
            state.minute, state.minute_requests, state.minute_tokens = minute, 0, 0
        state.minute_requests += 1
        state.minute_tokens += tokens


@dataclass(slots=True)
class Attempt:
    """One upstream call of a generation, as the admin API shows it."""

    attempt: int
    model_name: str
    deployment_id: int | None
    outcome: str
    """``ok``, ``error``, ``timeout``, or ``failed_mid_stream`` (after it had begun)."""
    error_code: str | None
    upstream_status: int | None
    latency_ms: int


class Router:
    """The deployments of every model, built from the database and the environment, with their
    health in memory. Reloaded on the catalogue's NOTIFY (deployments share its channel)."""

    def __init__(
        self,
        *,
        settings: Settings,
        classes: Mapping[str, type[Provider]],
        defaults: Mapping[str, Provider],
        env: Mapping[str, str],
        http: aiohttp.ClientSession,
        box: CredentialBox,
        engine: AsyncEngine,
        listener: Listener | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._classes = classes
        self._defaults = defaults
        self._env = env
        self._http = http
        self.box = box
        self._engine = engine
        self.rng = rng or random.Random()
        self._by_model: dict[str, list[Route]] = {}
        self._states: dict[int, RouteState] = {}
        self._default_states: dict[str, RouteState] = {}
        self.rows: list[DeploymentRow] = []
        self._rows_routes: dict[str, list[tuple[DeploymentRow, Provider]]] = {}
        self._disabled: set[int] = set()
        """Deployments this process disabled before the database's copy was reloaded."""
        self._announced = 1
        self._loaded_version = 0
        self._loaded = False
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        self.secrets: list[str] = []
        """The decrypted upstream keys, for log redaction."""
        if listener is not None:
            listener.subscribe(CHANNEL, self.invalidate)

    def invalidate(self) -> None:
        self._announced += 1

    @property
    def _stale(self) -> bool:
        return self._loaded_version != self._announced

    async def reload(self, *, strict: bool = False) -> None:
        """Read the deployments. `strict` (at start-up) turns a key that cannot be decrypted
        into a `ConfigurationError`; later, such a deployment is logged and left out."""
        # Taken first: a change announced while this reads is read again by the next request.
        version = self._announced
        async with self._engine.connect() as conn:
            rows = await read_deployments(conn)
        routes: dict[str, list[tuple[DeploymentRow, Provider]]] = {}
        secrets: list[str] = []
        for row in rows:
            try:
                provider = self._build(row)
            except ConfigurationError as exc:
                if strict:
                    raise
                logger.error("deployment %s left out: %s", row.id, exc.message)
                continue
            if provider is None:
                continue
            if provider.config.api_key:
                secrets.append(provider.config.api_key)
            routes.setdefault(row.model, []).append((row, provider))
        # Keys given through the API are redacted from log lines like the environment's.
        install_redaction(secrets)
        self._rows_routes = routes
        self._disabled = {row.id for row in rows if not row.enabled}
        self.rows = rows
        self.secrets = secrets
        self._by_model = {}
        self._loaded_at = time.monotonic()
        self._loaded_version = version
        self._loaded = True

    def _build(self, row: DeploymentRow) -> Provider | None:
        cls = self._classes.get(row.provider)
        if cls is None:
            logger.error("deployment %s names provider %s, not installed", row.id, row.provider)
            return None
        key = None
        if row.api_key_encrypted is not None:
            key = self.box.decrypt(row.api_key_encrypted, deployment_id=row.id)
        base_url = row.base_url
        if base_url is None:
            configs = cls.configs_from_env(self._env)
            if not configs:
                logger.error("deployment %s has no base URL and %s none", row.id, row.provider)
                return None
            base_url = configs[0].base_url
        config = ProviderConfig(name=f"deployment-{row.id}", base_url=base_url, api_key=key)
        return cls(config=config, http=self._http)

    async def fresh(self) -> None:
        """Reload when a change was announced or the copy is a minute old. A reload that fails
        (the database is away) keeps the routes already known and tries again 10 s later."""
        if self._stale or time.monotonic() - self._loaded_at > 60.0:
            async with self._lock:
                if self._stale or time.monotonic() - self._loaded_at > 60.0:
                    try:
                        await self.reload()
                    except Exception as exc:
                        if not self._loaded:
                            raise
                        self._loaded_version = self._announced
                        self._loaded_at = time.monotonic() - 50.0
                        logger.warning("deployments not reloaded (%s); the known ones serve", exc)

    def routes(self, model: CatalogueModel) -> list[Route]:
        """The deployments of `model`: its stored ones, else its provider's default upstream."""
        cached = self._by_model.get(model.name)
        if cached is not None and cached and cached[0].model is model:
            return cached
        built: list[Route] = []
        for row, provider in self._rows_routes.get(model.name, []):
            if not row.enabled or row.id in self._disabled:
                continue
            state = self._states.setdefault(row.id, RouteState())
            built.append(
                Route(
                    deployment_id=row.id,
                    label=f"deployment-{row.id}",
                    model=model,
                    provider=provider,
                    upstream_model=row.upstream_model or model.upstream_model,
                    weight=row.weight,
                    priority=row.priority,
                    state=state,
                    requests_per_minute=row.requests_per_minute,
                    tokens_per_minute=row.tokens_per_minute,
                    first_token_timeout=row.first_token_timeout,
                )
            )
        stored = any(row.model == model.name for row in self.rows)
        default = self._defaults.get(model.provider)
        if not stored and default is not None:
            state = self._default_states.setdefault(model.provider, RouteState())
            built.append(
                Route(
                    deployment_id=None,
                    label=model.provider,
                    model=model,
                    provider=default,
                    upstream_model=model.upstream_model,
                    weight=1,
                    priority=0,
                    state=state,
                )
            )
        self._by_model[model.name] = built
        return built

    def serves(self, model: CatalogueModel) -> bool:
        """Whether some upstream can serve `model`: a deployment, or its provider's default."""
        return bool(self.routes(model))

    def stats(self, deployment_id: int) -> dict[str, Any]:
        state = self._states.get(deployment_id)
        return state.stats(time.monotonic()) if state is not None else {}

    # --- choosing ---------------------------------------------------------------------

    def choose(
        self, groups: Iterable[list[Route]], tried: set[int], *, tokens: int = 0
    ) -> Route | None:
        """The next deployment to call, or None when none is left (see the module's rules)."""
        now = time.monotonic()
        minute = int(time.time() // 60)
        cooling: list[Route] = []
        for routes in groups:
            by_priority: dict[int, list[Route]] = {}
            for route in routes:
                if id(route) in tried:
                    continue
                if route.state.cooling(now):
                    cooling.append(route)
                    continue
                if not route.under_limits(minute, tokens) or route.weight <= 0:
                    continue
                by_priority.setdefault(route.priority, []).append(route)
            for priority in sorted(by_priority, reverse=True):
                route = self._weighted(by_priority[priority])
                self._take(route, now, minute, tokens)
                return route
        if cooling and len(tried) == 0:
            # Everything is cooling down: rather than refuse, try the one back soonest.
            route = min(cooling, key=lambda r: r.state.cooldown_until)
            self._take(route, now, minute, tokens)
            return route
        return None

    def _weighted(self, routes: list[Route]) -> Route:
        if len(routes) == 1:
            return routes[0]
        totals: list[int] = []
        total = 0
        for route in routes:
            total += route.weight
            totals.append(total)
        return routes[bisect.bisect_right(totals, self.rng.randrange(total))]

    @staticmethod
    def _take(route: Route, now: float, minute: int, tokens: int) -> None:
        state = route.state
        if state.cooldowns > 0 and now >= state.cooldown_until:
            state.probing = True  # the one probe: nothing else goes there until it ends
        route.count(minute, tokens)

    # --- what happened ------------------------------------------------------------------

    def succeeded(self, route: Route, ttft_ms: int | None) -> None:
        state = route.state
        state.failures = state.cooldowns = 0
        state.probing = False
        state.recent.append(True)
        if ttft_ms is not None:
            state.ttft_ms.append(ttft_ms)

    def failed(self, route: Route, exc: UpstreamError | None) -> None:
        state = route.state
        state.recent.append(False)
        state.failures += 1
        retry_after = exc.retry_after if isinstance(exc, UpstreamRateLimited) else None
        if state.probing or state.failures >= self.settings.cooldown_after_failures:
            seconds = min(self.settings.cooldown_seconds * 2**state.cooldowns, MAX_COOLDOWN_SECONDS)
            state.cooldowns += 1
            state.failures = 0
            state.cooldown_until = time.monotonic() + max(seconds, retry_after or 0.0)
            logger.warning("%s cooling down for %.1f s", route.label, seconds)
        elif retry_after:
            # The upstream said when to come back: no traffic before then.
            state.cooldowns = max(state.cooldowns, 1)
            state.cooldown_until = max(state.cooldown_until, time.monotonic() + retry_after)
        state.probing = False

    async def disable(self, route: Route, reason: str) -> None:
        """An upstream refused the deployment's key: off until an admin enables it again."""
        if route.deployment_id is None:
            logger.error(
                "the default %s upstream refused its key (%s); set its key in the environment",
                route.label,
                reason,
            )
            return
        logger.error(
            "%s disabled: the upstream refused its key (%s); enable it again once fixed",
            route.label,
            reason,
        )
        self._disabled.add(route.deployment_id)
        self._by_model.clear()
        async with self._engine.begin() as conn:
            await conn.execute(DISABLE_SQL, {"id": route.deployment_id, "reason": reason})


class RoutedCall:
    """One generation's upstream calls: retried on other deployments until one commits.

    `open` returns the serving provider's own event stream once its first delta (or its end)
    came, with the events up to that one in `early`: the gateway reads the rest straight from
    the provider, so routing costs nothing per event.
    """

    def __init__(
        self,
        router: Router,
        groups: list[list[Route]],
        request: GenerationRequest,
        *,
        tokens: int,
    ) -> None:
        self.router = router
        self.groups = groups
        self.request = request
        self.tokens = tokens
        self.served: Route | None = None
        self.last: Route | None = None
        """The deployment called last (the one that failed, when none served)."""
        self.attempts: list[Attempt] = []
        self.early: list[StreamEvent] = []
        """The served stream's events up to its first delta (or its end), already read."""
        self._events: AsyncGenerator[StreamEvent, None] | None = None
        self._failed = False
        self._ttft: int | None = None
        self.direct = False
        """One deployment and nothing to retry on: its stream is handed over unread, and the
        gateway's own first-token limit applies (`first_token_timeout`)."""
        self.first_token_timeout = router.settings.upstream_first_token_timeout
        self._began = 0.0

    async def open(self) -> AsyncGenerator[StreamEvent, None]:
        """Call deployments until one answers; its events after `early`, or the last error."""
        groups = self.groups
        if len(groups) == 1 and len(groups[0]) == 1:
            only = groups[0][0]
            if only.requests_per_minute is None and only.tokens_per_minute is None:
                return self._open_direct(only)
        settings = self.router.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.route_deadline_seconds
        tried: set[int] = set()
        error: UpstreamError | None = None
        for number in range(1, settings.route_max_attempts + 1):
            route = self.router.choose(self.groups, tried, tokens=self.tokens)
            if route is None:
                break
            tried.add(id(route))
            self.last = route
            began = loop.time()
            request = (
                self.request
                if route.upstream_model == self.request.model
                else replace(self.request, model=route.upstream_model)
            )
            events = route.provider.stream(request)
            route.state.in_flight += 1
            try:
                self.early = await self._first(route, events)
            except BaseException as exc:
                route.state.in_flight -= 1
                await events.aclose()
                if not isinstance(exc, UpstreamError):
                    raise  # cancelled (the client left, the generation's own limit): no verdict
                error = exc
                self._record(number, route, exc, began, loop)
                if isinstance(exc, UpstreamAuthenticationError):
                    await self.router.disable(route, exc.code)
                    raise
                if not retryable(exc):
                    raise
                self.router.failed(route, exc)
                pause = self._backoff(number)
                if loop.time() + pause >= deadline:
                    raise
                await asyncio.sleep(pause)
                continue
            self.served, self._events = route, events
            self._ttft = round((loop.time() - began) * 1000)
            self.attempts.append(
                Attempt(number, route.model.name, route.deployment_id, "ok", None, None, self._ttft)
            )
            return events
        if error is None:
            raise UpstreamUnavailable("no deployment of this model is available now")
        raise error

    def _open_direct(self, route: Route) -> AsyncGenerator[StreamEvent, None]:
        # The common case (one upstream per model) pays for no first-token wrapper, no choice
        # and no per-event hop: a single deployment is called even while cooling down.
        self.direct = True
        self.served = self.last = route
        if route.first_token_timeout is not None:
            self.first_token_timeout = route.first_token_timeout
        request = self.request
        if route.upstream_model != request.model:
            request = replace(request, model=route.upstream_model)
        route.state.in_flight += 1
        self._began = time.perf_counter()
        events = self._events = route.provider.stream(request)
        return events

    async def failed(self, exc: UpstreamError, *, started: bool) -> None:
        """The served stream failed: after its first token (`started`: never retried, a token
        may be out), or, on a direct call, before it."""
        route = self.served
        if route is None or self._failed:
            return
        self._failed = True
        if not started and self.direct:
            self.attempts.append(
                Attempt(
                    1,
                    route.model.name,
                    route.deployment_id,
                    "timeout" if isinstance(exc, UpstreamTimeout) else "error",
                    exc.code,
                    exc.upstream_status,
                    round((time.perf_counter() - self._began) * 1000),
                )
            )
            if isinstance(exc, UpstreamAuthenticationError):
                await self.router.disable(route, exc.code)
                return
            if not retryable(exc):
                return  # the request's fault, not the deployment's
        elif self.attempts:
            attempt = self.attempts[-1]
            attempt.outcome = "failed_mid_stream"
            attempt.error_code, attempt.upstream_status = exc.code, exc.upstream_status
        self.router.failed(route, exc)

    async def close(self, first_token_at: float | None = None) -> None:
        """Close the served stream (which closes its connection) and record its health: a
        stream the client left early counts as a success, the upstream was fine.

        `first_token_at` (``time.perf_counter()``) times a direct call's first token."""
        route, events = self.served, self._events
        if route is None or events is None:
            return
        self._events = None
        route.state.in_flight -= 1
        if self.direct:
            ttft = (
                round((first_token_at - self._began) * 1000) if first_token_at is not None else None
            )
            if not self._failed:
                self.attempts.append(
                    Attempt(1, route.model.name, route.deployment_id, "ok", None, None, ttft or 0)
                )
            self._ttft = ttft
        if not self._failed:
            self.router.succeeded(route, self._ttft)
        await events.aclose()

    async def _first(
        self, route: Route, events: AsyncGenerator[StreamEvent, None]
    ) -> list[StreamEvent]:
        """The events up to the first that commits the answer (a delta or the end), under the
        first-token time limit."""
        silence = route.first_token_timeout or self.router.settings.upstream_first_token_timeout
        early: list[StreamEvent] = []
        try:
            async with asyncio.timeout(silence):
                async for event in events:
                    early.append(event)
                    if not isinstance(event, UsageReport):
                        return early
        except TimeoutError:
            raise UpstreamTimeout(f"the upstream sent no first token in {silence:g} s") from None
        raise UpstreamError("the upstream ended the stream without finishing it")

    def _record(
        self,
        number: int,
        route: Route,
        exc: UpstreamError,
        began: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.attempts.append(
            Attempt(
                number,
                route.model.name,
                route.deployment_id,
                "timeout" if isinstance(exc, UpstreamTimeout) else "error",
                exc.code,
                exc.upstream_status,
                round((loop.time() - began) * 1000),
            )
        )

    def _backoff(self, number: int) -> float:
        """Jittered exponential back-off ("full jitter"). A `Retry-After` applies to the
        deployment that sent it (its cooldown), not to the next one."""
        base = self.router.settings.route_backoff_seconds
        return self.router.rng.uniform(0, base * 2 ** (number - 1))
