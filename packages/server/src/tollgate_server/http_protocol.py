"""uvicorn's HTTP/1.1 protocols, with two things they lack: a deadline on each request's head,
and an answer for a client that half-closes its socket.

**The head deadline.** Neither h11 nor httptools bounds the time a client may take to send its
request line and headers, and uvicorn's keep-alive timeout stops at the first byte. A client that
trickles a header a byte at a time holds its connection (and a file descriptor, and a little
memory) for as long as it likes: a few hundred such clients exhaust a server. Here a connection
whose head is not complete within `TOLLGATE_HEADER_TIMEOUT` seconds of its first byte (or of
connecting) is answered 408 and closed. Once the head is complete the deadline is gone: bodies
and streamed answers are timed by the gateway, not here.

**Half-closed clients.** A client may send a complete request and then shut down its sending side
(``shutdown(SHUT_WR)``, ``curl --no-keepalive`` through some proxies, scripts using ``nc -N``): it
still waits for the answer. uvicorn treats any end of input as a hang-up and closes the
connection, so such a client got no answer. At the TCP level a half-close and a full close look
the same (a FIN), so on an end of input that arrives before the response has started, this
protocol keeps the connection open and probes the peer with an interim ``100 Continue`` (which
every HTTP/1.1 client must accept before a final response): a peer that has really gone answers
the probe with a reset, and the connection is then closed as before, which the gateway sees as a
hang-up within moments. A peer that only half-closed gets its answer, and the connection is
closed after it. An end of input after the response has started is still a hang-up: the body
cannot carry a probe.

`tollgate serve` passes `http_protocol()` to uvicorn; the classes are module-level so that
uvicorn's worker processes can import them.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
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


PROBE = b"HTTP/1.1 100 Continue\r\n\r\n"
PROBE_CHECKS_SECONDS = (0.05, 0.25, 1.0, 3.0)
"""When to look for the peer's reset after the probe: soon on loopback, later across a network.
A reset that comes later still still ends the connection at the answer's first write."""
_TCP_CLOSE = 7
"""Linux's TCP_CLOSE state: the peer reset the connection."""
_TCP_INFO = getattr(socket, "TCP_INFO", None)


def _peer_reset(transport: Any) -> bool:
    sock = transport.get_extra_info("socket")
    if sock is None or _TCP_INFO is None:
        return False
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return True
        state = struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1))[0]
    except OSError:
        return True
    return bool(state == _TCP_CLOSE)


class _HalfCloseMixin:
    """Keep the connection open on an end of input before the response (see the module)."""

    transport: Any
    loop: Any
    cycle: Any
    _half_closed = False

    def eof_received(self) -> bool | None:
        cycle = self.cycle
        if (
            _TCP_INFO is None
            or cycle is None
            or cycle.response_started
            or cycle.response_complete
            or getattr(cycle, "more_body", False)
        ):
            return None  # as uvicorn does: the transport closes, the request sees a hang-up
        self._half_closed = True
        self.transport.write(PROBE)
        for delay in PROBE_CHECKS_SECONDS:
            self.loop.call_later(delay, self._check_peer)
        return True  # keep the sending side open for the answer

    def _check_peer(self) -> None:
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or cycle.response_started:
            return
        if _peer_reset(self.transport):
            self.transport.close()  # connection_lost follows: the request sees a hang-up

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if self._half_closed and not self.transport.is_closing():
            # The client can send nothing more on this connection: close it after the answer.
            self.transport.close()


class TollgateH11Protocol(_HalfCloseMixin, _HeadDeadline, H11Protocol):  # type: ignore[misc]
    """uvicorn's h11 protocol, with the head deadline, answering half-closed clients."""

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

    class TollgateHttpToolsProtocol(_HalfCloseMixin, _HeadDeadline, HttpToolsProtocol):  # type: ignore[misc]
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

    TollgateHttpToolsProtocol.__module__ = __name__
    TollgateHttpToolsProtocol.__qualname__ = "TollgateHttpToolsProtocol"
    return TollgateHttpToolsProtocol


TollgateHttpToolsProtocol = _httptools_protocol()


def http_protocol() -> type[Any]:
    """What uvicorn's ``http="auto"`` would pick (httptools when installed, else h11), with
    the head deadline and the answer for half-closed clients."""
    return TollgateHttpToolsProtocol or TollgateH11Protocol
