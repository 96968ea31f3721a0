"""Embeddings: plan, admit, one upstream call, settle exactly once: the chat engine's money.

An embedding is one upstream call that answers all at once, so it runs on the generation
engine (`services.gateway.Generation`) with one step replaced: `EmbeddingGeneration` makes the
upstream call (routed across deployments and fallbacks like chat's, `RoutedEmbedding`) where a
chat generation streams. Admission, the settlement (shielded, exactly once, spooled when the
database is away), the access log and the client-hang-up policy are the engine's own:

=========================================  ==========================  =======================
How it ends                                 Status                      Charged
=========================================  ==========================  =======================
Answered                                    completed                   upstream's usage
Client hung up before the answer            client_disconnected         nothing
Upstream failed or timed out                upstream_error / _timeout   nothing
=========================================  ==========================  =======================

As for a non-streaming chat request, a client that received no vectors pays nothing; what
the upstream may bill the operator for is recorded as unbilled input tokens. The charge is the
upstream's input count at the model's input price; a vendor that counts nothing (Gemini) is
charged the gateway's calibrated estimate, marked ``estimated``. Every count is checked
against what the inputs could have produced (`tollgate_core.embedding_bounds`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, replace

from tollgate_core import (
    EmbeddingRequest,
    EmbeddingResult,
    GenerationRequest,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    Usage,
    embedding_bounds,
    estimate_embedding_tokens,
    hold_amount,
    input_tokens_upper_bound,
)
from tollgate_core.errors import UpstreamAuthenticationError

from tollgate_server.db.ids import time_ordered_uuid
from tollgate_server.embedding_format import EmbeddingCreate
from tollgate_server.errors import (
    InvalidParameters,
    InvalidRequest,
)
from tollgate_server.observability import tracing
from tollgate_server.runtime import Runtime
from tollgate_server.services.answers import AnswerChoice
from tollgate_server.services.gateway import Generation, GenerationSink, Plan, served_model
from tollgate_server.services.routing import Attempt, Route, Router, retryable

logger = logging.getLogger("tollgate.embeddings")

ENDPOINT = "embeddings"
"""The `generations.endpoint` of every embedding."""


@dataclass(frozen=True, slots=True)
class EmbeddingPlan(Plan):
    """A validated embedding request, ready for admission.

    `request` is an empty chat request that carries only the upstream model and
    ``max_tokens = 0`` (what admission records): the inputs are in `embedding`.
    """

    embedding: EmbeddingRequest | None = None
    encoding_format: str = "float"


async def plan_embedding(
    runtime: Runtime,
    *,
    account_id: uuid.UUID,
    api_key_id: uuid.UUID | None,
    allowed_models: tuple[str, ...] | None,
    body: EmbeddingCreate,
) -> EmbeddingPlan:
    """Check everything that needs no database, in the order a client can fix it."""
    model, routes = await served_model(runtime, body.model, allowed_models, kind="embedding")
    assert model.price is not None  # served_model refuses a model without a price
    inputs = body.inputs()
    if not inputs or any(len(item) == 0 for item in inputs):
        raise InvalidRequest("empty_input", "input: give at least one input, none of them empty")
    settings = runtime.settings
    if len(inputs) > settings.embedding_max_inputs:
        raise InvalidRequest(
            "too_many_inputs",
            f"input: {len(inputs)} inputs; at most {settings.embedding_max_inputs} a request",
        )
    counts = [input_tokens_upper_bound(item) for item in inputs]
    longest = max(counts)
    if longest > model.context_window:
        raise InvalidRequest(
            "context_length_exceeded",
            f"input {counts.index(longest)} is about {longest} tokens; {model.name} takes "
            f"{model.context_window}",
        )
    total = sum(counts)
    if total > settings.embedding_max_tokens:
        raise InvalidRequest(
            "too_many_tokens",
            f"input: about {total} tokens; at most {settings.embedding_max_tokens} a request",
        )
    provider = routes[0].provider
    if not provider.supports_embeddings:
        raise InvalidRequest(
            "embeddings_not_supported",
            f"the {model.provider} provider of {model.name} serves no embeddings",
        )
    request = EmbeddingRequest(
        model=model.upstream_model, inputs=inputs, dimensions=body.dimensions, user=body.user
    )
    try:
        provider.check_embedding(request)
    except UpstreamBadRequest as exc:
        raise InvalidParameters("unsupported_parameter", f"{model.name}: {exc.message}") from None
    groups = [routes]
    hold = hold_amount(prompt_tokens=total, max_tokens=0, price=model.price)
    for name in model.fallbacks:
        fallback = await runtime.catalogue.get(name)
        if (
            fallback is None
            or fallback.price is None
            or not fallback.enabled
            or fallback.kind != "embedding"
            or fallback.context_window < longest
        ):
            continue  # it could not take this request: not a route, not in the hold
        fallback_routes = runtime.router.routes(fallback)
        if not fallback_routes or not fallback_routes[0].provider.supports_embeddings:
            continue
        try:
            fallback_routes[0].provider.check_embedding(request)
        except UpstreamBadRequest:
            continue
        groups.append(fallback_routes)
        # The hold covers the dearest model that may serve: the admission bound holds.
        hold = max(hold, hold_amount(prompt_tokens=total, max_tokens=0, price=fallback.price))
    return EmbeddingPlan(
        generation_id=time_ordered_uuid(),
        account_id=account_id,
        api_key_id=api_key_id,
        model=model,
        provider=provider,
        routes=groups,
        request=GenerationRequest(model=model.upstream_model, messages=(), max_tokens=0),
        prompt_tokens=total,
        hold=hold,
        stream=False,
        endpoint=ENDPOINT,
        embedding=request,
        encoding_format=body.encoding_format,
    )


class EmbeddingGeneration(Generation):
    """The generation engine with one upstream call in place of a stream (see the module)."""

    def __init__(self, runtime: Runtime, plan: EmbeddingPlan) -> None:
        super().__init__(runtime, plan)
        assert plan.embedding is not None
        self.embedding = plan.embedding
        self.result: EmbeddingResult | None = None
        """The upstream's answer, once it came: the sink writes its vectors."""

    async def _generate(self, sink: GenerationSink) -> None:
        settings = self.settings
        call = RoutedEmbedding(
            self.runtime.router,
            self.plan.routes,
            self.embedding,
            tokens=self.plan.prompt_tokens,
        )
        self.call = call
        self.upstream_called = True
        upstream_span = tracing.start("upstream")  # observability
        left = settings.max_generation_seconds - (time.perf_counter() - self.started)
        try:
            async with asyncio.timeout(left):
                self.result = await call.run()
        except TimeoutError:
            raise UpstreamTimeout(
                f"the upstream answered nothing in {settings.max_generation_seconds:g} s"
            ) from None
        finally:
            tracing.end(upstream_span, chunks=len(self.embedding.inputs))  # observability
        self.first_token_at = time.perf_counter()
        # Settle before the answer: a client that has its vectors sees its balance charged.
        await self._settle_then_finish(sink, lambda: (AnswerChoice("", "stop"),))

    def _upstream_usage(self) -> Usage:
        """The upstream's count of the inputs, checked; the gateway's estimate when it sent
        none or never answered."""
        if self._checked is not None:
            return self._checked[0]
        inputs = self.embedding.inputs
        estimate = estimate_embedding_tokens(inputs)
        if self.result is not None:
            raw = replace(self.result.usage, output_tokens=0)
        else:
            raw = Usage(input_tokens=estimate, estimated=True)
        return self._checked_usage(raw, embedding_bounds(inputs), estimate, 0)


class RoutedEmbedding:
    """One embedding request's upstream calls: tried on the model's deployments, then its
    fallbacks', retrying what `services.routing` retries, under the same health rules.

    Each call is bounded by the deployment's first-token timeout (the whole answer is its
    first token); `served` and `attempts` read as a chat generation's `RoutedCall`'s.
    """

    def __init__(
        self, router: Router, groups: list[list[Route]], request: EmbeddingRequest, *, tokens: int
    ) -> None:
        self.router = router
        self.groups = groups
        self.request = request
        self.tokens = tokens
        self.served: Route | None = None
        self.attempts: list[Attempt] = []

    async def run(self) -> EmbeddingResult:
        """Call deployments until one answers; its result, or the last error."""
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
            request = self.request
            if route.upstream_model != request.model:
                request = replace(request, model=route.upstream_model)
            silence = route.first_token_timeout or settings.upstream_first_token_timeout
            began = loop.time()
            route.state.in_flight += 1
            try:
                try:
                    async with asyncio.timeout(silence):
                        result = await route.provider.embed(request)
                except TimeoutError:
                    raise UpstreamTimeout(
                        f"the upstream answered nothing in {silence:g} s"
                    ) from None
            except UpstreamError as exc:
                error = exc
                self.attempts.append(self._attempt(number, route, exc, began, loop))
                if isinstance(exc, UpstreamAuthenticationError):
                    await self.router.disable(route, exc.code)
                    raise
                if not retryable(exc):
                    raise  # the request's fault, not the deployment's
                self.router.failed(route, exc)
                pause = self.router.rng.uniform(
                    0, settings.route_backoff_seconds * 2 ** (number - 1)
                )
                if loop.time() + pause >= deadline:
                    raise
                await asyncio.sleep(pause)
                continue
            finally:
                route.state.in_flight -= 1
            latency = round((loop.time() - began) * 1000)
            self.served = route
            self.attempts.append(
                Attempt(number, route.model.name, route.deployment_id, "ok", None, None, latency)
            )
            self.router.succeeded(route, latency)
            return result
        if error is None:
            raise UpstreamUnavailable("no deployment of this model is available now")
        raise error

    @staticmethod
    def _attempt(
        number: int,
        route: Route,
        exc: UpstreamError,
        began: float,
        loop: asyncio.AbstractEventLoop,
    ) -> Attempt:
        return Attempt(
            number,
            route.model.name,
            route.deployment_id,
            "timeout" if isinstance(exc, UpstreamTimeout) else "error",
            exc.code,
            exc.upstream_status,
            round((loop.time() - began) * 1000),
        )
