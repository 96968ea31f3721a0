"""The generation engine: plan, admit, stream from the upstream, settle exactly once, stop.

`Generation` knows no web framework: it writes to a `GenerationSink`, which each API format
implements in `tollgate_server.api` (today `api.generation_response` for OpenAI's chat format),
the way Starlette's `StreamingResponse` keeps streaming apart from content.

The written policy: **a client pays for what it received.**

=========================================  ==========================  =======================
How it ends                                 Status                      Charged
=========================================  ==========================  =======================
Finished normally                           completed                   upstream's usage
Client hung up before any delta reached it  client_disconnected         nothing
Stream: client hung up after some deltas    client_disconnected         prompt + deltas sent
Stream: client stopped reading (stalled)    client_not_reading          prompt + deltas sent
Upstream failed before the first token      upstream_error / _timeout   nothing
Stream: upstream failed mid-stream          upstream_error / _timeout   prompt + deltas sent
Stream: maximum generation time reached     generation_timeout          prompt + deltas sent
Stream: server shutting down                shutdown                    prompt + deltas sent
Non-streaming: any of these failures        (as above)                  nothing
=========================================  ==========================  =======================

A non-streaming client that gets an error (a 502, 504 or 503) received no text, so it pays
nothing, however much the upstream produced: with an SDK's automatic retries, one failed call
must not cost three charges. "Prompt + deltas sent" counts only the deltas written to the
client; the prompt is the vendor's count when the stream had sent one (Anthropic's
``message_start``, Gemini's ``usageMetadata``) and otherwise the gateway's estimate
(`tollgate_core.tokens`); the usage is then marked ``estimated``. What the upstream may bill the
operator for beyond the charge is recorded on the generation as unbilled tokens
(``unbilled_input_tokens``, ``unbilled_output_tokens``) and shown in the admin usage, so the
operator can reconcile with the vendor's invoice.

Every count an upstream reports is checked first (`tollgate_core.metering`): one out of range
(negative, absurdly large, not a whole number) is replaced by the gateway's count, the
generation records which (``usage_replaced``), and an error is logged. Every charge is at least
zero and at most the hold (`tollgate_core.billing`): no generation raises a balance.

The upstream is always called in streaming mode, for streaming and non-streaming clients
alike: one path, the same timeouts, and a count of what was generated when a client leaves
early. Settlement runs in a task of its own, started from a ``finally``, so a cancelled request
still settles, and the ledger's guard makes a second settlement a no-op. The answer's last bytes
are encoded while the settlement's statement is at the database and written once it commits.

An embedding request (`services.embeddings`) runs on this same engine, with one upstream call
in place of the stream; it ends as a non-streaming request does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from tollgate_core import (
    GenerationRequest,
    Provider,
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
    Usage,
    UsageBounds,
    UsageReport,
    calibrated_messages_tokens,
    check_usage,
    estimate_completion_tokens,
    hold_amount,
    settlement_charge,
)
from tollgate_core.metering import Estimate
from tollgate_core.tool_calls import join_tool_calls

from tollgate_server.anthropic_format import MessageCreate
from tollgate_server.db.ids import time_ordered_uuid
from tollgate_server.db.raw import raw_connection, run_with_retry
from tollgate_server.errors import (
    Forbidden,
    InternalError,
    InvalidParameters,
    InvalidRequest,
    NotFound,
    Refused,
    TimedOut,
    Unavailable,
    client_error,
    database_unavailable,
    upstream_detail,
)
from tollgate_server.observability import tracing
from tollgate_server.openai_format import ChatCompletionCreate
from tollgate_server.runtime import Runtime
from tollgate_server.services import chat_request, ledger, messages_request
from tollgate_server.services.answers import Answer, AnswerChoice
from tollgate_server.services.catalogue import CatalogueModel
from tollgate_server.services.late_charges import deliver_settlement
from tollgate_server.services.routing import Attempt, Route, RoutedCall

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger("tollgate.gateway")


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated generation, ready for admission. Built without touching the database."""

    generation_id: uuid.UUID
    account_id: uuid.UUID
    api_key_id: uuid.UUID | None
    model: CatalogueModel
    provider: Provider
    """The first deployment's provider: it counts the prompt's tokens."""
    routes: list[list[Route]]
    """The deployments of the model, then of each fallback that can take the request."""
    request: GenerationRequest
    prompt_tokens: int
    hold: int
    stream: bool
    input_allowance: int = 0
    """Input tokens beyond the messages' text (tools, schemas, images): the check of the
    upstream's usage allows this much more input."""
    choices: int = 1
    endpoint: str = "chat.completions"
    """The API that asked, recorded on the generation: ``chat.completions``, ``messages``
    (Anthropic's format) or ``embeddings`` (`services.embeddings`)."""


Body = ChatCompletionCreate | MessageCreate
"""A generation request in one of the API's formats: OpenAI's chat completions or Anthropic's
messages. Each is translated into core's request types; from there on one path serves both."""


def _features(body: Body, provider: Provider, model_name: str) -> chat_request.Features:
    if isinstance(body, MessageCreate):
        return messages_request.features(body, provider, model_name)
    return chat_request.features(body, provider, model_name)


def _carries(
    provider: Provider,
    body: Body,
    request: GenerationRequest,
    features: chat_request.Features,
) -> bool:
    """Whether a fallback's provider can carry this request as the first one does."""
    if features is chat_request.PLAIN:
        return True
    try:
        _features(body, provider, request.model)
        provider.check_request(request)
    except (Refused, UpstreamBadRequest):
        return False
    return True


_WRONG_KIND = {
    "chat": ("not_a_chat_model", "an embedding model: send it to /v1/embeddings"),
    "embedding": ("not_an_embedding_model", "a chat model: send it to /v1/chat/completions"),
}
"""The refusal of a model on a route of the other kind: its code, and what the model is."""


async def served_model(
    runtime: Runtime, name: str, allowed_models: tuple[str, ...] | None, *, kind: str = "chat"
) -> tuple[CatalogueModel, list[Route]]:
    """The model `name` of `kind` and its deployments, or the `Refused` that says why it is
    not served to this caller: no such model, not this key's, the other kind, no provider."""
    model = await runtime.catalogue.get(name)
    if model is None or not model.enabled or model.price is None:
        raise NotFound("model_not_found", f"no model named {name} is served")
    if allowed_models is not None and model.name not in allowed_models:
        raise Forbidden("model_not_allowed", f"this API key may not use {model.name}")
    if model.kind != kind:
        code, what = _WRONG_KIND[kind]
        raise InvalidRequest(code, f"{model.name} is {what}")
    await runtime.router.fresh()
    routes = runtime.router.routes(model)
    if not routes:
        raise Unavailable(
            "model_unavailable",
            f"the provider of {model.name} is not installed or not configured",
            retry_after=60,
        )
    return model, routes


async def plan_generation(
    runtime: Runtime,
    *,
    account_id: uuid.UUID,
    api_key_id: uuid.UUID | None,
    allowed_models: tuple[str, ...] | None,
    body: Body,
) -> Plan:
    """Check everything that needs no database, in the order a client can fix it."""
    model, routes = await served_model(runtime, body.model, allowed_models)
    assert model.price is not None  # served_model refuses a model without a price
    provider = routes[0].provider
    max_tokens = body.requested_max_tokens() or model.default_max_tokens
    if max_tokens > model.max_output_tokens:
        raise InvalidParameters(
            "validation_error",
            f"max_tokens: at most {model.max_output_tokens} for {model.name}",
        )
    features = _features(body, provider, model.name)
    messages = body.core_messages()
    if not provider.accepts_image_urls and features is not chat_request.PLAIN:
        messages = await chat_request.inline_image_urls(messages, runtime.http)
    prompt_tokens = provider.count_tokens(messages) + features.input_allowance
    if prompt_tokens > model.context_window:
        raise InvalidRequest(
            "context_length_exceeded",
            f"the prompt is about {prompt_tokens} tokens; {model.name} takes "
            f"{model.context_window}",
        )
    request = GenerationRequest(
        model=model.upstream_model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=(
            body.stop_sequences()
            if isinstance(body, ChatCompletionCreate)
            else tuple(body.stop_sequences or ())
        ),
        user=body.user,
        extra=features.extra,
        tools=features.tools,
        tool_choice=features.tool_choice,
        parallel_tool_calls=features.parallel_tool_calls,
        response_format=features.response_format,
        reasoning_effort=features.reasoning_effort,
        n=features.n,
        logprobs=features.logprobs,
        top_logprobs=features.top_logprobs,
    )
    if features is not chat_request.PLAIN:
        try:
            provider.check_request(request)
        except UpstreamBadRequest as exc:
            raise InvalidParameters(
                "unsupported_parameter", f"{model.name}: {exc.message}"
            ) from None
    groups = [routes]
    # Each of n choices may use the whole output limit.
    hold = hold_amount(
        prompt_tokens=prompt_tokens, max_tokens=max_tokens * features.n, price=model.price
    )
    for name in model.fallbacks:
        fallback = await runtime.catalogue.get(name)
        if (
            fallback is None
            or fallback.price is None
            or not fallback.enabled
            or fallback.kind != "chat"
            or fallback.max_output_tokens < max_tokens
            or fallback.context_window < prompt_tokens
        ):
            continue  # it could not take this request: not a route, not in the hold
        fallback_routes = runtime.router.routes(fallback)
        if fallback_routes and not _carries(fallback_routes[0].provider, body, request, features):
            continue  # its provider cannot carry what this request asks (tools, images, ...)
        if fallback_routes:
            groups.append(fallback_routes)
            # The hold covers the dearest model that may serve: the admission bound holds.
            hold = max(
                hold,
                hold_amount(
                    prompt_tokens=prompt_tokens,
                    max_tokens=max_tokens * features.n,
                    price=fallback.price,
                ),
            )
    return Plan(
        generation_id=time_ordered_uuid(),
        account_id=account_id,
        api_key_id=api_key_id,
        model=model,
        provider=provider,
        routes=groups,
        request=request,
        prompt_tokens=prompt_tokens,
        hold=hold,
        stream=body.stream,
        input_allowance=features.input_allowance,
        choices=features.n,
        endpoint="messages" if isinstance(body, MessageCreate) else "chat.completions",
    )


SHUTDOWN_ERROR = Unavailable(
    "service_unavailable",
    "the server is shutting down; this generation was ended and charged for what it produced",
    retry_after=1,
)


class UpstreamCalls(Protocol):
    """A generation's upstream calls as its settlement records them: a chat stream's
    `RoutedCall`, or an embedding's `services.embeddings.RoutedEmbedding`."""

    served: Route | None
    attempts: list[Attempt]


class ClientGone(Exception):
    """The client hung up; a sink raises it where a send failed."""


class GenerationSink(Protocol):
    """Where one generation's output goes: one implementation per API format, in `api/`.

    The engine calls these from two tasks (the generation and its keep-alive); a sink
    serialises its own writes. Each raises `ClientGone` when the client has hung up.
    """

    async def delta(self, delta: TextDelta) -> None:
        """Write one text delta (streaming requests only)."""

    async def tool_call(self, delta: ToolCallDelta) -> None:
        """Write one piece of a tool call (streaming requests only)."""

    @property
    def writes_reasoning(self) -> bool:
        """Whether this format carries the model's thinking. When it does, thinking is
        written with `reasoning` and counts as output the client received; when not, it is
        left out of the answer (its tokens stay in the upstream's usage)."""

    async def reasoning(self, text: str) -> None:
        """Write one piece of thinking (streaming requests of a sink that writes it only)."""

    async def keepalive(self) -> None:
        """Write something that keeps an idle stream open (streaming requests only)."""

    def ending(self, answer: Answer) -> bytes:
        """The end of the answer, encoded: the last chunks, or the whole non-streaming body.
        Built while the settlement is at the database; `finish` writes it once it committed."""

    async def finish(self, ending: bytes) -> None:
        """Write the end of the answer (`ending`'s bytes)."""

    async def fail(self, error: Refused) -> None:
        """Tell the client the generation failed: a status before the stream began, an
        error event after. Never raises."""


class Generation:
    """One generation's life: admit, stream from the upstream, settle exactly once, stop.

    Framework-free: what reaches the client goes through a `GenerationSink`. The ASGI
    response in `tollgate_server.api.generation_response` owns the connection, watches for a
    hang-up and cancels `task`, which closes the upstream connection at once.
    """

    def __init__(self, runtime: Runtime, plan: Plan) -> None:
        self.runtime = runtime
        self.plan = plan
        self.settings = runtime.settings
        self.upstream_called = False
        self.text_parts: list[str] = []
        self.tool_deltas: list[tuple[int, ToolCallDelta]] = []
        """The tool-call pieces received, each with its place in `text_parts`."""
        self.marked: list[tuple[int, TextDelta]] = []
        """The text deltas of a choice other than the first, or with log-probabilities, each
        with its place in `text_parts` (empty for a plain answer)."""
        self.reasoning_at: list[int] = []
        """The places in `text_parts` of the thinking received (for a sink that writes it)."""
        self.chunks = 0
        self.end: StreamEnd | None = None
        self.first_token_at: float | None = None
        self.started = time.perf_counter()
        self.log: dict[str, Any] = {}
        """The request's access-log fields (shared with the middleware's log line)."""
        self.task: asyncio.Task[None] | None = None
        """The running generation, once admitted (`start`)."""
        self.settled = False
        self.outcome: ledger.Outcome | None = None
        """The settlement's outcome, once it has begun."""
        self.error_detail: str | None = None
        """What a failed upstream said (redacted), for the log and admins only."""
        self.last_write = 0.0
        """Loop time of the last write to the client; the keep-alive measures silence from it."""
        self.stop_reason: str | None = None
        """Set when the server ends this generation itself (``"shutdown"``)."""
        self.reported: Usage | None = None
        """Usage the upstream reported before its end (a `UsageReport`): the prompt's count."""
        self.sent_chunks = 0
        """Deltas written to a streaming client: what it pays for if the stream ends early."""
        self.writing = False
        """True while a delta waits to be written: a timeout then means the client stopped
        reading, not that the upstream went quiet."""
        self._checked: tuple[Usage, tuple[str, ...]] | None = None
        self.trace_parent: Any = None
        """The request span's context (None while tracing is off), for the settlement's span."""
        self.call: UpstreamCalls | None = None
        """The upstream calls (routing): which deployment served, and every attempt."""

    def stop(self, reason: str) -> None:
        """End the generation from outside (shutdown): it settles for what it produced."""
        self.stop_reason = reason
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def start(self, sink: GenerationSink) -> asyncio.Task[None]:
        """Run the admitted generation in its own task, tracked for the shutdown drain."""
        task = self.task = asyncio.create_task(self._run(sink))
        tracker = self.runtime.generations
        tracker.add(self)
        task.add_done_callback(lambda _: tracker.discard(self))
        return task

    async def admit(self) -> None:
        """Take the hold, or raise the `Refused` that refuses the generation."""
        self.log.update(
            account=str(self.plan.account_id),
            model=self.plan.model.name,
            generation_id=str(self.plan.generation_id),
            provider=self.plan.model.provider,  # observability: a metrics label
        )
        self.trace_parent = tracing.current()  # observability: parents the settlement's span
        if self.runtime.draining:
            raise Unavailable("service_unavailable", "shutting down", retry_after=1)
        try:
            with tracing.span("admission"):
                await self._admit()
        except Refused as exc:
            self.log.update(status=exc.code, refused=exc.code)
            raise
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # No upstream call: the generation never began. The admission may still have
            # committed before the connection died, so release its hold (if it exists) once
            # the database is back; the settlement's guard makes that safe either way.
            self._release_later()
            raise Unavailable(
                "service_unavailable",
                "the database is unavailable; retry shortly",
                retry_after=2,
            ) from None

    def _release_later(self) -> None:
        self._settle_later(
            ledger.Outcome(
                status="cancelled", usage=None, charge=0, error_code="service_unavailable"
            )
        )

    def _settle_later(self, outcome: ledger.Outcome, *, spooled: bool = False) -> None:
        task = asyncio.create_task(
            settle_when_possible(self.runtime, self.plan.generation_id, outcome, spooled=spooled)
        )
        self.runtime.pending_settlements.add(task)
        task.add_done_callback(self.runtime.pending_settlements.discard)

    async def _admit(self) -> None:
        plan = self.plan
        price = plan.model.price
        assert price is not None
        admission = ledger.Admission(
            generation_id=plan.generation_id,
            account_id=plan.account_id,
            api_key_id=plan.api_key_id,
            model_id=plan.model.id,
            model_name=plan.model.name,
            price_id=price.id,
            input_price=price.input_per_million,
            output_price=price.output_per_million,
            hold=plan.hold,
            stream=plan.stream,
            max_tokens=plan.request.max_tokens,
            prompt_tokens=plan.prompt_tokens,
            deadline_seconds=self.settings.max_generation_seconds + ledger.DEADLINE_MARGIN_SECONDS,
            instance_id=self.runtime.instance_id,
            endpoint=plan.endpoint,
        )
        await run_with_retry(
            self.runtime.hot_pool,
            lambda conn: ledger.admit(
                conn,
                admission,
                strict=self.settings.strict_balance,
                max_running=self.settings.max_concurrent_generations,
                # One counter per account, whatever key or token asked: an account cannot
                # multiply its limit by creating keys.
                rate_subject=f"account:{plan.account_id}",
                requests_per_minute=self.settings.requests_per_minute,
                clock_offset=self.settings.period_clock_offset_seconds,
            ),
        )

    # --- the generation -----------------------------------------------------------------

    async def _run(self, sink: GenerationSink) -> None:
        # Each path settles before its last byte reaches the client, so a client that has
        # seen the end of its answer (or of its error) also sees its balance settled.
        status, error_code = "client_disconnected", None
        failure: Refused | None = None
        try:
            await self._generate(sink)
            status = "completed"
        except UpstreamError as exc:
            status = "upstream_timeout" if isinstance(exc, UpstreamTimeout) else "upstream_error"
            error_code, failure = exc.code, client_error(exc)
            self.error_detail = self.log["error_detail"] = upstream_detail(exc)
        except _GenerationTimeout:
            status = error_code = "generation_timeout"
            failure = TimedOut(
                "generation_timeout", "the generation ran past the maximum generation time"
            )
        except ClientGone:
            status = "client_disconnected"
        except _ClientNotReading:
            # Nothing more can be written to it: settle and let the connection be closed.
            status = error_code = "client_not_reading"
        except asyncio.CancelledError:
            if self.stop_reason == "shutdown":
                await self._settle_shielded("shutdown", "service_unavailable")
                await sink.fail(SHUTDOWN_ERROR)
            raise
        except Exception:
            logger.exception("generation %s failed", self.plan.generation_id)
            status, error_code = "error", "internal_error"
            failure = InternalError("internal_error", "internal error; quote the request id")
        finally:
            await self._settle_shielded(status, error_code)
        if failure is not None:
            await sink.fail(failure)

    async def _generate(self, sink: GenerationSink) -> None:
        self.last_write = asyncio.get_running_loop().time()
        keepalive = asyncio.create_task(self._keep_alive(sink)) if self.plan.stream else None
        try:
            await self._forward(sink)
        finally:
            if keepalive is not None:
                keepalive.cancel()

    async def _forward(self, sink: GenerationSink) -> None:
        """Pass the upstream's events on as they come, under the first-token, idle and total
        time limits: one timeout whose deadline moves with each event, no task or queue per
        event."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        give_up_at = (
            loop.time() + settings.max_generation_seconds - (time.perf_counter() - self.started)
        )
        # Routing bounds each attempt's wait for its first token and the attempts' total time
        # (`RoutedCall.open`); this limit is the generation's own.
        first_deadline = give_up_at
        call = self.call = RoutedCall(
            self.runtime.router,
            self.plan.routes,
            self.plan.request,
            tokens=self.plan.prompt_tokens + self.plan.request.max_tokens,
        )
        self.upstream_called = True
        upstream_span = tracing.start("upstream")  # observability
        limit: asyncio.Timeout | None = None
        try:
            async with asyncio.timeout_at(first_deadline) as limit:
                events = await call.open()
                if call.direct:
                    # One deployment: its first token is waited for here, as before routing.
                    limit.reschedule(min(loop.time() + call.first_token_timeout, give_up_at))
                # The events routing read while waiting for the first token, then the rest
                # straight from the serving provider: nothing between it and the client.
                for event in call.early:
                    await self._event(event, sink, limit, give_up_at, upstream_span)
                async for event in events:
                    # The plain text delta inline (the hot path); every other event, and a
                    # delta of another choice or with log-probabilities, in `_event`.
                    if type(event) is TextDelta and not event.choice and not event.logprobs:
                        if self.first_token_at is None:
                            self.first_token_at = time.perf_counter()
                            tracing.event(upstream_span, "first_token")  # observability
                        self.text_parts.append(event.text)
                        self.chunks += 1
                        if self.plan.stream:
                            self.last_write = loop.time()
                            # Cleared only when the write completes: a timeout cancels it
                            # mid-way and must still see that it was writing.
                            self.writing = True
                            await sink.delta(event)
                            self.writing = False
                            self.sent_chunks += 1
                        limit.reschedule(
                            min(loop.time() + settings.upstream_idle_timeout, give_up_at)
                        )
                    else:
                        await self._event(event, sink, limit, give_up_at, upstream_span)
        except UpstreamError as exc:
            await call.failed(exc, started=self.first_token_at is not None)
            raise
        except TimeoutError:
            if self.writing:
                # The time ran out inside a write: the client's socket is full because it
                # stopped reading. The upstream is not to blame.
                raise _ClientNotReading() from None
            # Which limit fired is the one that was scheduled (timers may fire a hair early).
            if limit is not None and (limit.when() or 0) >= give_up_at:
                raise _GenerationTimeout() from None
            which = "first token" if self.first_token_at is None else "next chunk"
            silence = (
                call.first_token_timeout
                if self.first_token_at is None
                else settings.upstream_idle_timeout
            )
            timeout = UpstreamTimeout(f"the upstream sent no {which} in {silence:g} s")
            await call.failed(timeout, started=self.first_token_at is not None)
            raise timeout from None
        finally:
            # Closing the stream closes the upstream connection if it had not finished.
            await call.close(self.first_token_at)
            tracing.end(upstream_span, chunks=self.chunks)  # observability
        if self.end is None:
            raise UpstreamError("the upstream ended the stream without finishing it")
        await self._finish(sink)

    async def _event(
        self,
        event: StreamEvent,
        sink: GenerationSink,
        limit: asyncio.Timeout,
        give_up_at: float,
        upstream_span: Any,
    ) -> None:
        """Any event: the ones routing read before handing the stream over, and all but the
        plain text delta, which the loop in `_forward` handles inline (the hot path)."""
        if isinstance(event, UsageReport):
            self.reported = event.usage
            return
        if isinstance(event, StreamEnd):
            self.end = event
            return
        if isinstance(event, ReasoningDelta):
            await self._reasoning(event, sink, limit, give_up_at)
            return
        if event.choice >= self.plan.choices:
            return  # an answer the request did not ask for (an upstream's error): dropped
        loop = asyncio.get_running_loop()
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            tracing.event(upstream_span, "first_token")  # observability
        if isinstance(event, TextDelta):
            if event.choice or event.logprobs:
                self.marked.append((len(self.text_parts), event))
            self.text_parts.append(event.text)
        else:
            # A tool call's arguments count as output, as text does; its place is kept so
            # that the answer's text leaves it out.
            self.tool_deltas.append((len(self.text_parts), event))
            self.text_parts.append(event.arguments)
        self.chunks += 1
        if self.plan.stream:
            self.last_write = loop.time()
            self.writing = True
            if isinstance(event, TextDelta):
                await sink.delta(event)
            else:
                await sink.tool_call(event)
            self.writing = False
            self.sent_chunks += 1
        limit.reschedule(min(loop.time() + self.settings.upstream_idle_timeout, give_up_at))

    async def _reasoning(
        self, event: ReasoningDelta, sink: GenerationSink, limit: asyncio.Timeout, give_up_at: float
    ) -> None:
        """A piece of thinking: written and counted as output for a sink that carries it,
        otherwise only a sign of life (the idle limit starts again)."""
        loop = asyncio.get_running_loop()
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if sink.writes_reasoning:
            self.reasoning_at.append(len(self.text_parts))
            self.text_parts.append(event.text)
            self.chunks += 1
            if self.plan.stream:
                self.last_write = loop.time()
                self.writing = True
                await sink.reasoning(event.text)
                self.writing = False
                self.sent_chunks += 1
        limit.reschedule(min(loop.time() + self.settings.upstream_idle_timeout, give_up_at))

    async def _keep_alive(self, sink: GenerationSink) -> None:
        """During long silences (a slow first token, a pause mid-stream) send SSE comments so
        that proxies and clients keep the connection open."""
        interval = self.settings.keepalive_seconds
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, self.last_write + interval - loop.time()))
            if loop.time() - self.last_write >= interval:
                self.last_write = loop.time()
                await sink.keepalive()

    async def _finish(self, sink: GenerationSink) -> None:
        assert self.end is not None
        await self._settle_then_finish(sink, self._answers)

    async def _settle_then_finish(
        self, sink: GenerationSink, choices: Callable[[], tuple[AnswerChoice, ...]]
    ) -> None:
        """Settle as completed, then write the end of the answer.

        Settle before the last byte: a client that has its answer sees its balance charged.
        The end is built and encoded while the settlement's statement is at the database, and
        written only once it has committed (or been spooled).
        """
        settling = self._begin_settlement("completed", None)
        try:
            await asyncio.sleep(0)  # the settlement's task sends its statement on this turn
            outcome = self.outcome
            assert outcome is not None and outcome.usage is not None  # completed: charged usage
            ending = sink.ending(
                Answer(choices=choices(), usage=outcome.usage, charge=outcome.charge)
            )
        finally:
            committed = await self._await_settlement(settling)
        if not committed:
            # Neither committed nor spooled: the answer's cost could be lost, so no answer.
            raise RuntimeError("the settlement could be neither committed nor spooled")
        await sink.finish(ending)

    def _answers(self) -> tuple[AnswerChoice, ...]:
        """Each choice's text, tool calls, log-probabilities and finish reason."""
        end = self.end
        assert end is not None

        def finish_reason(choice: int) -> str:
            reasons = end.finish_reasons
            reason = reasons[choice] if choice < len(reasons) else end.finish_reason
            return "stop" if reason in ("error", "cancelled") else reason

        if not self.tool_deltas and not self.marked and not self.reasoning_at:  # one plain answer
            return (AnswerChoice("".join(self.text_parts), finish_reason(0)),)
        owner = dict.fromkeys(range(len(self.text_parts)), 0)
        for position, _ in self.tool_deltas:
            del owner[position]
        for position in self.reasoning_at:
            del owner[position]
        for position, delta in self.marked:
            owner[position] = delta.choice
        texts: list[list[str]] = [[] for _ in range(self.plan.choices)]
        for position, choice in owner.items():
            texts[choice].append(self.text_parts[position])
        logprobs: list[list[TokenLogprob]] = [[] for _ in range(self.plan.choices)]
        for _, delta in self.marked:
            logprobs[delta.choice].extend(delta.logprobs)
        calls: list[list[ToolCallDelta]] = [[] for _ in range(self.plan.choices)]
        for _, call in self.tool_deltas:
            calls[call.choice].append(call)
        asked_logprobs = self.plan.request.logprobs
        return tuple(
            AnswerChoice(
                text="".join(texts[choice]),
                finish_reason=finish_reason(choice),
                tool_calls=join_tool_calls(calls[choice]),
                logprobs=tuple(logprobs[choice]) if asked_logprobs else None,
                # Thinking is the first answer's: the formats that carry it have one answer.
                reasoning="".join(self.text_parts[i] for i in self.reasoning_at)
                if choice == 0
                else "",
            )
            for choice in range(self.plan.choices)
        )

    # --- usage and settlement -----------------------------------------------------------

    def _upstream_usage(self) -> Usage:
        """What the upstream used, as far as it can be known: its final usage, checked; else its
        earlier report of the prompt and the gateway's count of the deltas it produced."""
        if self._checked is not None:
            return self._checked[0]
        request = self.plan.request
        bounds = UsageBounds.for_request(
            request.messages, max_tokens=request.max_tokens * self.plan.choices
        )
        if self.plan.input_allowance:
            bounds = replace(
                bounds, max_input_tokens=bounds.max_input_tokens + self.plan.input_allowance
            )

        def prompt_estimate() -> int:
            # The calibrated count, not the hold's safe-side one: a client pays close to what
            # the upstream counted. Computed only here, off the hot path.
            return calibrated_messages_tokens(request.messages)

        def produced() -> int:
            # The gateway's own count of the output never exceeds what the request allowed.
            return min(
                estimate_completion_tokens("".join(self.text_parts), self.chunks),
                request.max_tokens * self.plan.choices,
            )

        end_usage = self.end.usage if self.end is not None else None
        if end_usage is not None:
            # The estimates are computed only for a count out of range: a sound report costs
            # none, and this runs between the upstream's last token and the client's.
            return self._checked_usage(end_usage, bounds, prompt_estimate, produced)
        output = produced()
        if self.reported is not None:
            raw = Usage(
                input_tokens=self.reported.input_tokens,
                cached_input_tokens=self.reported.cached_input_tokens,
                output_tokens=output,
                estimated=True,
            )
        else:
            raw = Usage(input_tokens=prompt_estimate(), output_tokens=output, estimated=True)
        return self._checked_usage(raw, bounds, prompt_estimate, output)

    def _checked_usage(
        self, raw: Usage, bounds: UsageBounds, input_estimate: Estimate, output_estimate: Estimate
    ) -> Usage:
        """`raw` (the upstream's report) checked against `bounds`, the gateway's estimates
        standing in for counts out of range; logged when they did, and kept for the settlement."""
        checked = check_usage(
            raw, bounds, input_estimate=input_estimate, output_estimate=output_estimate
        )
        if checked.replaced:
            logger.error(
                "generation %s: the upstream reported counts out of range (%s); the gateway's "
                "counts were used instead",
                self.plan.generation_id,
                ", ".join(checked.replaced),
            )
        self._checked = (checked.usage, checked.replaced)
        return checked.usage

    def _usage(self) -> Usage:
        """The usage a completed generation is charged: the upstream's, checked."""
        return self._upstream_usage()

    def _received_usage(self) -> Usage | None:
        """What a client that did not get its whole answer pays for: the prompt and the deltas
        written to it, on a stream; nothing when no delta reached it (see the policy above)."""
        if not self.plan.stream or self.sent_chunks == 0:
            return None
        upstream = self._upstream_usage()
        if self.end is not None and self.sent_chunks == self.chunks:
            return upstream  # it had every delta; only the final usage chunk was missing
        sent = estimate_completion_tokens(
            "".join(self.text_parts[: self.sent_chunks]), self.sent_chunks
        )
        return Usage(
            input_tokens=upstream.input_tokens,
            cached_input_tokens=upstream.cached_input_tokens,
            output_tokens=min(sent, upstream.output_tokens),
            estimated=True,
        )

    def _served(self) -> CatalogueModel:
        """The model that served (a fallback's price is its own), else the one asked for."""
        served = self.call.served if self.call is not None else None
        return served.model if served is not None else self.plan.model

    def _charge(self, usage: Usage | None) -> int:
        price = self._served().price
        assert price is not None
        return settlement_charge(usage=usage, price=price, hold=self.plan.hold).charge

    def _outcome(self, status: str, error_code: str | None) -> ledger.Outcome:
        usage = self._usage() if status == "completed" else self._received_usage()
        unbilled_input = unbilled_output = 0
        if self.upstream_called:
            upstream = self._upstream_usage()
            unbilled_input = max(0, upstream.input_tokens - (usage.input_tokens if usage else 0))
            unbilled_output = max(0, upstream.output_tokens - (usage.output_tokens if usage else 0))
        now = time.perf_counter()
        return ledger.Outcome(
            status=status,
            usage=usage,
            charge=self._charge(usage),
            error_code=error_code,
            error_detail=self.error_detail,
            first_token_ms=(
                round((self.first_token_at - self.started) * 1000)
                if self.first_token_at is not None
                else None
            ),
            duration_ms=round((now - self.started) * 1000),
            usage_replaced=self._checked[1] if self._checked is not None else (),
            unbilled_input_tokens=unbilled_input,
            unbilled_output_tokens=unbilled_output,
            **self._routing_outcome(),
        )

    def _routing_outcome(self) -> dict[str, Any]:
        call = self.call
        if call is None:
            return {}
        served = call.served
        attempts = call.attempts
        # One call that went well says nothing the generation does not (its deployment, its
        # first token): only retries and failures are written, off the common path's cost.
        notable = len(attempts) > 1 or (attempts and attempts[0].outcome != "ok")
        fields: dict[str, Any] = {"attempts": tuple(attempts) if notable else ()}
        if served is not None:
            price = served.model.price
            assert price is not None
            fields.update(
                served_model=served.model.name,
                deployment_id=served.deployment_id,
                served_price=price,
            )
            self.log["deployment"] = served.label  # observability: a metrics label
        elif call.attempts:
            self.log["deployment"] = str(
                call.attempts[-1].deployment_id or self.plan.model.provider
            )
        return fields

    async def _settle_shielded(self, status: str, error_code: str | None) -> bool:
        """Settle once; False when the settlement is neither committed nor spooled."""
        return await self._await_settlement(self._begin_settlement(status, error_code))

    def _begin_settlement(self, status: str, error_code: str | None) -> _Settling | None:
        """Start the one settlement (None when it has begun already): the outcome is fixed
        here, and the settlement's own task sends it on the event loop's next turn."""
        if self.settled:
            return None
        self.settled = True
        outcome = self.outcome = self._outcome(status, error_code)
        usage = outcome.usage
        self.log.update(
            status=status,
            cost=outcome.charge,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            estimated=bool(usage and usage.estimated),
            ttft_ms=outcome.first_token_ms,
            # observability: metrics labels and values
            cached_input_tokens=usage.cached_input_tokens if usage else 0,
            reasoning_tokens=usage.reasoning_tokens if usage else 0,
            error_code=error_code,
            duration_ms=outcome.duration_ms,
        )
        span = tracing.start("settlement", self.trace_parent)  # observability
        settled: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        # A task of its own: even if this request is cancelled, the settlement runs to its end.
        task = asyncio.ensure_future(self._settle(outcome, settled))
        task.add_done_callback(functools.partial(_settlement_ended, settled))
        return _Settling(settled, span, status)

    async def _await_settlement(self, settling: _Settling | None) -> bool:
        """Wait until the settlement has committed (or been spooled); False when it was
        neither. A cancelled wait leaves the settlement's task running and returns True."""
        if settling is None:
            return True
        try:
            return await settling.settled
        except asyncio.CancelledError:
            return True  # the settlement's task carries on, and spools if it must
        finally:
            tracing.end(settling.span, status=settling.status)  # observability

    async def _settle(self, outcome: ledger.Outcome, settled: asyncio.Future[bool]) -> bool:
        generation_id = self.plan.generation_id

        async def settle(conn: asyncpg.Connection) -> None:
            # As every late path does: if the sweeper released the hold meanwhile (this
            # process looked dead), what was delivered is charged late, not dropped. The usual
            # case costs the one settlement statement.
            if await deliver_settlement(conn, generation_id, outcome) == "late_charge":
                self.runtime.late_charges += 1
            # Committed: the answer may end now. The request resumes on the loop's next turn,
            # before the connection is handed back to the pool.
            _resolve(settled, True)

        try:
            await run_with_retry(self.runtime.hot_pool, settle)
            return True
        except Exception as exc:
            if not database_unavailable(exc):
                # The hold stays until the sweeper releases it: never a double charge.
                logger.error("settling generation %s failed: %s", generation_id, exc)
                return True
        # The database is away. The settlement goes to disk before the answer's last byte, so
        # no exit of this process before the database returns can lose it; it is settled in
        # the background as soon as the database is back (or replayed by the next start).
        try:
            await asyncio.to_thread(self.runtime.spool.append, generation_id, outcome)
        except OSError as exc:
            logger.error("spooling the settlement of generation %s failed: %s", generation_id, exc)
            self._settle_later(outcome)
            return False
        self._settle_later(outcome, spooled=True)
        return True


@dataclass(frozen=True, slots=True)
class _Settling:
    """A settlement under way: what its waiter awaits, and its span."""

    settled: asyncio.Future[bool]
    """True once committed or spooled, False when neither (set at most once)."""
    span: Any
    status: str


def _resolve(settled: asyncio.Future[bool], value: bool) -> None:
    if not settled.done():  # a cancelled waiter cancels the future it awaited
        settled.set_result(value)


def _settlement_ended(settled: asyncio.Future[bool], task: asyncio.Future[bool]) -> None:
    """The settlement's task ended: its result, if the commit did not tell the waiter already."""
    if task.cancelled():
        _resolve(settled, True)  # as for a cancelled wait: nothing better is known
    elif task.exception() is not None:
        _resolve(settled, False)
    else:
        _resolve(settled, task.result())


async def settle_when_possible(
    runtime: Runtime, generation_id: uuid.UUID, outcome: ledger.Outcome, *, spooled: bool = False
) -> None:
    """Retry a settlement through a database outage, backing off; the settlement's guard makes
    every retry safe, and a hold released meanwhile makes it a late charge.

    A settlement that is not spooled (a release of nothing) gives up at the generation's
    deadline, when the sweeper releases the hold anyway. A spooled one keeps trying: its hold is
    kept for it, and if this process exits first the next start replays it.
    """
    loop = asyncio.get_running_loop()
    give_up_at = (
        loop.time() + runtime.settings.max_generation_seconds + ledger.DEADLINE_MARGIN_SECONDS
    )
    delay = 0.2
    while spooled or loop.time() < give_up_at:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
        try:
            async with raw_connection(runtime.hot_pool) as conn:
                delivery = await deliver_settlement(conn, generation_id, outcome)
        except Exception as exc:
            if database_unavailable(exc):
                continue
            logger.error("settling generation %s failed: %s", generation_id, exc)
            return
        if delivery == "late_charge":
            runtime.late_charges += 1
        if spooled:
            await asyncio.to_thread(runtime.spool.mark_done, generation_id)
        return
    logger.error("generation %s could not be settled before its deadline", generation_id)


class _GenerationTimeout(Exception):
    """The maximum generation time passed."""


class _ClientNotReading(Exception):
    """A write to the client stalled past the time limits: it stopped reading its stream."""
