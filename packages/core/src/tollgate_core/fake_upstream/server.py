"""`FakeUpstream`: the aiohttp server and the scenario runner."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from types import TracebackType
from typing import Any

from aiohttp import web

from tollgate_core.fake_upstream import embeddings
from tollgate_core.fake_upstream.dialects import (
    DIALECTS,
    Dialect,
    ProtocolName,
    Reply,
    ToolCallPlan,
    dumps,
)
from tollgate_core.fake_upstream.directives import DirectiveError, Directives, parse_directives
from tollgate_core.fake_upstream.records import UpstreamRecord
from tollgate_core.fake_upstream.schemas import instance
from tollgate_core.types import Usage

_GEMINI_PATH = re.compile(
    r"/v1(?:beta|alpha)?/models/(?P<model>[^/:]+):"
    r"(?P<method>generateContent|streamGenerateContent|batchEmbedContents)$"
)
RESET_GRACE_S = 0.05
"""Pause before a reset, so the client has read the chunks sent before it (an RST may make the
peer's kernel drop data not yet read)."""


class FakeUpstream:
    """A fake LLM upstream on a loopback port. See `tollgate_core.fake_upstream` for directives.

    Use it inside a running event loop::

        async with FakeUpstream() as upstream:
            provider = OpenAIProvider(config=ProviderConfig("openai", upstream.openai_base_url,
                                                            "sk-test"), http=session)

    or in a thread with its own loop, for synchronous clients::

        with FakeUpstream.in_thread() as upstream:
            client = openai.OpenAI(base_url=upstream.openai_base_url, api_key="sk-test")

    Args:
        host: The interface to bind; loopback by default.
        port: 0 lets the operating system choose a free port.
        default_chunks: Words generated when a request has no ``chunks`` directive (before the
            cap at the request's max tokens).
        require_key: Answer 401, like the vendors, when the protocol's key header is missing.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default_chunks: int = 5,
        require_key: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.default_chunks = default_chunks
        self.require_key = require_key
        self.fault = ""
        """Directives applied to every request after the prompt's own (``"status=503"``): the
        prompt is the same for every deployment a request is retried on, so a test scripts
        each fake upstream of a route apart with this."""
        self.records: list[UpstreamRecord] = []
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._counter = 0

    # -- addresses -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the base URL for Gemini and Anthropic providers."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Same as `url`."""
        return self.url

    @property
    def openai_base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, the shape of an OpenAI base URL."""
        return f"{self.url}/v1"

    def base_url_for(self, protocol: ProtocolName) -> str:
        """The base URL a provider of `protocol` is configured with."""
        return self.openai_base_url if protocol == "openai" else self.url

    # -- records -------------------------------------------------------------------------------

    @property
    def last_record(self) -> UpstreamRecord:
        """The most recent request; AssertionError when there is none (a test failure)."""
        if not self.records:
            raise AssertionError("the fake upstream has received no request")
        return self.records[-1]

    def clear(self) -> None:
        """Forget the records."""
        self.records.clear()

    async def wait_for_disconnect(
        self,
        record: UpstreamRecord,
        timeout: float = 2.0,  # noqa: ASYNC109
    ) -> bool:
        """Wait until the client of `record` disconnects; False after `timeout` seconds."""
        return await record.wait_disconnected_async(timeout)

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port and start answering, in the running event loop."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that hangs up cancels its handler at once, even while
        # it sleeps, which is how disconnects are noticed during delays and stalls.
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = site.port
        self._stopping = False

    async def stop(self) -> None:
        """Stop answering and close every connection."""
        self._stopping = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @classmethod
    @contextmanager
    def in_thread(cls, **kwargs: Any) -> Iterator[FakeUpstream]:
        """Run a fake upstream in a daemon thread with its own event loop, for sync code.

        Keyword arguments go to the constructor.
        """
        upstream = cls(**kwargs)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name="fake-upstream", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(upstream.start(), loop).result(timeout=10)
            yield upstream
        finally:
            with suppress(Exception):
                asyncio.run_coroutine_threadsafe(upstream.stop(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    # -- the handler ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        path = request.path
        dialect: Dialect
        embedding = False
        if path.endswith("/embeddings"):
            dialect, embedding = DIALECTS["openai"], True
        elif path.endswith("/chat/completions"):
            dialect = DIALECTS["openai"]
        elif path.endswith("/messages"):
            dialect = DIALECTS["anthropic"]
        elif match := _GEMINI_PATH.search(path):
            dialect = DIALECTS["gemini"]
        else:
            return web.json_response(
                {"error": {"message": f"fake upstream: no route for {request.method} {path}"}},
                status=404,
            )
        if not isinstance(body, dict):
            error = dialect.error_body(400, "body is not a JSON object")
            return web.json_response(error, status=400)
        headers = {name.lower(): value for name, value in request.headers.items()}
        query = dict(request.query)
        if dialect.name == "gemini":
            assert match is not None
            model, stream = match["model"], match["method"] == "streamGenerateContent"
            embedding = match["method"] == "batchEmbedContents"
        else:
            model, stream = str(body.get("model", "")), bool(body.get("stream"))
        record = UpstreamRecord(
            protocol=dialect.name,
            method=request.method,
            path=path,
            url=request.path_qs,
            query=query,
            headers=headers,
            body=body,
            model=model,
            stream=stream,
            api_key=dialect.api_key(headers, query),
        )
        self.records.append(record)
        try:
            if embedding:
                return await self._embed(request, record, dialect)
            return await self._respond(request, record, dialect)
        except asyncio.CancelledError:
            record._finish("shutdown" if self._stopping else "disconnected")
            raise
        except ConnectionResetError:
            record._finish("shutdown" if self._stopping else "disconnected")
            return web.Response(status=499)
        finally:
            record._finished.set()

    async def _respond(
        self, request: web.Request, record: UpstreamRecord, dialect: Dialect
    ) -> web.StreamResponse:
        body = record.body
        texts, last_user = dialect.texts(body)
        try:
            directives = parse_directives(
                f"{last_user} [[fake:{self.fault}]]" if self.fault else last_user
            )
        except DirectiveError as exc:
            return await self._error(request, record, dialect, 400, f"fake upstream: {exc}")
        record.directives = directives
        if directives.stall_first_s:
            await asyncio.sleep(directives.stall_first_s)
        key = record.api_key
        if self.require_key and key is None:
            message = f"fake upstream: no API key in the {dialect.key_header} header"
            return await self._error(request, record, dialect, 401, message)
        problem = dialect.check_headers(record.headers)
        if problem is None and record.protocol == "gemini" and record.stream:
            if record.query.get("alt") != "sse":
                problem = "fake upstream: streamGenerateContent needs ?alt=sse"
        if problem is None and record.protocol == "anthropic" and "max_tokens" not in body:
            problem = "max_tokens: Field required"
        if problem is not None:
            return await self._error(request, record, dialect, 400, problem)
        if directives.flaky and random.random() < directives.flaky:
            message = "fake upstream: flaky, answering 503"
            return await self._error(request, record, dialect, 503, message)
        if directives.status is not None:
            # The key is echoed on purpose, as some vendors do: providers must redact it.
            message = (
                f"Incorrect API key provided: {key}."
                if directives.status == 401
                else f"fake upstream answered {directives.status} to key {key}"
            )
            if directives.leak:
                message = _leaky(message, key)
            return await self._error(
                request, record, dialect, directives.status, message, directives.retry_after
            )
        if directives.tool is not None and dialect.tool_schema(body, directives.tool) is None:
            message = f"fake upstream: the request has no function named {directives.tool}"
            return await self._error(request, record, dialect, 400, message)
        reply = self._plan(record, dialect, texts, directives)
        if record.stream:
            return await self._stream(request, record, dialect, reply, directives)
        return await self._complete(request, record, dialect, reply, directives)

    async def _embed(
        self, request: web.Request, record: UpstreamRecord, dialect: Dialect
    ) -> web.StreamResponse:
        """One embeddings call, OpenAI's or Gemini's (see `fake_upstream.embeddings`)."""
        body = record.body
        inputs: list[str | list[int]] | None
        if dialect.name == "openai":
            inputs = embeddings.openai_inputs(body)
        else:
            texts = embeddings.gemini_inputs(body)
            inputs = list(texts) if texts is not None else None
        if inputs is None:
            message = "fake upstream: the request has no valid input"
            return await self._error(request, record, dialect, 400, message)
        words = " ".join(item for item in inputs if isinstance(item, str))
        try:
            d = parse_directives(f"{words} [[fake:{self.fault}]]" if self.fault else words)
        except DirectiveError as exc:
            return await self._error(request, record, dialect, 400, f"fake upstream: {exc}")
        record.directives = d
        if d.stall_first_s:
            await asyncio.sleep(d.stall_first_s)
        if self.require_key and record.api_key is None:
            message = f"fake upstream: no API key in the {dialect.key_header} header"
            return await self._error(request, record, dialect, 401, message)
        if d.status is not None:
            message = f"fake upstream answered {d.status} to key {record.api_key}"
            return await self._error(request, record, dialect, d.status, message, d.retry_after)
        usage: Usage | None = None
        if dialect.name == "openai":
            if not d.no_usage:
                counted = sum(embeddings.input_count(item) for item in inputs)
                usage = Usage(input_tokens=_reported_input(d.usage_input, counted))
            dimensions = body.get("dimensions")
            answer = embeddings.openai_answer(
                inputs, record.model, dimensions if isinstance(dimensions, int) else None, usage
            )
        else:
            answer = embeddings.gemini_answer(body, [str(item) for item in inputs])
        record.usage, record.chunks_sent = usage, len(inputs)
        record._finish("completed")
        response = web.Response(
            status=200,
            body=dumps(answer),
            headers={"Content-Type": "application/json", **self._request_id(dialect)},
        )
        await response.prepare(request)
        await response.write_eof()
        return response

    def _plan(
        self, record: UpstreamRecord, dialect: Dialect, texts: list[str], d: Directives
    ) -> Reply:
        wanted = d.chunks if d.chunks is not None else self.default_chunks
        max_tokens = dialect.max_tokens(record.body)
        count = wanted if max_tokens is None else max(0, min(wanted, max_tokens))
        finish = d.finish
        if finish == "stop" and count < wanted:
            finish = "length"
        usage: Usage | None = None
        input_tokens = sum(len(text.split()) for text in texts) + 2 * len(texts)
        cached = min(d.cached, input_tokens)
        cache_write = 0
        if dialect.name == "anthropic":
            cache_write = min(d.cache_write, input_tokens - cached)
        thinking: tuple[str, ...] = ()
        if dialect.name == "anthropic" and d.thinking:
            thinking = tuple(f"think{i}" if i == 0 else f" think{i}" for i in range(d.thinking))
        reasoning = d.reasoning + len(thinking)
        if not d.no_usage:
            output = d.usage_output if d.usage_output is not None else count + reasoning
            usage = Usage(
                input_tokens=_reported_input(d.usage_input, input_tokens),
                output_tokens=output,
                cached_input_tokens=cached,
                reasoning_tokens=min(reasoning, output),
            )
        self._counter += 1
        prefix = {"openai": "chatcmpl-fake", "gemini": "fake", "anthropic": "msg_fake"}
        deltas = [(f"tok{i}" if i == 0 else f" tok{i}") + "x" * d.pad for i in range(count)]
        tool_call = None
        body = record.body
        schema = None
        if d.tool is not None and not dialect.ends_with_tool_result(body):
            schema = dialect.tool_schema(body, d.tool)
            tool_call = ToolCallPlan(id=f"call_fake{self._counter}", name=d.tool)
            finish = "tool_calls"
        else:
            schema = dialect.response_schema(body)
        if schema is not None:
            # JSON that follows the schema, in up to `count` pieces (one output token each).
            deltas = _pieces(dumps(instance(schema)).decode(), max(1, count))
            if usage is not None and d.usage_output is None:
                usage = replace(usage, output_tokens=len(deltas) + reasoning)
        choices = dialect.choices(body)
        if choices > 1 and usage is not None and d.usage_output is None:
            # Each answer's tokens count, as the vendors count them.
            usage = replace(usage, output_tokens=usage.output_tokens * choices)
        return Reply(
            id=f"{prefix[dialect.name]}-{self._counter}",
            model=record.model,
            created=int(time.time()),
            deltas=deltas,
            finish=dialect.effective_finish(finish),
            usage=usage,
            cache_write=cache_write,
            tool_call=tool_call,
            choices=choices,
            top_logprobs=dialect.top_logprobs(body),
            thinking=thinking,
        )

    def _request_id(self, dialect: Dialect) -> dict[str, str]:
        """The header real vendors name every request in, for support (OpenAI and Anthropic;
        Gemini names none)."""
        name = {"openai": "x-request-id", "anthropic": "request-id"}.get(dialect.name)
        return {name: f"req_fake{len(self.records)}"} if name else {}

    async def _error(
        self,
        request: web.Request,
        record: UpstreamRecord,
        dialect: Dialect,
        status: int,
        message: str,
        retry_after: float | None = None,
    ) -> web.StreamResponse:
        headers = {"Content-Type": "application/json", **self._request_id(dialect)}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        record.status = status
        response = web.Response(
            status=status, body=dumps(dialect.error_body(status, message)), headers=headers
        )
        # Outcomes are recorded before the bytes that reveal them, so a client that has read
        # the whole answer always finds its record up to date.
        record._finish("error_status")
        await response.prepare(request)
        await response.write_eof()
        return response

    async def _complete(
        self,
        request: web.Request,
        record: UpstreamRecord,
        dialect: Dialect,
        reply: Reply,
        d: Directives,
    ) -> web.StreamResponse:
        count = len(reply.deltas)
        if d.delay_ms:
            await asyncio.sleep(d.delay_ms * count / 1000)
        if d.stall_after is not None and d.stall_after < count:
            await asyncio.sleep(d.stall_s)
        if d.reset_after is not None or d.stop_after is not None:
            # Without a stream to cut, both mean: the connection dies with no response.
            await self._reset(request, record)
            return web.Response(status=499)
        if d.error_after is not None:
            message = f"fake upstream failed (key {record.api_key})"
            if d.leak:
                message = _leaky(message, record.api_key)
            return await self._error(request, record, dialect, d.error_status, message)
        response = web.Response(
            status=200,
            body=dumps(dialect.completion(reply)),
            headers={"Content-Type": "application/json", **self._request_id(dialect)},
        )
        record.text, record.chunks_sent = reply.text, count
        record.usage, record.finish_reason = reply.usage, reply.finish
        record._finish("completed")
        await response.prepare(request)
        await response.write_eof()
        return response

    async def _stream(
        self,
        request: web.Request,
        record: UpstreamRecord,
        dialect: Dialect,
        reply: Reply,
        d: Directives,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **self._request_id(dialect),
            },
        )
        await response.prepare(request)
        sent = 0
        stalled = False
        for frame in dialect.stream_frames(reply, record.body):
            # Each cut happens after `sent` deltas, before whatever frame would come next.
            if d.stop_after is not None and sent >= d.stop_after:
                record._finish("stopped")
                await response.write_eof()
                return response
            if d.reset_after is not None and sent >= d.reset_after:
                await self._reset(request, record)
                return response
            if d.error_after is not None and sent >= d.error_after:
                message = f"fake upstream failed mid-stream (key {record.api_key})"
                if d.leak:
                    message = _leaky(message, record.api_key)
                record._finish("error_event")
                await response.write(dialect.stream_error(d.error_status, message))
                await response.write_eof()
                return response
            if d.stall_after is not None and not stalled and sent >= d.stall_after:
                stalled = True
                await asyncio.sleep(d.stall_s)
            if ((frame.text is not None and sent) or frame.thought) and d.delay_ms:
                await asyncio.sleep(d.delay_ms / 1000)
            if frame.text is not None:
                sent += 1
                record.chunks_sent = sent
                record.text += frame.text
            if frame.usage:
                record.usage = reply.usage
            await response.write(frame.data)
        record.finish_reason = reply.finish
        record._finish("completed")
        await response.write_eof()
        return response

    async def _reset(self, request: web.Request, record: UpstreamRecord) -> None:
        record._finish("reset")
        await asyncio.sleep(RESET_GRACE_S)
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: close() sends an RST instead of a FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


def _pieces(text: str, count: int) -> list[str]:
    """`text` cut into at most `count` pieces of about the same length."""
    size = max(1, -(-len(text) // count))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        with suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _reported_input(raw: str | None, counted: int) -> int:
    """The input count to report: the true one, or the directive's number as written (a JSON
    float such as ``1e23`` stays a float, as a broken upstream would send it)."""
    if raw is None:
        return counted
    try:
        return int(raw)
    except ValueError:
        return float(raw)  # type: ignore[return-value]  # deliberately not an int


LEAKED_HOST = "inference-7.internal.vendor.example:8443"
LEAKED_ORGANISATION = "org-FakeOrg0123456789"


def _leaky(message: str, key: str | None) -> str:
    """`message` with what vendors' error texts have been seen to carry (see `leak`)."""
    masked = f"{key[:8]}****{key[-4:]}" if key and len(key) > 12 else "sk-none****none"
    return (
        f"{message}; Incorrect API key provided: {masked}. Request to {LEAKED_HOST} failed "
        f"for organization {LEAKED_ORGANISATION}"
    )
