"""The generation path: plan, admit, stream from the upstream, settle exactly once.

The written policy (what a generation is charged, by how it ends):

=========================================  ==========================  =======================
How it ends                                 Status                      Charged
=========================================  ==========================  =======================
Finished normally                           completed                   upstream's usage
Client hung up before the upstream call     client_disconnected         nothing
Client hung up after the upstream call      client_disconnected         prompt + deltas so far
Upstream failed before the first token      upstream_error / _timeout   nothing
Upstream failed mid-stream                  upstream_error / _timeout   prompt + deltas so far
Maximum generation time reached             generation_timeout          prompt + deltas so far
=========================================  ==========================  =======================

"Prompt + deltas so far" uses the upstream's usage when it had sent it, and otherwise the
gateway's estimate (`tollgate_core.tokens`), marked ``estimated``. Every charge is capped at the
hold (`tollgate_core.billing`). The upstream is always called in streaming mode, for streaming
and non-streaming clients alike: one path, the same timeouts, and a count of what was generated
when a client leaves early. Settlement runs in a ``finally`` under `asyncio.shield`, so a
cancelled request still settles, and the ledger's guard makes a second settlement a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from tollgate_core import (
    GenerationRequest,
    Provider,
    StreamEnd,
    TextDelta,
    UpstreamError,
    UpstreamTimeout,
    Usage,
    estimate_completion_tokens,
    hold_amount,
    settlement_charge,
)

from tollgate_server.db.raw import raw_connection, run_with_retry
from tollgate_server.errors import ApiError, database_unavailable, upstream_api_error
from tollgate_server.observability import tracing
from tollgate_server.openai_format import ChatCompletionCreate, ChunkWriter, completion_body
from tollgate_server.runtime import Runtime
from tollgate_server.services import ledger
from tollgate_server.services.catalogue import CatalogueModel

logger = logging.getLogger("tollgate.gateway")

DEADLINE_MARGIN_SECONDS = 120.0
"""Added to the maximum generation time for the sweeper's deadline: a live process has settled
every generation well before it."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated generation, ready for admission. Built without touching the database."""

    generation_id: uuid.UUID
    account_id: uuid.UUID
    api_key_id: uuid.UUID | None
    model: CatalogueModel
    provider: Provider
    request: GenerationRequest
    prompt_tokens: int
    hold: int
    stream: bool


async def plan_generation(
    runtime: Runtime,
    *,
    account_id: uuid.UUID,
    api_key_id: uuid.UUID | None,
    allowed_models: tuple[str, ...] | None,
    body: ChatCompletionCreate,
) -> Plan:
    """Check everything that needs no database, in the order a client can fix it."""
    model = await runtime.catalogue.get(body.model)
    if model is None or not model.enabled or model.price is None:
        raise ApiError(404, "model_not_found", f"no model named {body.model} is served")
    if allowed_models is not None and model.name not in allowed_models:
        raise ApiError(403, "model_not_allowed", f"this API key may not use {model.name}")
    provider = runtime.providers.get(model.provider)
    if provider is None:
        raise ApiError(
            503,
            "model_unavailable",
            f"the provider of {model.name} is not installed or not configured",
            headers={"Retry-After": "60"},
        )
    max_tokens = body.requested_max_tokens() or model.default_max_tokens
    if max_tokens > model.max_output_tokens:
        raise ApiError(
            422,
            "validation_error",
            f"max_tokens: at most {model.max_output_tokens} for {model.name}",
        )
    messages = body.core_messages()
    prompt_tokens = provider.count_tokens(messages)
    if prompt_tokens > model.context_window:
        raise ApiError(
            400,
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
        stop=body.stop_sequences(),
        user=body.user,
    )
    return Plan(
        generation_id=uuid.uuid4(),
        account_id=account_id,
        api_key_id=api_key_id,
        model=model,
        provider=provider,
        request=request,
        prompt_tokens=prompt_tokens,
        hold=hold_amount(prompt_tokens=prompt_tokens, max_tokens=max_tokens, price=model.price),
        stream=body.stream,
    )


SHUTDOWN_ERROR = ApiError(
    503,
    "service_unavailable",
    "the server is shutting down; this generation was ended and charged for what it produced",
    headers={"Retry-After": "1"},
)


class _ClientGone(Exception):
    """The client hung up; raised where a send failed."""


class GenerationResponse(Response):
    """The ASGI response that admits, runs and settles one generation.

    It owns the whole life of the generation so that it can watch the client's connection from
    the moment of admission: a hang-up cancels the upstream call at once. It subclasses
    Starlette's `Response` only so FastAPI passes it through untouched; it writes its own
    messages.
    """

    def __init__(self, runtime: Runtime, plan: Plan) -> None:
        # Deliberately not calling Response.__init__: there is no body to render.
        self.background = None
        self.raw_headers = []
        self.runtime = runtime
        self.plan = plan
        self.settings = runtime.settings
        self.request_id = ""
        self.headers_sent = False
        self.upstream_called = False
        self.text_parts: list[str] = []
        self.chunks = 0
        self.end: StreamEnd | None = None
        self.first_token_at: float | None = None
        self.started = time.perf_counter()
        self._send: Send | None = None
        self.log: dict[str, Any] = {}
        self.work: asyncio.Task[None] | None = None
        self.settled = False
        self._write_lock = asyncio.Lock()
        """Deltas and keep-alive comments come from two tasks; messages must not interleave."""
        self.last_write = 0.0
        self.stop_reason: str | None = None
        """Set when the server ends this generation itself (``"shutdown"``)."""
        self.trace_parent: Any = None
        """The request span's context (None while tracing is off), for the settlement's span."""

    def stop(self, reason: str) -> None:
        """End the generation from outside (shutdown): it settles for what it produced."""
        self.stop_reason = reason
        if self.work is not None and not self.work.done():
            self.work.cancel()

    # --- ASGI entry ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        self.request_id = str(state.get("request_id", ""))
        self.log = state.setdefault("log", {})
        self.log.update(
            account=str(self.plan.account_id),
            model=self.plan.model.name,
            generation_id=str(self.plan.generation_id),
            provider=self.plan.model.provider,  # observability: a metrics label
        )
        self.trace_parent = tracing.current()  # observability: parents the settlement's span
        self._send = send
        if self.runtime.draining:
            await self._send_error(
                ApiError(503, "service_unavailable", "shutting down", headers={"Retry-After": "1"})
            )
            return
        try:
            with tracing.span("admission"):
                await self._admit()
        except ApiError as exc:
            self.log.update(status=exc.code, refused=exc.code)
            await self._send_error(exc)
            return
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # No upstream call: the generation never began. The admission may still have
            # committed before the connection died, so release its hold (if it exists) once
            # the database is back; the settlement's guard makes that safe either way.
            self._release_later()
            await self._send_error(
                ApiError(
                    503,
                    "service_unavailable",
                    "the database is unavailable; retry shortly",
                    headers={"Retry-After": "2"},
                )
            )
            return
        work = self.work = asyncio.create_task(self._run())
        self.runtime.active_streams.add(self)
        listener = asyncio.create_task(_wait_for_disconnect(receive))
        try:
            try:
                await asyncio.wait({work, listener}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                # The server is tearing this request down: end the generation, let it settle.
                self.stop("shutdown")
                await asyncio.shield(asyncio.wait({work}))
                raise
            if not work.done():
                # The client hung up: cancelling `work` closes the upstream connection.
                work.cancel()
            with contextlib.suppress(asyncio.CancelledError, _ClientGone):
                await work
        finally:
            listener.cancel()
            self.runtime.active_streams.discard(self)

    def _release_later(self) -> None:
        self._settle_later(
            ledger.Outcome(
                status="cancelled", usage=None, charge=0, error_code="service_unavailable"
            )
        )

    def _settle_later(self, outcome: ledger.Outcome) -> None:
        task = asyncio.create_task(
            settle_when_possible(self.runtime, self.plan.generation_id, outcome)
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
            deadline_seconds=self.settings.max_generation_seconds + DEADLINE_MARGIN_SECONDS,
            instance_id=self.runtime.instance_id,
        )
        await run_with_retry(
            self.runtime.hot_pool,
            lambda conn: ledger.admit(
                conn,
                admission,
                strict=self.settings.strict_balance,
                max_running=self.settings.max_concurrent_generations,
                rate_subject=(
                    f"key:{plan.api_key_id}" if plan.api_key_id else f"account:{plan.account_id}"
                ),
                requests_per_minute=self.settings.requests_per_minute,
            ),
        )

    # --- the generation -----------------------------------------------------------------

    async def _run(self) -> None:
        # Each path settles before its last byte reaches the client, so a client that has
        # seen the end of its answer (or of its error) also sees its balance settled.
        status, error_code, failure = "client_disconnected", None, None
        try:
            await self._generate()
            status = "completed"
        except UpstreamError as exc:
            status = "upstream_timeout" if isinstance(exc, UpstreamTimeout) else "upstream_error"
            error_code, failure = exc.code, upstream_api_error(exc)
        except _GenerationTimeout:
            status = error_code = "generation_timeout"
            failure = ApiError(
                504, "generation_timeout", "the generation ran past the maximum generation time"
            )
        except _ClientGone:
            status = "client_disconnected"
        except asyncio.CancelledError:
            if self.stop_reason == "shutdown":
                await self._settle_shielded("shutdown", "service_unavailable")
                await self._fail(SHUTDOWN_ERROR)
            raise
        except Exception:
            logger.exception("generation %s failed", self.plan.generation_id)
            status, error_code = "error", "internal_error"
            failure = ApiError(500, "internal_error", "internal error; quote the request id")
        finally:
            await self._settle_shielded(status, error_code)
        if failure is not None:
            await self._fail(failure)

    async def _generate(self) -> None:
        writer = ChunkWriter(generation_id=self.plan.generation_id, model=self.plan.model.name)
        self.last_write = asyncio.get_running_loop().time()
        keepalive = asyncio.create_task(self._keep_alive(writer)) if self.plan.stream else None
        try:
            await self._forward(writer)
        finally:
            if keepalive is not None:
                keepalive.cancel()

    async def _forward(self, writer: ChunkWriter) -> None:
        """Pass the upstream's events on as they come, under the first-token, idle and total
        time limits: one timeout whose deadline moves with each event, no task or queue per
        event."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        give_up_at = (
            loop.time() + settings.max_generation_seconds - (time.perf_counter() - self.started)
        )
        first_deadline = min(loop.time() + settings.upstream_first_token_timeout, give_up_at)
        events = self.plan.provider.stream(self.plan.request)
        self.upstream_called = True
        upstream_span = tracing.start("upstream")  # observability
        limit: asyncio.Timeout | None = None
        try:
            async with asyncio.timeout_at(first_deadline) as limit:
                async for event in events:
                    if isinstance(event, TextDelta):
                        if self.first_token_at is None:
                            self.first_token_at = time.perf_counter()
                            tracing.event(upstream_span, "first_token")  # observability
                        self.text_parts.append(event.text)
                        self.chunks += 1
                        if self.plan.stream:
                            await self._write_delta(writer, event.text)
                        limit.reschedule(
                            min(loop.time() + settings.upstream_idle_timeout, give_up_at)
                        )
                    else:
                        self.end = event
        except TimeoutError:
            # Which limit fired is the one that was scheduled (timers may fire a hair early).
            if limit is not None and (limit.when() or 0) >= give_up_at:
                raise _GenerationTimeout() from None
            which = "first token" if self.first_token_at is None else "next chunk"
            silence = (
                settings.upstream_first_token_timeout
                if self.first_token_at is None
                else settings.upstream_idle_timeout
            )
            raise UpstreamTimeout(f"the upstream sent no {which} in {silence:g} s") from None
        finally:
            # Closing the generator closes the upstream connection if it had not finished.
            await events.aclose()  # type: ignore[attr-defined]
            tracing.end(upstream_span, chunks=self.chunks)  # observability
        if self.end is None:
            raise UpstreamError("the upstream ended the stream without finishing it")
        await self._finish(writer)

    async def _keep_alive(self, writer: ChunkWriter) -> None:
        """During long silences (a slow first token, a pause mid-stream) send SSE comments so
        that proxies and clients keep the connection open."""
        interval = self.settings.keepalive_seconds
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, self.last_write + interval - loop.time()))
            if loop.time() - self.last_write >= interval:
                async with self._write_lock:
                    await self._start_stream_locked(writer)
                    await self._send_body(ChunkWriter.KEEPALIVE)

    async def _finish(self, writer: ChunkWriter) -> None:
        assert self.end is not None
        usage = self._usage()
        charge = self._charge(usage)
        # Settle before the last byte: a client that has its answer sees its balance charged.
        await self._settle_shielded("completed", None)
        finish_reason = self.end.finish_reason
        if finish_reason in ("error", "cancelled"):
            finish_reason = "stop"
        if self.plan.stream:
            async with self._write_lock:
                await self._start_stream_locked(writer)
                await self._send_body(
                    writer.finish(finish_reason) + writer.usage(usage, charge) + ChunkWriter.DONE,
                    more=False,
                )
            return
        body = completion_body(
            generation_id=self.plan.generation_id,
            model=self.plan.model.name,
            text="".join(self.text_parts),
            finish_reason=finish_reason,
            usage=usage,
            cost=charge,
        )
        async with self._write_lock:
            await self._start(200, "application/json")
            await self._send_body(body, more=False)

    # --- usage and settlement -----------------------------------------------------------

    def _usage(self) -> Usage:
        """The upstream's usage when it reported one; otherwise the gateway's estimate."""
        if self.end is not None and self.end.usage is not None:
            return self.end.usage
        return Usage(
            input_tokens=self.plan.prompt_tokens,
            output_tokens=estimate_completion_tokens("".join(self.text_parts), self.chunks),
            estimated=True,
        )

    def _charge(self, usage: Usage | None) -> int:
        price = self.plan.model.price
        assert price is not None
        return settlement_charge(usage=usage, price=price, hold=self.plan.hold).charge

    def _outcome(self, status: str, error_code: str | None) -> ledger.Outcome:
        produced = self.end is not None or self.chunks > 0
        if status == "client_disconnected":
            usage = self._usage() if self.upstream_called else None
        elif status == "completed" or produced:
            usage = self._usage()
        else:
            usage = None  # failed before the first token: nothing was generated
        now = time.perf_counter()
        return ledger.Outcome(
            status=status,
            usage=usage,
            charge=self._charge(usage),
            error_code=error_code,
            first_token_ms=(
                round((self.first_token_at - self.started) * 1000)
                if self.first_token_at is not None
                else None
            ),
            duration_ms=round((now - self.started) * 1000),
        )

    async def _settle_shielded(self, status: str, error_code: str | None) -> None:
        if self.settled:
            return
        self.settled = True
        outcome = self._outcome(status, error_code)
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
        settlement_span = tracing.start("settlement", self.trace_parent)  # observability
        task = asyncio.ensure_future(self._settle(outcome))
        # Even if this request is cancelled again, the settlement runs to its end.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
        tracing.end(settlement_span, status=status)  # observability

    async def _settle(self, outcome: ledger.Outcome) -> None:
        generation_id = self.plan.generation_id
        try:
            await run_with_retry(
                self.runtime.hot_pool, lambda conn: ledger.settle(conn, generation_id, outcome)
            )
            return
        except Exception as exc:
            if not database_unavailable(exc):
                # The hold stays until the sweeper releases it: never a double charge.
                logger.error("settling generation %s failed: %s", generation_id, exc)
                return
        # The database is away: finish the answer now and settle as soon as it is back.
        self._settle_later(outcome)

    # --- writing to the client ----------------------------------------------------------

    async def _start(
        self, status: int, content_type: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [
            (b"content-type", content_type.encode()),
            (b"x-tollgate-generation-id", str(self.plan.generation_id).encode()),
            *(extra or []),
        ]
        if content_type == "text/event-stream":
            headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        self.headers_sent = True
        await self._raw_send({"type": "http.response.start", "status": status, "headers": headers})

    async def _start_stream_locked(self, writer: ChunkWriter) -> None:
        if not self.headers_sent:
            await self._start(200, "text/event-stream")
            await self._send_body(writer.role())

    async def _write_delta(self, writer: ChunkWriter, text: str) -> None:
        async with self._write_lock:
            await self._start_stream_locked(writer)
            await self._send_body(writer.delta(text))

    async def _write(self, data: bytes, *, more: bool = True) -> None:
        async with self._write_lock:
            await self._send_body(data, more=more)

    async def _send_body(self, data: bytes, *, more: bool = True) -> None:
        self.last_write = asyncio.get_running_loop().time()
        await self._raw_send({"type": "http.response.body", "body": data, "more_body": more})

    async def _raw_send(self, message: Message) -> None:
        assert self._send is not None
        try:
            await self._send(message)
        except OSError as exc:  # uvicorn's ClientDisconnected is an OSError
            raise _ClientGone() from exc

    async def _send_error(self, exc: ApiError) -> None:
        body = orjson.dumps(
            {"error": {"code": exc.code, "message": exc.message, "request_id": self.request_id}}
        )
        headers = [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        with contextlib.suppress(_ClientGone):
            await self._start(exc.status, "application/json", headers)
            await self._write(body, more=False)

    async def _fail(self, exc: ApiError) -> None:
        """Tell the client: a status before the stream began, an SSE error event after."""
        try:
            if not self.headers_sent:
                await self._send_error(exc)
            else:
                await self._write(
                    ChunkWriter.error(exc.code, exc.message, self.request_id), more=False
                )
        except _ClientGone:
            pass


async def settle_when_possible(
    runtime: Runtime, generation_id: uuid.UUID, outcome: ledger.Outcome
) -> None:
    """Retry a settlement through a database outage, backing off, until the generation's
    deadline; the settlement's guard makes every retry safe."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + runtime.settings.max_generation_seconds + DEADLINE_MARGIN_SECONDS
    delay = 0.2
    while loop.time() < give_up_at:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
        try:
            async with raw_connection(runtime.hot_pool) as conn:
                await ledger.settle(conn, generation_id, outcome)
            return
        except Exception as exc:
            if not database_unavailable(exc):
                logger.error("settling generation %s failed: %s", generation_id, exc)
                return
    logger.error("generation %s could not be settled before its deadline", generation_id)


class _GenerationTimeout(Exception):
    """The maximum generation time passed."""


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
