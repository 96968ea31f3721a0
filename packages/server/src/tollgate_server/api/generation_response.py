"""The ASGI response that carries one generation to a client in OpenAI's chat format.

The generation itself (admit, stream, settle, stop) is `tollgate_server.services.gateway.
Generation`, which knows no ASGI; this response owns the connection: it admits, starts the
generation with itself as the sink, and watches for the client hanging up, which cancels the
generation at once (and with it the upstream call). Two tasks per request, as before: the
generation and the disconnect listener (plus the keep-alive while a stream is silent).
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from tollgate_core import TextDelta, ToolCallDelta

from tollgate_server.api.errors import error_response
from tollgate_server.errors import Refused
from tollgate_server.openai_format import ChunkWriter, completion_body
from tollgate_server.runtime import Runtime
from tollgate_server.services.answers import Answer
from tollgate_server.services.gateway import ClientGone, Generation, Plan


class GenerationResponse(Response):
    """Admits, runs and answers one generation; the OpenAI chat format's `GenerationSink`.

    It subclasses Starlette's `Response` only so FastAPI passes it through untouched; it
    writes its own messages.
    """

    def __init__(self, runtime: Runtime, plan: Plan, generation: Generation | None = None) -> None:
        # Deliberately not calling Response.__init__: there is no body to render.
        self.background = None
        self.raw_headers = []
        self.generation = generation or Generation(runtime, plan)
        """The engine; another API's response passes its own (`api.embedding_response`)."""
        self.plan = plan
        self.request_id = ""
        self.headers_sent = False
        self.writer = ChunkWriter(generation_id=plan.generation_id, model=plan.model.name)
        self._send: Send | None = None
        self._write_lock = asyncio.Lock()
        """Deltas and keep-alive comments come from two tasks; messages must not interleave."""

    # --- ASGI entry ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        self.request_id = str(state.get("request_id", ""))
        generation = self.generation
        generation.log = state.setdefault("log", {})
        self._send = send
        try:
            await generation.admit()
        except Refused as exc:
            await self.fail(exc)
            return
        work = generation.start(self)
        listener = asyncio.create_task(_wait_for_disconnect(receive))
        try:
            try:
                await asyncio.wait({work, listener}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                # The server is tearing this request down: end the generation, let it settle.
                generation.stop("shutdown")
                await asyncio.shield(asyncio.wait({work}))
                raise
            if not work.done():
                # The client hung up: cancelling the work closes the upstream connection.
                work.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientGone):
                await work
        finally:
            listener.cancel()

    # --- the sink -----------------------------------------------------------------------

    async def delta(self, delta: TextDelta) -> None:
        data = self.writer.delta(delta)
        async with self._write_lock:
            await self._stream_locked(data)

    async def tool_call(self, delta: ToolCallDelta) -> None:
        data = self.writer.tool_call(delta)
        async with self._write_lock:
            await self._stream_locked(data)

    writes_reasoning = False
    """OpenAI's chat format has no place for the model's thinking."""

    async def reasoning(self, text: str) -> None:
        """Never called: this format does not write thinking (`writes_reasoning`)."""

    async def keepalive(self) -> None:
        """During long silences (a slow first token, a pause mid-stream) an SSE comment keeps
        proxies and clients from closing the connection."""
        async with self._write_lock:
            await self._stream_locked(ChunkWriter.KEEPALIVE)

    def ending(self, answer: Answer) -> bytes:
        writer = self.writer
        if self.plan.stream:
            return (
                writer.finish(answer.choices)
                + writer.usage(answer.usage, answer.charge)
                + ChunkWriter.DONE
            )
        return completion_body(
            generation_id=self.plan.generation_id,
            model=self.plan.model.name,
            choices=answer.choices,
            usage=answer.usage,
            cost=answer.charge,
        )

    async def finish(self, ending: bytes) -> None:
        """Write `ending`: a stream's last chunks, or the whole JSON body (every format)."""
        async with self._write_lock:
            if self.plan.stream:
                await self._stream_locked(ending, more=False)
            else:
                await self._start(200, "application/json")
                await self._send_body(ending, more=False)

    async def fail(self, error: Refused) -> None:
        """A status before the stream began, an SSE error event after."""
        try:
            if not self.headers_sent:
                await self._send_error(error)
            else:
                async with self._write_lock:
                    await self._send_body(
                        ChunkWriter.error(error.code, error.message, self.request_id), more=False
                    )
        except ClientGone:
            pass

    # --- writing ------------------------------------------------------------------------

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

    async def _stream_locked(self, data: bytes, *, more: bool = True) -> None:
        """Write `data` on the stream, the write lock held. A stream that has not begun is
        begun: its headers, then its opening (`_opening`) in the same write as `data`."""
        if not self.headers_sent:
            await self._start(200, "text/event-stream")
            data = self._opening() + data
        await self._raw_send({"type": "http.response.body", "body": data, "more_body": more})

    def _opening(self) -> bytes:
        """What a stream says before its first delta: each choice's role chunk."""
        return self.writer.role(self.plan.choices)

    async def _send_body(self, data: bytes, *, more: bool = True) -> None:
        await self._raw_send({"type": "http.response.body", "body": data, "more_body": more})

    async def _raw_send(self, message: Message) -> None:
        assert self._send is not None
        try:
            await self._send(message)
        except OSError as exc:  # uvicorn's ClientDisconnected is an OSError
            raise ClientGone() from exc

    async def _send_error(self, exc: Refused) -> None:
        answer = error_response(exc, self.request_id)
        with contextlib.suppress(ClientGone):
            async with self._write_lock:
                headers = [(k, v) for k, v in answer.raw_headers if k != b"content-type"]
                await self._start(answer.status_code, "application/json", headers)
                await self._send_body(bytes(answer.body), more=False)


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
