"""uvicorn's HTTP/1.1 protocols with a deadline on each request's head.

Neither h11 nor httptools bounds the time a client may take to send its request line and
headers, and uvicorn's keep-alive timeout stops at the first byte. A client that trickles a
header a byte at a time holds its connection (and a file descriptor, and a little memory) for
as long as it likes: a few hundred such clients exhaust a server. Here a connection whose head
is not complete within `TOLLGATE_HEADER_TIMEOUT` seconds of its first byte (or of connecting) is
answered 408 and closed. Once the head is complete the deadline is gone: bodies and streamed
answers are timed by the gateway, not here.

`tollgate serve` passes `http_protocol()` to uvicorn; the classes are module-level so that
uvicorn's worker processes can import them.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from tollgate_server.settings import load_settings

_TIMEOUT_BODY = (
    b'{"error":{"code":"request_timeout",'
    b'"message":"the request line and headers took too long","request_id":""}}'
)
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(_TIMEOUT_BODY)
) + _TIMEOUT_BODY


@functools.cache
def configured_header_timeout() -> float:
    """`Settings.header_timeout`, read once per process (serve has validated it already)."""
    return load_settings().header_timeout


class _HeadDeadline:
    """The deadline, shared by both protocols; each says when a head begins and ends."""

    header_timeout: float | None = None
    """Seconds; None means the configured `TOLLGATE_HEADER_TIMEOUT` (tests set their own)."""
    _head_timer: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def _head_begins(self) -> None:
        if self._head_timer is None:
            timeout = self.header_timeout or configured_header_timeout()
            self._head_timer = self.loop.call_later(timeout, self._head_too_slow)

    def _head_ends(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        # A 408 only when no earlier answer on this connection is still being written.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


class HeaderTimeoutH11Protocol(_HeadDeadline, H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_begins()

    def data_received(self, data: bytes) -> None:
        # IDLE: h11 has not yet seen a whole request line and headers of the next request.
        if self.conn.their_state is h11.IDLE:
            self._head_begins()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._head_ends()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_ends()
        super().connection_lost(exc)


def _httptools_protocol() -> type[Any] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is optional: uvicorn then serves with h11
        return None

    class HeaderTimeoutHttpToolsProtocol(_HeadDeadline, HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_begins()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_begins()

        def on_headers_complete(self) -> None:
            self._head_ends()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_ends()
            super().connection_lost(exc)

    HeaderTimeoutHttpToolsProtocol.__module__ = __name__
    HeaderTimeoutHttpToolsProtocol.__qualname__ = "HeaderTimeoutHttpToolsProtocol"
    return HeaderTimeoutHttpToolsProtocol


HeaderTimeoutHttpToolsProtocol = _httptools_protocol()


def http_protocol() -> type[Any]:
    """What uvicorn's ``http="auto"`` would pick (httptools when installed, else h11), with
    the head deadline."""
    return HeaderTimeoutHttpToolsProtocol or HeaderTimeoutH11Protocol
