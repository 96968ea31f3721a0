"""Fixtures for the integration tests: one real PostgreSQL, one served app, fresh users.

Every test that touches the server gets fresh accounts (unique emails) instead of a rolled-back
transaction: the gateway commits on its own connections, exactly as in production. After each
such test the ledger's invariants are checked over the whole database.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from support import ServerThread, asyncpg_dsn, json_object, test_database_url
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_server.app import create_app
from tollgate_server.services.invariants import (
    find_answer_violations,
    find_violations,
    pending_generations,
)
from tollgate_server.settings import Settings

ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "admin-password-123"
PASSWORD = "client-password-123"
JWT_SECRET = "test-secret-" + "x" * 40
SECRET_KEY = "test-credentials-key-" + "k" * 30


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with test_database_url() as url:
        yield url


ACCESS_TOKEN_TTL = 86_400
"""The test servers' access-token lifetime: a day, so that session-scoped tokens outlive a slow
run (a 24-minute run on a loaded machine once saw the admin's expire mid-way)."""


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "environment": "test",
        "jwt_secret": JWT_SECRET,
        # One key for the upstream keys of deployments, as every worker of a deployment shares:
        # the test servers share one database.
        "secret_key": SECRET_KEY,
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        "login_max_failures": 5,
        "access_token_ttl_seconds": ACCESS_TOKEN_TTL,
        # Every test registers from 127.0.0.1 into one database; the throttle's own tests
        # use addresses of their own.
        "register_max_taken_per_address": 1000,
        "keepalive_seconds": 15.0,
        "sweep_interval_seconds": 3600.0,
        # Webhooks are delivered by the servers of tests/test_webhooks.py only, to its receiver.
        "webhook_deliver": False,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(database_url, tmp_path_factory.mktemp("data"))


UPSTREAM_KEYS = {
    "openai": "sk-test-openai-0123456789abcdef",
    "gemini": "AIza-test-gemini-0123456789abcdef",
    "anthropic": "sk-ant-test-anthropic-0123456789",
}
TEST_MODELS = {"openai": "fake-openai", "gemini": "fake-gemini", "anthropic": "fake-anthropic"}
"""One model per provider, all served by the fake upstream, priced 1 credit per input token and
2 credits per output token so that charges are easy to check by hand."""
TEST_EMBEDDING_MODELS = {"openai": "fake-openai-embed", "gemini": "fake-gemini-embed"}
"""One embedding model per provider that serves embeddings, priced 1 credit per input token."""


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream.in_thread() as running:
        yield running


def upstream_env(upstream: FakeUpstream) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": upstream.openai_base_url,
        "OPENAI_API_KEY": UPSTREAM_KEYS["openai"],
        "GEMINI_BASE_URL": upstream.url,
        "GEMINI_API_KEY": UPSTREAM_KEYS["gemini"],
        "ANTHROPIC_BASE_URL": upstream.url,
        "ANTHROPIC_API_KEY": UPSTREAM_KEYS["anthropic"],
    }


@pytest.fixture(scope="session")
def provider_env(upstream: FakeUpstream) -> dict[str, str]:
    """Every provider pointed at the fake upstream, with keys the tests can look for."""
    return upstream_env(upstream)


@pytest.fixture(scope="session")
def server(settings: Settings, provider_env: dict[str, str]) -> Iterator[ServerThread]:
    app = create_app(settings, provider_env=provider_env)
    with ServerThread(app) as running:
        yield running


def ensure_test_models(client: httpx.Client, admin_headers: dict[str, str]) -> None:
    for provider, name in TEST_MODELS.items():
        response = client.post(
            "/v1/admin/models",
            json={
                "name": name,
                "provider": provider,
                "upstream_model": f"{provider}-upstream",
                "context_window": 4000,
                "max_output_tokens": 1000,
                "default_max_tokens": 100,
                "input_price": "1000000",
                "output_price": "2000000",
            },
            headers=admin_headers,
        )
        assert response.status_code in (201, 409), response.text
    for provider, name in TEST_EMBEDDING_MODELS.items():
        response = client.post(
            "/v1/admin/models",
            json={
                "name": name,
                "provider": provider,
                "kind": "embedding",
                "upstream_model": f"{provider}-embed-upstream",
                "context_window": 2000,
                "max_output_tokens": 1,
                "default_max_tokens": 1,
                "input_price": "1000000",
                "output_price": "0",
            },
            headers=admin_headers,
        )
        assert response.status_code in (201, 409), response.text


@pytest.fixture(scope="session")
def test_models(server: ServerThread, admin_headers: dict[str, str]) -> dict[str, str]:
    """The test models, created once: provider -> model name."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ensure_test_models(client, admin_headers)
    return TEST_MODELS


@pytest.fixture
def api(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _login(client: httpx.Client, email: str, password: str) -> dict[str, Any]:
    response = client.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return json_object(response)


@pytest.fixture(scope="session")
def admin_headers(server: ServerThread) -> dict[str, str]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return admin_bearer(client)


@dataclass
class User:
    id: str
    email: str
    password: str
    tokens: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def token(self) -> str:
        return str(self.tokens["access_token"])


@pytest.fixture
def make_user(api: httpx.Client, admin_headers: dict[str, str]) -> Callable[..., User]:
    """Register, optionally fund, and log in a fresh client account."""

    def make(credits: str | int | Decimal | None = None, *, admin: bool = False) -> User:
        return new_user(api, admin_headers, credits, admin=admin)

    return make


def new_user(
    api: httpx.Client,
    admin_headers: dict[str, str],
    credits: str | int | Decimal | None = None,
    *,
    admin: bool = False,
    prefix: str = "user",
) -> User:
    """A fresh client account on the server `api` talks to: registered, optionally made an
    admin and funded, and logged in."""
    email = f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"
    created = api.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    account_id = created.json()["id"]
    if admin:
        promoted = api.patch(
            f"/v1/admin/users/{account_id}", json={"role": "admin"}, headers=admin_headers
        )
        assert promoted.status_code == 200, promoted.text
    if credits is not None:
        grant(api, admin_headers, account_id, str(credits))
    tokens = _login(api, email, PASSWORD)
    return User(
        id=account_id,
        email=email,
        password=PASSWORD,
        tokens=tokens,
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )


def admin_bearer(api: httpx.Client) -> dict[str, str]:
    """The seeded admin's Authorization header on the server `api` talks to."""
    tokens = _login(api, ADMIN_EMAIL, ADMIN_PASSWORD)
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def grant(
    api: httpx.Client, admin_headers: dict[str, str], account_id: str, amount: str
) -> dict[str, Any]:
    response = api.post(
        f"/v1/admin/users/{account_id}/credits",
        json={"amount": amount, "reason": "test grant"},
        headers={**admin_headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    return json_object(response)


async def _check_ledger(url: str) -> tuple[dict[str, list[tuple[object, ...]]], int]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            for _ in range(100):  # give settlements of just-ended streams a moment
                pending = await pending_generations(conn)
                if pending == 0:
                    break
                await asyncio.sleep(0.05)
                await conn.rollback()
            return {**await find_violations(conn), **await find_answer_violations(conn)}, pending
    finally:
        await engine.dispose()


@pytest.fixture(autouse=True)
def ledger_invariants(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that used the database: the ledger's invariants hold and nothing is
    left holding credits."""
    yield
    if "database_url" not in request.fixturenames:
        return
    url = request.getfixturevalue("database_url")
    violations, pending = asyncio.run(_check_ledger(url))
    assert violations == {}, f"ledger invariants broken: {violations}"
    assert pending == 0, f"{pending} generations still hold credits after the test"


# --- no secret in any response body -----------------------------------------------------------

# The look-behind: a JWT's base64url signature can contain "tg-" followed by 20 such characters.
_API_KEY = re.compile(rb"(?<![A-Za-z0-9_-])tg-[A-Za-z0-9_-]{20,}")
_FORBIDDEN = [JWT_SECRET.encode(), b"$argon2", *(k.encode() for k in UPSTREAM_KEYS.values())]
_issued_keys: set[bytes] = set()


def _scan(request: httpx.Request | None, status: int, content: bytes) -> None:
    for secret in _FORBIDDEN:
        assert secret not in content, f"a response body carries a secret ({secret[:6]!r}...)"
    creating = (
        request is not None
        and request.method == "POST"
        and request.url.path in ("/v1/keys", "/console/keys")
        and status == 201
    )
    for key in _API_KEY.findall(content):
        assert creating and key not in _issued_keys, "a response body repeats an API key"
        _issued_keys.add(key)


@pytest.fixture(autouse=True, scope="session")
def no_secrets_in_responses() -> Iterator[None]:
    """Every response any test reads, through httpx or an SDK built on it, is checked: no
    password hash, JWT secret or upstream key, and an API key only in the answer that
    created it."""
    # Every way of reading a body (read, iter_bytes, iter_lines, SDKs) goes through these.
    iter_raw, aiter_raw = httpx.Response.iter_raw, httpx.Response.aiter_raw

    def checked_iter_raw(self: httpx.Response, chunk_size: int | None = None) -> Iterator[bytes]:
        for chunk in iter_raw(self, chunk_size):
            _scan(self._request, self.status_code, chunk)
            yield chunk

    async def checked_aiter_raw(
        self: httpx.Response, chunk_size: int | None = None
    ) -> AsyncIterator[bytes]:
        async for chunk in aiter_raw(self, chunk_size):
            _scan(self._request, self.status_code, chunk)
            yield chunk

    patch = pytest.MonkeyPatch()
    patch.setattr(httpx.Response, "iter_raw", checked_iter_raw)
    patch.setattr(httpx.Response, "aiter_raw", checked_aiter_raw)
    yield
    patch.undo()


# --- a routed server: several fake upstreams as the deployments of a model ------------------
# For the routing suites (tests/test_routing.py, tests/test_embedding_routing.py): each module
# defines its own `routed` server (its settings) and asks for `calm` and `no_deployments_left`.


@pytest.fixture(scope="module")
def fakes() -> Iterator[list[FakeUpstream]]:
    with (
        FakeUpstream.in_thread() as a,
        FakeUpstream.in_thread() as b,
        FakeUpstream.in_thread() as c,
    ):
        yield [a, b, c]


@pytest.fixture
def calm(fakes: list[FakeUpstream]) -> None:
    for fake in fakes:
        fake.fault = ""
        fake.clear()


@pytest.fixture(scope="module")
def no_deployments_left(database_url: str) -> Iterator[None]:
    """The database is shared with every other test's servers, which hold other secret keys:
    a deployment left behind would be a key they cannot decrypt, and stop them starting."""
    yield

    async def clear() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            await conn.execute("DELETE FROM deployments")
        finally:
            await conn.close()

    asyncio.run(clear())


@pytest.fixture
def rapi(routed: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=routed.url, timeout=30) as client:
        yield client


@pytest.fixture
def radmin(rapi: httpx.Client) -> dict[str, str]:
    return admin_bearer(rapi)


@pytest.fixture
def ruser(rapi: httpx.Client, radmin: dict[str, str]) -> Callable[[str], User]:
    def make(credits: str) -> User:
        return new_user(rapi, radmin, credits, prefix="routed")

    return make
