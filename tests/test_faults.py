"""Staying up and losing nothing: limits, upstream faults, slow clients, crashes, shutdown.

Each test runs over real sockets against a real database, and the suite's ledger invariant
check runs after each one (no hold left pending, every generation settled once).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    JWT_SECRET,
    User,
    ensure_test_models,
    make_settings,
    upstream_env,
)
from support import ServeProcess, ServerThread, clear_of_minute_end, serve_env
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_server.app import create_app

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


@pytest.fixture
def custom_server(
    database_url: str,
    tmp_path: Path,
    provider_env: dict[str, str],
    admin_headers: dict[str, str],
) -> Callable[..., Any]:
    """Start an extra in-thread server on the test database with some settings changed."""

    @contextmanager
    def start(**overrides: Any) -> Iterator[httpx.Client]:
        settings = make_settings(database_url, tmp_path, **overrides)
        with ServerThread(create_app(settings, provider_env=provider_env)) as running:
            with httpx.Client(base_url=running.url, timeout=30) as client:
                ensure_test_models(client, admin_headers)
                yield client

    return start


def _ask(content: str, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake-openai",
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def _last_generation(client: httpx.Client, user: User) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = client.get("/v1/generations", headers=user.headers).json()["data"]
        if data and data[0]["status"] != "running":
            return data[0]  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("the generation did not settle")


def _events(response: httpx.Response) -> list[str]:
    return [e for e in response.text.split("\n\n") if e]


# --- upstream faults -----------------------------------------------------------------------


def test_first_token_timeout_is_504_and_free(
    custom_server: Callable[..., Any], make_user: Callable[..., User], test_models: object
) -> None:
    user = make_user(credits=1000)
    with custom_server(upstream_first_token_timeout=0.5) as client:
        response = client.post(
            "/v1/chat/completions", headers=user.headers, json=_ask("hi [[fake:stall_first_s=5]]")
        )
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "upstream_timeout"
        generation = _last_generation(client, user)
    assert generation["status"] == "upstream_timeout"
    assert generation["cost"] == "0"


def test_idle_timeout_mid_stream_ends_with_an_error_event(
    custom_server: Callable[..., Any], make_user: Callable[..., User], test_models: object
) -> None:
    user = make_user(credits=1000)
    with custom_server(upstream_idle_timeout=0.5) as client:
        response = client.post(
            "/v1/chat/completions",
            headers=user.headers,
            json=_ask("hi [[fake:chunks=10,stall_after=2,stall_s=5]]"),
        )
        assert response.status_code == 200
        events = _events(response)
        assert '"upstream_timeout"' in events[-1] and '"error"' in events[-1]
        assert sum('"delta":{"content":' in e for e in events) == 2
        generation = _last_generation(client, user)
    assert generation["status"] == "upstream_timeout"
    assert (
        Decimal(generation["cost"]) == generation["input_tokens"] + 2 * generation["output_tokens"]
    )


def test_keepalive_comments_during_silence(
    custom_server: Callable[..., Any], make_user: Callable[..., User], test_models: object
) -> None:
    user = make_user(credits=1000)
    with custom_server(keepalive_seconds=0.2) as client:
        response = client.post(
            "/v1/chat/completions",
            headers=user.headers,
            json=_ask("hi [[fake:chunks=3,stall_after=1,stall_s=1]]"),
        )
    assert response.status_code == 200
    assert ": keep-alive" in response.text
    assert response.text.rstrip().endswith("data: [DONE]")


def test_maximum_generation_time_ends_the_stream_and_charges_what_it_made(
    custom_server: Callable[..., Any], make_user: Callable[..., User], test_models: object
) -> None:
    user = make_user(credits=1000)
    with custom_server(max_generation_seconds=0.6) as client:
        response = client.post(
            "/v1/chat/completions",
            headers=user.headers,
            json=_ask("hi [[fake:chunks=100,delay_ms=50]]", max_tokens=200),
        )
        events = _events(response)
        assert '"generation_timeout"' in events[-1]
        generation = _last_generation(client, user)
    assert generation["status"] == "generation_timeout"
    assert 3 < generation["output_tokens"] < 100
    assert Decimal(generation["cost"]) > 0


@pytest.mark.parametrize("fault", ["reset_after=2", "stop_after=2"])
def test_upstream_cut_off_mid_stream(
    fault: str, api: httpx.Client, make_user: Callable[..., User], test_models: object
) -> None:
    user = make_user(credits=1000)
    response = api.post(
        "/v1/chat/completions", headers=user.headers, json=_ask(f"hi [[fake:chunks=10,{fault}]]")
    )
    assert response.status_code == 200
    last = _events(response)[-1]
    assert '"error"' in last and '"upstream_error"' in last
    generation = _last_generation(api, user)
    assert generation["status"] == "upstream_error" and generation["estimated"] is True


def test_slow_reader_gets_everything_and_pays_the_exact_usage(
    api: httpx.Client, make_user: Callable[..., User], test_models: object
) -> None:
    user = make_user(credits=1000)
    texts = []
    with api.stream(
        "POST",
        "/v1/chat/completions",
        headers=user.headers,
        json=_ask("hi [[fake:chunks=30]]", max_tokens=30),
    ) as response:
        for line in response.iter_lines():
            time.sleep(0.01)
            texts.append(line)
    assert texts[-2:] == ["data: [DONE]", ""] or texts[-1] == "data: [DONE]"
    generation = _last_generation(api, user)
    assert generation["status"] == "completed" and generation["estimated"] is False
    assert generation["output_tokens"] == 30


# --- limits ----------------------------------------------------------------------------------


def test_concurrent_generations_per_account_are_capped(
    custom_server: Callable[..., Any], make_user: Callable[..., User], test_models: object
) -> None:
    user = make_user(credits=1000)
    with custom_server(max_concurrent_generations=2) as client:
        slow = _ask("hi [[fake:chunks=5,delay_ms=300]]")
        results: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    client.post("/v1/chat/completions", headers=user.headers, json=slow).status_code
                )
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.4)
        third = client.post("/v1/chat/completions", headers=user.headers, json=_ask("hi"))
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "too_many_concurrent_requests"
        for thread in threads:
            thread.join()
        assert results == [200, 200]
        # The slots are free again once the streams ended.
        assert (
            client.post("/v1/chat/completions", headers=user.headers, json=_ask("hi")).status_code
            == 200
        )


def test_a_client_that_stops_reading_is_client_not_reading_not_an_upstream_timeout(
    custom_server: Callable[..., Any], make_user: Callable[..., User], test_models: object
) -> None:
    """A client that never reads its stream fills the socket until the gateway's writes stall;
    that is the client's doing, named for it, and it pays for the deltas written to it."""
    user = make_user(credits=10_000)
    with custom_server(upstream_idle_timeout=1.0, keepalive_seconds=60) as client:
        body = orjson.dumps(_ask("hi [[fake:chunks=1000,pad=8000]]", max_tokens=1000))
        host, port = str(client.base_url.host), int(client.base_url.port or 80)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive window, so a few hundred kilobytes fill the path.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.connect((host, port))
        try:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                + f"Authorization: Bearer {user.token}\r\n".encode()
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            generation = _last_generation(client, user)  # never reading a byte meanwhile
        finally:
            sock.close()
    assert generation["status"] == "client_not_reading"
    assert generation["error_code"] == "client_not_reading"
    assert 0 < generation["output_tokens"] <= 1000
    assert Decimal(generation["cost"]) == min(
        Decimal(generation["hold"]), generation["input_tokens"] + 2 * generation["output_tokens"]
    )


def test_a_funded_account_over_the_concurrency_cap_is_told_429_never_402(
    custom_server: Callable[..., Any], make_user: Callable[..., User], test_models: object
) -> None:
    """The refusal is named by the admission statement itself: a second read, taken after a
    slot had freed up, once blamed the balance (402) for what the cap (429) had refused."""
    user = make_user(credits=100_000)
    with custom_server(max_concurrent_generations=2) as client:
        body = _ask("hi [[fake:chunks=1]]", stream=False, max_tokens=1)

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=client.base_url, timeout=30) as http:
                return await asyncio.gather(
                    *(
                        http.post("/v1/chat/completions", headers=user.headers, json=body)
                        for _ in range(120)
                    )
                )

        codes = [r.status_code for r in asyncio.run(burst())]
    assert set(codes) <= {200, 429}, sorted(set(codes))
    assert codes.count(200) >= 2 and codes.count(429) >= 1


def test_requests_per_minute_are_limited(
    custom_server: Callable[..., Any], make_user: Callable[..., User], test_models: object
) -> None:
    user = make_user(credits=1000)
    with custom_server(requests_per_minute=2) as client:
        clear_of_minute_end()
        statuses = [
            client.post("/v1/chat/completions", headers=user.headers, json=_ask("hi", stream=False))
            for _ in range(3)
        ]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[2].json()["error"]["code"] == "rate_limited"
    assert 1 <= int(statuses[2].headers["retry-after"]) <= 60


def test_the_per_minute_limit_is_the_accounts_across_all_its_keys(
    custom_server: Callable[..., Any], make_user: Callable[..., User], test_models: object
) -> None:
    """One window per account: three keys do not triple the limit (each key once had its own)."""
    user = make_user(credits=1000)
    with custom_server(requests_per_minute=2) as client:
        secrets = [
            client.post("/v1/keys", headers=user.headers, json={"name": f"k{i}"}).json()["key"]
            for i in range(3)
        ]
        clear_of_minute_end()
        statuses = [
            client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {secret}"},
                json=_ask("hi", stream=False),
            )
            for secret in secrets
        ]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[2].json()["error"]["code"] == "rate_limited"


def test_api_keys_per_account_are_capped(
    custom_server: Callable[..., Any], make_user: Callable[..., User]
) -> None:
    user = make_user()
    with custom_server(max_api_keys_per_account=2) as client:
        made = [
            client.post("/v1/keys", headers=user.headers, json={"name": f"k{i}"}) for i in range(3)
        ]
        assert [r.status_code for r in made] == [201, 201, 409]
        assert made[2].json()["error"]["code"] == "too_many_api_keys"
        assert len(client.get("/v1/keys", headers=user.headers).json()) == 2
        # A revoked key no longer counts.
        revoked = client.delete(f"/v1/keys/{made[0].json()['id']}", headers=user.headers)
        assert revoked.status_code in (200, 204), revoked.text
        again = client.post("/v1/keys", headers=user.headers, json={"name": "k3"})
        assert again.status_code == 201


def test_chunked_body_without_length_is_cut_off_at_the_limit(
    api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()

    def body() -> Iterator[bytes]:
        yield b'{"model": "fake-openai", "messages": [{"role": "user", "content": "'
        for _ in range(2048):
            yield b"x" * 1024
        yield b'"}]}'

    response = api.post(
        "/v1/chat/completions",
        headers={**user.headers, "content-type": "application/json"},
        content=body(),
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


# --- the database going away ------------------------------------------------------------------


def test_database_restart_is_survived(
    tmp_path: Path, upstream: FakeUpstream, admin_headers: dict[str, str]
) -> None:
    import asyncio

    from support import EmbeddedCluster
    from tollgate_server.db.migrate import upgrade
    from tollgate_server.services.invariants import find_violations, pending_generations

    with EmbeddedCluster(tmp_path / "pg") as cluster:
        upgrade(cluster.url)
        settings = make_settings(cluster.url, tmp_path)
        with ServerThread(create_app(settings, provider_env=upstream_env(upstream))) as server:
            client = httpx.Client(base_url=server.url, timeout=30)
            login = client.post(
                "/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
            admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
            ensure_test_models(client, admin)
            email = f"db-{uuid.uuid4().hex[:8]}@example.com"
            created = client.post(
                "/v1/auth/register", json={"email": email, "password": "password-123"}
            ).json()
            client.post(
                f"/v1/admin/users/{created['id']}/credits",
                json={"amount": "100000", "reason": "t"},
                headers={**admin, "Idempotency-Key": uuid.uuid4().hex},
            )
            token = client.post(
                "/v1/auth/login", json={"email": email, "password": "password-123"}
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            ask = _ask("hi", stream=False)
            assert client.post("/v1/chat/completions", headers=headers, json=ask).status_code == 200

            # Load runs through the whole outage: every answer is a 200 or a clean 503.
            statuses: list[int] = []
            stop_load = threading.Event()

            def load() -> None:
                with httpx.Client(base_url=server.url, timeout=30) as loader:
                    while not stop_load.is_set():
                        statuses.append(
                            loader.post(
                                "/v1/chat/completions", headers=headers, json=ask
                            ).status_code
                        )

            loaders = [threading.Thread(target=load) for _ in range(4)]
            for thread in loaders:
                thread.start()
            time.sleep(0.3)
            cluster.stop()
            time.sleep(0.5)
            stop_load.set()
            for thread in loaders:
                thread.join()
            assert set(statuses) <= {200, 503}, statuses
            assert 503 in statuses and 200 in statuses
            seen = len(upstream.records)
            down = client.post("/v1/chat/completions", headers=headers, json=ask)
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "service_unavailable"
            assert "retry-after" in down.headers
            assert len(upstream.records) == seen, "no upstream call without a hold"
            assert client.get("/readyz").status_code == 503

            cluster.start()
            # The pool finds its connections dead and replaces them: no error is served.
            stop_load.clear()
            statuses.clear()
            loaders = [threading.Thread(target=load) for _ in range(4)]
            for thread in loaders:
                thread.start()
            time.sleep(1.0)
            stop_load.set()
            for thread in loaders:
                thread.join()
            assert statuses and set(statuses) == {200}, statuses
            for _ in range(5):
                again = client.post("/v1/chat/completions", headers=headers, json=ask)
                assert again.status_code == 200, again.text
            assert client.get("/readyz").status_code == 200
            client.close()

        async def check() -> tuple[dict[str, Any], int]:
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(cluster.url)
            async with engine.connect() as conn:
                result = await find_violations(conn), await pending_generations(conn)
            await engine.dispose()
            return result

        violations, pending = asyncio.run(check())
        assert violations == {} and pending == 0


# --- process death and shutdown ---------------------------------------------------------------


def _serve_env(
    database_url: str, upstream: FakeUpstream, data_dir: Path, **extra: str
) -> dict[str, str]:
    return serve_env(
        TOLLGATE_DATABASE_URL=database_url,
        TOLLGATE_DATA_DIR=str(data_dir),
        TOLLGATE_JWT_SECRET=JWT_SECRET,
        **upstream_env(upstream),
        **extra,
    )


def _start_stream(url: str, user: User, content: str) -> tuple[socket.socket, str]:
    """Send a streaming request on a raw socket and read until the first delta arrived."""
    import orjson

    body = orjson.dumps(_ask(content, max_tokens=500))
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {user.token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while b'"delta":{"content":' not in received:
        received += sock.recv(65536)
    return sock, received.decode()


def test_killed_worker_holds_are_released_after_restart(
    database_url: str,
    upstream: FakeUpstream,
    tmp_path: Path,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: object,
) -> None:
    user = make_user(credits=1000)
    env = _serve_env(
        database_url,
        upstream,
        tmp_path,
        TOLLGATE_HEARTBEAT_SECONDS="0.5",
        TOLLGATE_INSTANCE_STALE_SECONDS="2",
        TOLLGATE_SWEEP_INTERVAL_SECONDS="0.5",
    )
    victim = ServeProcess(env)
    with victim:
        sock, _ = _start_stream(victim.url, user, "hi [[fake:chunks=400,delay_ms=50]]")
        victim.signal(signal.SIGKILL)
        victim.wait()
        sock.close()
    held = api.get("/v1/balance", headers=user.headers).json()
    assert held["held"] != "0", "the dead worker's generation still holds its credits"
    with ServeProcess(env) as survivor:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if api.get("/v1/balance", headers=user.headers).json()["held"] == "0":
                break
            time.sleep(0.2)
        survivor.stop()
    balance = api.get("/v1/balance", headers=user.headers).json()
    assert balance == {"balance": "1000", "held": "0", "available": "1000"}
    generation = api.get("/v1/generations", headers=user.headers).json()["data"][0]
    assert generation["status"] == "interrupted"


def test_sigterm_lets_streams_finish_then_ends_the_rest(
    database_url: str,
    upstream: FakeUpstream,
    tmp_path: Path,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: object,
) -> None:
    quick, slow = make_user(credits=1000), make_user(credits=1000)
    env = _serve_env(database_url, upstream, tmp_path, TOLLGATE_SHUTDOWN_GRACE_SECONDS="1.5")
    server = ServeProcess(env)
    with server:
        short_sock, _ = _start_stream(server.url, quick, "hi [[fake:chunks=8,delay_ms=100]]")
        long_sock, _ = _start_stream(server.url, slow, "hi [[fake:chunks=400,delay_ms=50]]")
        server.signal(signal.SIGTERM)
        time.sleep(0.2)
        with pytest.raises(httpx.HTTPError):
            # New connections are refused at once (uvicorn closed its listening socket).
            httpx.get(f"{server.url}/readyz", timeout=1).raise_for_status()

        def read_all(sock: socket.socket) -> str:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data.decode()

        with short_sock, long_sock:
            short_tail, long_tail = read_all(short_sock), read_all(long_sock)
        assert server.wait(timeout=30) == 0
    # The short stream finished within the grace period; the long one was ended and charged.
    assert "data: [DONE]" in short_tail
    assert '"service_unavailable"' in long_tail and "data: [DONE]" not in long_tail
    finished = api.get("/v1/generations", headers=quick.headers).json()["data"][0]
    ended = api.get("/v1/generations", headers=slow.headers).json()["data"][0]
    assert finished["status"] == "completed"
    assert ended["status"] == "shutdown"
    assert Decimal(ended["cost"]) > 0


def test_a_generation_running_across_sweeps_is_still_charged(
    custom_server: Callable[..., Any], make_user: Callable[..., User], test_models: object
) -> None:
    """The sweeper releases only generations of dead processes, never a live one's."""
    user = make_user(credits=1000)
    with custom_server(
        sweep_interval_seconds=0.1, heartbeat_seconds=0.1, instance_stale_seconds=2
    ) as client:
        response = client.post(
            "/v1/chat/completions",
            headers=user.headers,
            json=_ask("hi [[fake:chunks=8,delay_ms=100]]", stream=False),
        )
        assert response.status_code == 200
        generation = _last_generation(client, user)
    assert generation["status"] == "completed"
    assert Decimal(generation["cost"]) == generation["input_tokens"] + 2 * 8
