"""`tollgate_core.streaming.stream_events`: the upstream connection after a stream's end.

A server that writes the chunked encoding's last chunk on its own (aiohttp's ``write_eof``,
most frameworks) sends it a packet after ``data: [DONE]``. The stream must end at ``[DONE]``
without waiting for that packet, and the connection must still go back to the pool, not be
closed: the next request would otherwise pay for a new connection (a TCP and TLS handshake).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from tollgate_core import StreamEnd, StreamEvent, TextDelta, upstream
from tollgate_core.streaming import NO_EVENTS, stream_events

CHUNK = b"data: hi\n\n"
DONE = b"data: [DONE]\n\n"


class Parser:
    """The least of a provider's parser: each event a delta, until ``[DONE]``."""

    done = False

    @property
    def finished(self) -> bool:
        return self.done

    def read(self, event: str | None, data: bytes) -> tuple[StreamEvent, ...]:
        if data == b"[DONE]":
            self.done = True
            return NO_EVENTS
        return (TextDelta(data.decode()),)

    def end(self) -> StreamEnd:
        return StreamEnd(finish_reason="stop", usage=None)


def sse_server(
    after_done: Callable[[web.StreamResponse], object],
) -> Callable[[web.Request], object]:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(CHUNK + DONE)
        await after_done(response)  # type: ignore[misc]
        return response

    return handler


async def serve(handler: Callable[[web.Request], object]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        await runner.cleanup()


async def one_stream(http: aiohttp.ClientSession, url: str) -> tuple[list[StreamEvent], float]:
    started = time.perf_counter()
    events = [
        event async for event in stream_events(http, url, body=b"{}", headers={}, parser=Parser())
    ]
    return events, time.perf_counter() - started


class CountingConnector(aiohttp.TCPConnector):
    opened = 0

    async def _create_connection(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        self.opened += 1
        return await super()._create_connection(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_last_chunk_a_packet_behind_keeps_the_connection_without_delaying_the_end() -> None:
    async def later_eof(response: web.StreamResponse) -> None:
        await asyncio.sleep(0.2)
        await response.write_eof()

    connector = CountingConnector()
    async with aiohttp.ClientSession(connector=connector) as http:
        async for url in serve(sse_server(later_eof)):
            events, seconds = await one_stream(http, url)
            assert [type(e) for e in events] == [TextDelta, StreamEnd]
            assert seconds < 0.15  # ended at [DONE], not at the last chunk 0.2 s later
            await asyncio.sleep(0.4)  # the last chunk came; the connection is back in the pool
            await one_stream(http, url)
    assert connector.opened == 1


@pytest.mark.anyio
async def test_a_body_that_never_ends_after_done_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream, "BODY_END_GRACE_SECONDS", 0.1)
    stop = asyncio.Event()

    async def never_ends(response: web.StreamResponse) -> None:
        await stop.wait()

    connector = CountingConnector()
    async with aiohttp.ClientSession(connector=connector) as http:
        async for url in serve(sse_server(never_ends)):
            await one_stream(http, url)
            await asyncio.sleep(0.3)  # the grace ran out: that connection was closed
            await one_stream(http, url)
            stop.set()
    assert connector.opened == 2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_session_closed_while_a_body_ends_leaves_no_error_behind() -> None:
    errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    stop = asyncio.Event()

    async def never_ends(response: web.StreamResponse) -> None:
        await stop.wait()

    async for url in serve(sse_server(never_ends)):
        async with aiohttp.ClientSession() as http:
            await one_stream(http, url)
        await asyncio.sleep(0.05)  # the wait for the body's end saw its connection closed
        stop.set()
    gc.collect()
    await asyncio.sleep(0)
    assert errors == []
