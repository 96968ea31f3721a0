"""uvicorn's HTTP protocol, taught to answer a client that half-closes its socket.

A client may send a complete request and then shut down its sending side (``shutdown(SHUT_WR)``,
``curl --no-keepalive`` through some proxies, scripts using ``nc -N``): it still waits for the
answer. uvicorn treats any end of input as a hang-up and closes the connection, so such a client
got no answer. At the TCP level a half-close and a full close look the same (a FIN), so on an end
of input that arrives before the response has started, this protocol keeps the connection open
and probes the peer with an interim ``100 Continue`` (which every HTTP/1.1 client must accept
before a final response): a peer that has really gone answers the probe with a reset, and the
connection is then closed as before, which the gateway sees as a hang-up within moments. A peer
that only half-closed gets its answer, and the connection is closed after it.

An end of input after the response has started is still a hang-up, as before: the body cannot
carry a probe.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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


class HalfCloseHttpToolsProtocol(_HalfCloseMixin, HttpToolsProtocol):  # type: ignore[misc]
    """uvicorn's httptools protocol, answering half-closed clients."""


class HalfCloseH11Protocol(_HalfCloseMixin, H11Protocol):  # type: ignore[misc]
    """uvicorn's h11 protocol, answering half-closed clients."""


def http_protocol() -> type[HttpToolsProtocol] | type[H11Protocol]:
    """The protocol class to give uvicorn (``http=``): httptools when installed, as uvicorn's
    own ``auto`` choice does, else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return HalfCloseH11Protocol
    return HalfCloseHttpToolsProtocol
