"""A disabled or missing account is refused on every authenticated route, whatever it holds.

Access tokens are verified by signature and remembered, API keys are remembered: neither says
that the account was disabled since. These tests hold a token and a key from before, over real
sockets, against the served app (the FastAPI routes and the chat fast path alike).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import JWT_SECRET, User
from support import asyncpg_dsn, execute_sql
from tollgate_server.security.tokens import issue_token
from tollgate_server.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PROMPT = [{"role": "user", "content": "hello"}]


def _set_disabled(api: httpx.Client, admin: dict[str, str], user: User, disabled: bool) -> None:
    response = api.patch(f"/v1/admin/users/{user.id}", json={"disabled": disabled}, headers=admin)
    assert response.status_code == 200, response.text


def _new_key(api: httpx.Client, user: User) -> str:
    response = api.post("/v1/keys", json={"name": "before"}, headers=user.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def test_a_disabled_account_cannot_create_keys_with_a_token_it_still_holds(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    user = make_user()
    assert api.get("/v1/keys", headers=user.headers).status_code == 200  # token remembered
    _set_disabled(api, admin_headers, user, True)
    created = api.post("/v1/keys", json={"name": "sneaky"}, headers=user.headers)
    assert created.status_code == 403, created.text
    assert created.json()["error"]["code"] == "account_disabled"
    _set_disabled(api, admin_headers, user, False)
    # Nothing was created while it was disabled, so nothing works now that it is back.
    assert api.get("/v1/keys", headers=user.headers).json() == []


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if op.get("security")
    ]


def _call(
    api: httpx.Client, method: str, path: str, op: dict[str, Any], token: str
) -> httpx.Response:
    url = path
    for param in op.get("parameters", []):
        if param["in"] == "path":
            url = url.replace(f"{{{param['name']}}}", str(uuid.uuid4()))
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
    # A JSON body that parses (the body's own checks come after authentication).
    body = {"model": "fake-openai", "messages": PROMPT} if path == "/v1/chat/completions" else {}
    return api.request(method, url, json=body if "requestBody" in op else None, headers=headers)


def test_every_authenticated_route_refuses_a_disabled_account(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    test_models: dict[str, str],
) -> None:
    # An admin, so that the admin routes too would let it through but for being disabled.
    user = make_user(credits=10, admin=True)
    key = _new_key(api, user)
    doc = api.get("/openapi.json").json()
    operations = _operations(doc)
    for method, path, op in operations:  # every token and key is remembered by the server
        _call(api, method, path, op, user.token)
    assert api.get("/v1/balance", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    _set_disabled(api, admin_headers, user, True)
    for method, path, op in operations:
        takes_keys = any("apiKey" in scheme for scheme in op["security"])
        for credential in [user.token, key] if takes_keys else [user.token]:
            response = _call(api, method, path, op, credential)
            what = f"{method} {path} with {'a key' if credential == key else 'a token'}"
            assert response.status_code == 403, f"{what}: {response.text[:200]}"
            assert "403" in op["responses"], f"{method} {path} does not document its 403"
            assert response.json()["error"]["code"] == "account_disabled", what
    assert len(operations) >= 15


def test_disabling_from_another_process_is_seen_at_once(
    api: httpx.Client,
    make_user: Callable[..., User],
    database_url: str,
) -> None:
    """The CLI (another process) disables with SQL: the server's memory of the account is
    emptied by the NOTIFY, not after its 30 seconds."""
    user = make_user()
    key = _new_key(api, user)
    key_headers = {"Authorization": f"Bearer {key}"}
    assert api.get("/v1/me", headers=user.headers).status_code == 200
    assert api.get("/v1/balance", headers=key_headers).status_code == 200
    sql = f"UPDATE accounts SET disabled = true WHERE id = '{user.id}'"
    asyncio.run(execute_sql(asyncpg_dsn(database_url), sql))
    deadline = time.monotonic() + 5
    while api.get("/v1/me", headers=user.headers).status_code == 200:
        assert time.monotonic() < deadline, "a disabled account was still served after 5 s"
        time.sleep(0.05)
    assert api.get("/v1/me", headers=user.headers).json()["error"]["code"] == "account_disabled"
    assert api.get("/v1/balance", headers=key_headers).status_code == 403


def test_a_signed_token_whose_account_does_not_exist_is_refused_with_401(
    api: httpx.Client, settings: Settings
) -> None:
    token, _ = issue_token(
        settings=settings, secret=JWT_SECRET, subject=uuid.uuid4(), token_type="access"
    )
    headers = {"Authorization": f"Bearer {token}"}
    for method, path, body in [
        ("POST", "/v1/keys", {"name": "orphan"}),
        ("GET", "/v1/me", None),
        ("POST", "/v1/chat/completions", {"model": "fake-openai", "messages": PROMPT}),
    ]:
        response = api.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, f"{method} {path}: {response.text}"
        assert response.json()["error"]["code"] == "unauthenticated"
