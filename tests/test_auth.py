"""Accounts, JWT authentication, roles and API keys, over HTTP against real PostgreSQL."""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest
from conftest import ACCESS_TOKEN_TTL, JWT_SECRET, PASSWORD, User, make_settings
from support import ServerThread
from tollgate_server.app import create_app

pytestmark = pytest.mark.postgres


def _token(**overrides: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": str(uuid.uuid4()),
        "jti": str(uuid.uuid4()),
        "typ": "access",
        "iat": now,
        "exp": now + 600,
        "iss": "tollgate",
        "aud": "tollgate-api",
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def test_register_creates_a_client_with_normalised_email(api: httpx.Client) -> None:
    email = f"  Mixed.{uuid.uuid4().hex[:8]}@Example.COM "
    response = api.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == email.strip().lower()
    assert body["role"] == "client"
    assert body["balance"] == "0"
    assert set(body) == {"id", "email", "role", "disabled", "created_at", "balance"}
    again = api.post("/v1/auth/register", json={"email": email.upper(), "password": PASSWORD})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "email_taken"


@pytest.mark.parametrize("extra", [{"role": "admin"}, {"balance": "1000"}, {"id": "x"}])
def test_register_refuses_extra_fields(api: httpx.Client, extra: dict[str, str]) -> None:
    email = f"sneaky-{uuid.uuid4().hex[:8]}@example.com"
    response = api.post("/v1/auth/register", json={"email": email, "password": PASSWORD, **extra})
    assert response.status_code == 422
    # Nothing was created: the same email registers cleanly afterwards, as a client.
    clean = api.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert clean.status_code == 201 and clean.json()["role"] == "client"


@pytest.mark.parametrize("password", ["short", "x" * 1025])
def test_register_enforces_password_length(api: httpx.Client, password: str) -> None:
    response = api.post(
        "/v1/auth/register",
        json={"email": f"p-{uuid.uuid4().hex[:8]}@example.com", "password": password},
    )
    assert response.status_code == 422


def _client_from_own_address(base_url: str) -> httpx.Client:
    """A client whose connections come from an address of its own in 127.0.0.0/8 (all of it is
    loopback on Linux), so that per-address counters start from zero for this test alone."""
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=base_url, timeout=30, transport=transport)


def test_one_email_can_be_registered_only_a_few_times_an_hour(server: ServerThread) -> None:
    email = f"again-{uuid.uuid4().hex[:8]}@example.com"
    with _client_from_own_address(server.url) as client:
        answers = [
            client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
            for _ in range(6)
        ]
    assert [a.status_code for a in answers] == [201, 409, 409, 409, 409, 429]
    assert answers[-1].json()["error"]["code"] == "rate_limited"
    assert int(answers[-1].headers["retry-after"]) > 0


def test_an_address_told_too_often_that_emails_are_taken_learns_nothing_more(
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    provider_env: dict[str, str],
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
) -> None:
    """The 409 tells whether an email has an account; an address that has been told that
    `register_max_taken_per_address` times is answered 429 for any email, taken or not,
    before the email is looked up, and nothing is created."""
    settings = make_settings(
        database_url, tmp_path_factory.mktemp("register"), register_max_taken_per_address=3
    )
    taken = [make_user().email for _ in range(3)]
    fresh = f"fresh-{uuid.uuid4().hex[:8]}@example.com"
    with ServerThread(create_app(settings, provider_env=provider_env)) as running:
        with _client_from_own_address(running.url) as client:
            for email in taken:
                answer = client.post(
                    "/v1/auth/register", json={"email": email, "password": PASSWORD}
                )
                assert answer.status_code == 409, answer.text
            for email in (taken[0], fresh):
                answer = client.post(
                    "/v1/auth/register", json={"email": email, "password": PASSWORD}
                )
                assert answer.status_code == 429, answer.text
                assert answer.json()["error"]["code"] == "rate_limited"
        # Another address is not held back by this one.
        with _client_from_own_address(running.url) as other:
            answer = other.post("/v1/auth/register", json={"email": fresh, "password": PASSWORD})
            assert answer.status_code == 201, answer.text


def test_wrong_password_and_unknown_email_look_the_same(
    api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    wrong = api.post("/v1/auth/login", json={"email": user.email, "password": "wrong-pass-1"})
    unknown = api.post(
        "/v1/auth/login",
        json={"email": f"nobody-{uuid.uuid4().hex}@example.com", "password": "wrong-pass-1"},
    )
    assert wrong.status_code == unknown.status_code == 401

    def strip(response: httpx.Response) -> dict[str, object]:
        return {k: v for k, v in response.json()["error"].items() if k != "request_id"}

    assert strip(wrong) == strip(unknown)
    assert wrong.headers["www-authenticate"] == "Bearer"


def test_login_returns_a_bearer_pair(api: httpx.Client, make_user: Callable[..., User]) -> None:
    user = make_user()
    assert user.tokens["token_type"] == "bearer"
    assert user.tokens["expires_in"] == ACCESS_TOKEN_TTL  # the test servers' setting
    me = api.get("/v1/me", headers=user.headers)
    assert me.status_code == 200 and me.json()["email"] == user.email


def test_oauth2_token_endpoint_for_swagger(
    api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    response = api.post("/v1/auth/token", data={"username": user.email, "password": PASSWORD})
    assert response.status_code == 200
    token = response.json()["access_token"]
    assert api.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_refresh_rotates_and_reuse_revokes_the_family(
    api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    first = user.tokens["refresh_token"]
    second = api.post("/v1/auth/refresh", json={"refresh_token": first})
    assert second.status_code == 200
    newer = second.json()["refresh_token"]
    assert newer != first
    replay = api.post("/v1/auth/refresh", json={"refresh_token": first})
    assert replay.status_code == 401
    # The replay revoked the whole family, so the newest token is dead too.
    assert api.post("/v1/auth/refresh", json={"refresh_token": newer}).status_code == 401


def test_logout_revokes_the_refresh_token(
    api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    token = user.tokens["refresh_token"]
    assert api.post("/v1/auth/logout", json={"refresh_token": token}).status_code == 204
    assert api.post("/v1/auth/refresh", json={"refresh_token": token}).status_code == 401


def test_a_refresh_token_is_not_an_access_token(
    api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    refresh = user.tokens["refresh_token"]
    response = api.get("/v1/me", headers={"Authorization": f"Bearer {refresh}"})
    assert response.status_code == 401
    access = user.tokens["access_token"]
    assert api.post("/v1/auth/refresh", json={"refresh_token": access}).status_code == 401


def _none_alg_token() -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return (
        part({"alg": "none", "typ": "JWT"})
        + "."
        + part(
            {
                "sub": str(uuid.uuid4()),
                "jti": str(uuid.uuid4()),
                "typ": "access",
                "iat": now,
                "exp": now + 600,
                "iss": "tollgate",
                "aud": "tollgate-api",
            }
        )
        + "."
    )


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(_none_alg_token(), id="alg-none"),
        pytest.param(_token()[:-4] + "AAAA", id="tampered"),
        pytest.param(_token(exp=int(time.time()) - 120), id="expired"),
        pytest.param(
            _token(iat=int(time.time()) + 3600, exp=int(time.time()) + 7200), id="future-dated"
        ),
        pytest.param(_token(aud="someone-else"), id="wrong-audience"),
        pytest.param(_token(iss="someone-else"), id="wrong-issuer"),
        pytest.param(_token(exp=None), id="missing-exp"),
        pytest.param(_token(typ="refresh"), id="refresh-type"),
        pytest.param(jwt.encode({"sub": "x"}, "another-secret-" + "y" * 40), id="other-secret"),
        pytest.param("not-a-jwt", id="garbage"),
    ],
)
def test_bad_tokens_get_401(api: httpx.Client, token: str) -> None:
    response = api.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_verified_access_token_is_checked_once_and_expires_on_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tollgate_server.security import tokens
    from tollgate_server.settings import Settings

    settings = Settings(jwt_secret=JWT_SECRET, jwt_leeway_seconds=0)
    verified = tokens.VerifiedAccessTokens(settings, JWT_SECRET)
    decoded: list[str] = []
    real_decode = tokens.decode_token

    def counting_decode(token: str, **kwargs: object) -> tokens.TokenClaims:
        decoded.append(token)
        return real_decode(token, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tokens, "decode_token", counting_decode)
    now = int(time.time())
    short = _token(iat=now, exp=now + 2)
    subject = verified.verify(short).subject
    assert verified.verify(short).subject == subject
    assert decoded == [short]  # the second use is a look-up
    # Refused tokens are not remembered: each use is checked again, and refused again.
    for _ in range(2):
        with pytest.raises(tokens.InvalidToken):
            verified.verify(_token(typ="refresh"))
    assert len(decoded) == 3
    # A token longer than any this server issues is accepted but not remembered.
    long = _token(pad="x" * tokens.VerifiedAccessTokens.MAX_TOKEN_CHARS)
    verified.verify(long)
    verified.verify(long)
    assert decoded[-2:] == [long, long]
    time.sleep(max(0.0, now + 2 - time.time()) + 0.05)
    with pytest.raises(tokens.InvalidToken):
        verified.verify(short)


def test_roles_guard_admin_routes(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    client = make_user()
    assert api.get("/v1/admin/users").status_code == 401
    forbidden = api.get("/v1/admin/users", headers=client.headers)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"
    assert api.get("/v1/admin/users", headers=admin_headers).status_code == 200


def test_demotion_takes_effect_at_once(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    admin = make_user(admin=True)
    assert api.get("/v1/admin/users", headers=admin.headers).status_code == 200
    demoted = api.patch(
        f"/v1/admin/users/{admin.id}", json={"role": "client"}, headers=admin_headers
    )
    assert demoted.status_code == 200
    # The same, still valid, access token no longer opens admin routes.
    assert api.get("/v1/admin/users", headers=admin.headers).status_code == 403


def test_disabled_account_cannot_log_in_or_refresh(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    user = make_user()
    response = api.patch(
        f"/v1/admin/users/{user.id}", json={"disabled": True}, headers=admin_headers
    )
    assert response.status_code == 200 and response.json()["disabled"] is True
    login = api.post("/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    assert login.status_code == 401
    refresh = api.post("/v1/auth/refresh", json={"refresh_token": user.tokens["refresh_token"]})
    assert refresh.status_code == 401


def test_admin_lists_and_filters_users(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    users = [make_user() for _ in range(3)]
    page = api.get(
        "/v1/admin/users", params={"email": users[0].email, "limit": 5}, headers=admin_headers
    )
    assert page.status_code == 200
    assert [u["email"] for u in page.json()["data"]] == [users[0].email]
    first = api.get("/v1/admin/users", params={"limit": 2}, headers=admin_headers).json()
    assert len(first["data"]) == 2 and first["next_cursor"]
    second = api.get(
        "/v1/admin/users",
        params={"limit": 2, "cursor": first["next_cursor"]},
        headers=admin_headers,
    ).json()
    assert not {u["id"] for u in first["data"]} & {u["id"] for u in second["data"]}
    assert (
        api.get("/v1/admin/users", params={"limit": 1000}, headers=admin_headers).status_code == 422
    )
    one = api.get(f"/v1/admin/users/{users[1].id}", headers=admin_headers)
    assert one.status_code == 200 and one.json()["email"] == users[1].email
    missing = api.get(f"/v1/admin/users/{uuid.uuid4()}", headers=admin_headers)
    assert missing.status_code == 404


def test_api_keys_lifecycle(api: httpx.Client, make_user: Callable[..., User]) -> None:
    user = make_user()
    created = api.post("/v1/keys", json={"name": "script"}, headers=user.headers)
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("tg-")
    listed = api.get("/v1/keys", headers=user.headers).json()
    assert [k["id"] for k in listed] == [created.json()["id"]]
    assert "key" not in listed[0] and key not in json.dumps(listed)
    key_headers = {"Authorization": f"Bearer {key}"}
    assert api.get("/v1/balance", headers=key_headers).status_code == 200
    # A key never manages keys, reaches admin routes, or reads the account page.
    assert api.get("/v1/keys", headers=key_headers).status_code == 403
    assert api.get("/v1/admin/users", headers=key_headers).status_code == 403
    assert api.get("/v1/me", headers=key_headers).status_code == 403
    revoked = api.delete(f"/v1/keys/{created.json()['id']}", headers=user.headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert api.get("/v1/balance", headers=key_headers).status_code == 401


def test_someone_elses_key_is_a_404(api: httpx.Client, make_user: Callable[..., User]) -> None:
    owner, other = make_user(), make_user()
    created = api.post("/v1/keys", json={"name": "mine"}, headers=owner.headers).json()
    theirs = api.delete(f"/v1/keys/{created['id']}", headers=other.headers)
    missing = api.delete(f"/v1/keys/{uuid.uuid4()}", headers=other.headers)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["message"] == missing.json()["error"]["message"]


def test_expired_key_is_refused(api: httpx.Client, make_user: Callable[..., User]) -> None:
    user = make_user()
    created = api.post(
        "/v1/keys", json={"name": "old", "expires_at": "2020-01-01T00:00:00Z"}, headers=user.headers
    ).json()
    response = api.get("/v1/balance", headers={"Authorization": f"Bearer {created['key']}"})
    assert response.status_code == 401


def test_failed_logins_lock_out_even_the_right_password(
    api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    for _ in range(5):
        api.post("/v1/auth/login", json={"email": user.email, "password": "wrong-pass-1"})
    locked = api.post("/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "rate_limited"
    assert int(locked.headers["retry-after"]) > 0


def test_first_admin_is_created_once_and_never_overwritten(
    database_url: str, tmp_path: Path, api: httpx.Client
) -> None:
    from conftest import ADMIN_EMAIL, ADMIN_PASSWORD

    settings = make_settings(database_url, tmp_path, admin_password="a-different-password")
    with ServerThread(create_app(settings, provider_env={})) as other:
        with httpx.Client(base_url=other.url) as client:
            # The second start did not reset the first admin's password.
            ok = client.post(
                "/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
            assert ok.status_code == 200


PUBLIC_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/v1/auth/register"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/token"),
    ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/auth/logout"),
}


def test_every_route_but_the_public_ones_requires_authentication(
    api: httpx.Client, make_user: Callable[..., User]
) -> None:
    """Walks every operation of the app's OpenAPI document: a new unprotected route fails
    this test."""
    client = make_user()
    spec = api.get("/openapi.json").json()
    checked = 0
    for template, operations in spec["paths"].items():
        path = (
            template.replace("{user_id}", str(uuid.uuid4()))
            .replace("{key_id}", str(uuid.uuid4()))
            .replace("{generation_id}", str(uuid.uuid4()))
            .replace("{name}", "gpt-4")
        )
        for method in operations:
            if (method.upper(), template) in PUBLIC_ROUTES:
                continue
            checked += 1
            anonymous = api.request(method.upper(), path, json={})
            assert anonymous.status_code == 401, (method, template)
            if template.startswith("/v1/admin/"):
                as_client = api.request(method.upper(), path, json={}, headers=client.headers)
                assert as_client.status_code == 403, (method, template)
    assert checked >= 15


def test_login_rehashes_a_password_hashed_with_weaker_parameters(
    database_url: str, api: httpx.Client, make_user: Callable[..., User]
) -> None:
    import asyncio

    import asyncpg
    from argon2 import PasswordHasher
    from support import asyncpg_dsn

    user = make_user()
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)

    async def swap_and_read(new_hash: str | None) -> str:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            if new_hash:
                await conn.execute(
                    "UPDATE accounts SET password_hash = $1 WHERE id = $2",
                    new_hash,
                    uuid.UUID(user.id),
                )
            return str(
                await conn.fetchval(
                    "SELECT password_hash FROM accounts WHERE id = $1", uuid.UUID(user.id)
                )
            )
        finally:
            await conn.close()

    asyncio.run(swap_and_read(weak))
    assert (
        api.post("/v1/auth/login", json={"email": user.email, "password": PASSWORD}).status_code
        == 200
    )
    stored = asyncio.run(swap_and_read(None))
    assert stored != weak
    assert "m=19456,t=2,p=1" in stored
