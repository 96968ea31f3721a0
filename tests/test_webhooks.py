"""Alerts as signed webhooks through an outbox, delivered to a receiver on loopback: signed,
retried until the receiver recovers, never sent for a change that rolled back, and delivered by
the next process when the one that committed the event was killed first."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import User, make_settings
from support import ServeProcess, ServerThread, asyncpg_dsn, serve_env
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_server.app import create_app
from tollgate_server.services import ledger

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

SECRET = "webhook-secret-for-tests-0123456789"


class Receiver:
    """An HTTP server on loopback that records every POST; a path can be told to fail first."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.failures: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((self.path, dict(self.headers), body))
                if receiver.failures.get(self.path, 0) > 0:
                    receiver.failures[self.path] -= 1
                    self.send_response(500)
                else:
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def events(self, path: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [(h, json.loads(b)) for p, h, b in list(self.received) if p == path]

    def wait_for(
        self, path: str, predicate: Callable[[dict[str, Any]], bool], seconds: float = 15
    ) -> list[tuple[dict[str, str], dict[str, Any]]]:
        deadline = time.monotonic() + seconds
        while True:
            found = [(h, e) for h, e in self.events(path) if predicate(e)]
            if found:
                return found
            assert time.monotonic() < deadline, f"no such event reached {path}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.thread.start()
    yield running
    running.server.shutdown()


@pytest.fixture
def endpoint(api: httpx.Client, admin_headers: dict[str, str], receiver: Receiver) -> Iterator[str]:
    """A path of its own on the receiver, set as the webhook endpoint for the test."""
    path = f"/hook-{uuid.uuid4().hex[:8]}"
    answer = api.put(
        "/v1/admin/webhooks",
        json={"url": receiver.url + path, "secret": SECRET},
        headers=admin_headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "url": receiver.url + path,
        "secret_set": True,
        "updated_at": answer.json()["updated_at"],
    }
    yield path
    api.delete("/v1/admin/webhooks", headers=admin_headers)


@pytest.fixture
def deliverer(
    database_url: str, tmp_path: Path, provider_env: dict[str, str]
) -> Iterator[ServerThread]:
    """A server process that delivers, with a back-off short enough to watch."""
    settings = make_settings(
        database_url,
        tmp_path,
        webhook_deliver=True,
        webhook_poll_seconds=0.05,
        webhook_backoff_seconds=0.05,
    )
    with ServerThread(create_app(settings, provider_env=provider_env)) as running:
        yield running


def _ask(api: httpx.Client, bearer: str, model: str, max_tokens: int = 50) -> httpx.Response:
    return api.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {bearer}"},
        json={
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )


def _alert(api: httpx.Client, admin_headers: dict[str, str], user: User, threshold: str) -> None:
    answer = api.put(
        f"/v1/admin/users/{user.id}/balance-alert",
        json={"threshold": threshold},
        headers=admin_headers,
    )
    assert answer.status_code == 200, answer.text


def _for(user: User, kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == kind and e["data"]["account_id"] == user.id


def test_a_low_balance_alert_is_signed_and_names_its_event(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    test_models: dict[str, str],
    receiver: Receiver,
    endpoint: str,
    deliverer: ServerThread,
) -> None:
    user = make_user("1000")
    _alert(api, admin_headers, user, "999.99")
    assert _ask(api, user.token, test_models["openai"]).status_code == 200
    ((headers, event),) = receiver.wait_for(endpoint, _for(user, "balance.low"))
    assert event["data"]["threshold"] == "999.99"
    assert headers["Tollgate-Event-Id"] == event["id"]
    assert headers["Tollgate-Event"] == "balance.low"
    # The signature: HMAC-SHA256 over "<timestamp>.<body>" with the secret.
    raw = next(b for p, h, b in receiver.received if h["Tollgate-Event-Id"] == event["id"])
    parts = dict(item.split("=", 1) for item in headers["Tollgate-Signature"].split(","))
    expected = hmac.new(
        SECRET.encode(), f"{parts['t']}.".encode() + raw, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    assert abs(int(parts["t"]) - time.time()) < 60
    # Once per dip: a second request below the threshold raises nothing more.
    assert _ask(api, user.token, test_models["openai"]).status_code == 200
    time.sleep(0.5)
    assert len(receiver.events(endpoint)) == 1
    listed = api.get("/v1/admin/webhooks/deliveries", headers=admin_headers).json()["data"]
    (mine,) = [d for d in listed if d["id"] == event["id"]]
    assert (mine["status"], mine["attempts"], mine["last_status"]) == ("delivered", 1, 204)
    assert api.get("/v1/admin/webhooks", headers=admin_headers).json()["secret_set"] is True
    assert SECRET not in api.get("/v1/admin/webhooks", headers=admin_headers).text


def test_a_receiver_that_fails_three_times_gets_the_event_once_it_recovers(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    test_models: dict[str, str],
    receiver: Receiver,
    endpoint: str,
    deliverer: ServerThread,
) -> None:
    receiver.failures[endpoint] = 3
    user = make_user("1000")
    created = api.post(
        "/v1/keys", json={"name": "budget", "spend_limit": "120"}, headers=user.headers
    )
    key = created.json()
    # One hold is about 100 of the 120: past 80 per cent.
    assert _ask(api, key["key"], test_models["openai"]).status_code == 200
    ((_, event),) = receiver.wait_for(
        endpoint, lambda e: e["type"] == "key.budget_80" and e["data"]["key_id"] == key["id"]
    )
    deadline = time.monotonic() + 15
    while True:
        listed = api.get(
            "/v1/admin/webhooks/deliveries", headers=admin_headers, params={"limit": 100}
        ).json()["data"]
        (mine,) = [d for d in listed if d["id"] == event["id"]]
        if mine["status"] == "delivered" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    tries = [h for h, e in receiver.events(endpoint) if e["id"] == event["id"]]
    assert len(tries) == 4, "three failures, then the delivery that succeeded"
    assert event["data"]["spend_limit"] == "120" and event["data"]["percent"] == 80
    assert (mine["status"], mine["attempts"]) == ("delivered", 4)
    # The budget's end: a request whose hold no longer fits is refused, and that raises the
    # 100 per cent alert.
    refused = _ask(api, key["key"], test_models["openai"], max_tokens=100)
    assert refused.json()["error"]["code"] == "key_budget_exceeded"
    receiver.wait_for(
        endpoint, lambda e: e["type"] == "key.budget_100" and e["data"]["key_id"] == key["id"]
    )


def test_a_rolled_back_change_sends_nothing(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    test_models: dict[str, str],
    receiver: Receiver,
    endpoint: str,
    deliverer: ServerThread,
    database_url: str,
) -> None:
    """The real admission statement, in a transaction rolled back; then the same, committed."""
    user = make_user("10")
    _alert(api, admin_headers, user, "9.99")

    async def admit(commit: bool) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            model_id = await conn.fetchval(
                "SELECT id FROM models WHERE name = $1", test_models["openai"]
            )
            admission = ledger.Admission(
                generation_id=uuid.uuid4(),
                account_id=uuid.UUID(user.id),
                api_key_id=None,
                model_id=model_id,
                model_name=test_models["openai"],
                price_id=None,
                input_price=1,
                output_price=1,
                hold=1_000_000,
                stream=False,
                max_tokens=1,
                prompt_tokens=1,
                deadline_seconds=600,
            )
            transaction = conn.transaction()
            await transaction.start()
            await ledger.admit(conn, admission, strict=False, max_running=16)
            if not commit:
                await transaction.rollback()
                return
            await transaction.commit()
            outcome = ledger.Outcome(status="completed", usage=None, charge=0)
            await ledger.settle(conn, admission.generation_id, outcome)
        finally:
            await conn.close()

    asyncio.run(admit(commit=False))
    time.sleep(1.0)  # twenty polls of the deliverer
    assert [e for _, e in receiver.events(endpoint) if e["data"]["account_id"] == user.id] == []
    asyncio.run(admit(commit=True))
    receiver.wait_for(endpoint, _for(user, "balance.low"))
    assert len([e for _, e in receiver.events(endpoint) if e["data"]["account_id"] == user.id]) == 1


def test_an_event_committed_by_a_killed_server_is_delivered_after_restart(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    test_models: dict[str, str],
    receiver: Receiver,
    endpoint: str,
    database_url: str,
    tmp_path: Path,
    upstream: FakeUpstream,
) -> None:
    from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET, upstream_env

    env = serve_env(
        TOLLGATE_DATABASE_URL=database_url,
        TOLLGATE_DATA_DIR=str(tmp_path),
        TOLLGATE_JWT_SECRET=JWT_SECRET,
        TOLLGATE_ADMIN_EMAIL=ADMIN_EMAIL,
        TOLLGATE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        # Its one look for due events is at start, before the event exists.
        TOLLGATE_WEBHOOK_POLL_SECONDS="3600",
        **upstream_env(upstream),
    )
    user = make_user("1000")
    _alert(api, admin_headers, user, "999.99")
    with ServeProcess(env) as first:
        with httpx.Client(base_url=first.url, timeout=30) as client:
            assert _ask(client, user.token, test_models["openai"]).status_code == 200
        first.signal(signal.SIGKILL)
        first.wait()
    pending = api.get(
        "/v1/admin/webhooks/deliveries", headers=admin_headers, params={"pending": True}
    ).json()["data"]
    assert [d["type"] for d in pending if d["account_id"] == user.id] == ["balance.low"]
    assert not [e for _, e in receiver.events(endpoint) if e["data"]["account_id"] == user.id]
    with ServeProcess({**env, "TOLLGATE_WEBHOOK_POLL_SECONDS": "0.1"}):
        receiver.wait_for(endpoint, _for(user, "balance.low"), seconds=30)


def test_bad_webhook_settings_are_422(
    api: httpx.Client, admin_headers: dict[str, str], make_user: Callable[..., User]
) -> None:
    for body in (
        {"url": "ftp://example.com/x", "secret": SECRET},
        {"url": "not a url", "secret": SECRET},
        {"url": "https://example.com/x", "secret": "short"},
        {"url": "https://example.com/x"},
    ):
        answer = api.put("/v1/admin/webhooks", json=body, headers=admin_headers)
        assert answer.status_code == 422, (body, answer.text)
    user = make_user()
    assert (
        api.put(
            f"/v1/admin/users/{user.id}/balance-alert",
            json={"threshold": "-1"},
            headers=admin_headers,
        ).status_code
        == 422
    )
    assert (
        api.put(
            "/v1/admin/webhooks",
            json={"url": "https://example.com/x", "secret": SECRET},
            headers=user.headers,
        ).status_code
        == 403
    )
