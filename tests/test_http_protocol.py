"""Connections that trickle their request's head are closed; well-behaved ones are not.

Raw sockets send a request line and then a header a byte at a time, never ending it, as a
slowloris client does. Both of uvicorn's HTTP/1.1 protocols are tested with a short deadline
(the classes `tollgate serve` picks from), then `tollgate serve` itself with
``TOLLGATE_HEADER_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import ServeProcess, ServerThread, serve_env
from tollgate_server.http_protocol import TollgateH11Protocol, TollgateHttpToolsProtocol

pytestmark = [pytest.mark.e2e]

DEADLINE = 1.0


async def _small_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers ``ok``; ``/slow`` answers after twice the deadline, to show that the deadline
    is over once the head is complete."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(2 * DEADLINE)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _quick(protocol: type[Any]) -> type[Any]:
    return type(f"Quick{protocol.__name__}", (protocol,), {"header_timeout": DEADLINE})


PROTOCOLS = [TollgateH11Protocol]
if TollgateHttpToolsProtocol is not None:
    PROTOCOLS.append(TollgateHttpToolsProtocol)


@pytest.fixture(params=PROTOCOLS, ids=lambda p: p.__name__)
def small_server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    with ServerThread(_small_app, http=_quick(request.param)) as running:
        yield running


def trickle(port: int, count: int, *, within: float, send_nothing: bool = False) -> list[float]:
    """Open `count` connections that send a request line and then one byte of a header every
    0.1 s; return, for each, the seconds after which the server closed it (within `within`,
    else the test fails)."""
    started = time.monotonic()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        if not send_nothing:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tollgate\r\nX-Slow: ")
        sock.setblocking(False)
        sockets.append(sock)
    closed: dict[int, float] = {}
    try:
        while len(closed) < count and time.monotonic() - started < within:
            for index, sock in enumerate(sockets):
                if index in closed:
                    continue
                try:
                    if sock.recv(4096) == b"":
                        closed[index] = time.monotonic() - started
                        continue
                except BlockingIOError:
                    pass
                except OSError:  # reset
                    closed[index] = time.monotonic() - started
                    continue
                if not send_nothing:
                    try:
                        sock.send(b"a")
                    except OSError:
                        closed[index] = time.monotonic() - started
            time.sleep(0.1)
    finally:
        for sock in sockets:
            sock.close()
    assert len(closed) == count, f"{count - len(closed)} of {count} connections still open"
    return list(closed.values())


def test_a_connection_that_trickles_its_headers_is_closed(small_server: ServerThread) -> None:
    times = trickle(small_server.port, 30, within=DEADLINE + 4)
    assert min(times) >= DEADLINE * 0.9  # not before its time


def test_a_connection_that_sends_nothing_is_closed(small_server: ServerThread) -> None:
    trickle(small_server.port, 5, within=DEADLINE + 4, send_nothing=True)


def test_the_408_is_a_json_envelope(small_server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", small_server.port), timeout=DEADLINE + 4) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"request_timeout"' in body


def test_well_behaved_clients_are_not_cut(small_server: ServerThread) -> None:
    with httpx.Client(base_url=small_server.url, timeout=10) as client:
        assert client.get("/").text == "ok"
        time.sleep(DEADLINE / 2)
        assert client.get("/").text == "ok"  # the same kept-alive connection, a new head
        time.sleep(DEADLINE * 1.5)  # idle past the deadline: uvicorn's keep-alive governs
        # An answer that takes longer than the head's deadline once the head is in.
        assert client.get("/slow").text == "ok"


def test_tollgate_serve_closes_trickling_connections(database_url: str, tmp_path: Path) -> None:
    env = serve_env(
        TOLLGATE_DATABASE_URL=database_url,
        TOLLGATE_DATA_DIR=str(tmp_path),
        TOLLGATE_HEADER_TIMEOUT=str(DEADLINE),
    )
    with ServeProcess(env) as serving:
        times = trickle(serving.port, 100, within=DEADLINE + 6)
        assert min(times) >= DEADLINE * 0.9
        # Still serving everyone else.
        assert httpx.get(f"{serving.url}/healthz", timeout=10).status_code == 200
        assert serving.stop() == 0
