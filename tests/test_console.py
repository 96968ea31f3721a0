"""The web console over real HTTP: sign-in, cookies, CSRF, roles, and the admin's actions.

The browser tests (`test_console_browser.py`) drive the same pages in Chromium; these check
what a browser hides: the cookie's flags, the headers, and forged or repeated requests.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, User
from support import ServerThread
from tollgate_server.console.session import LOGIN_CSRF_COOKIE, SESSION_COOKIE

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

_CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def browser_like(server: ServerThread) -> Iterator[httpx.Client]:
    """A client that keeps cookies, as a browser would."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def sign_in(client: httpx.Client, email: str, password: str) -> httpx.Response:
    form = client.get("/console/login")
    assert form.status_code == 200
    token = _CSRF_FIELD.search(form.text)
    assert token is not None
    return client.post(
        "/console/login",
        data={"email": email, "password": password, "csrf": token.group(1)},
    )


def csrf_of(client: httpx.Client, path: str = "/console/") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def test_pages_redirect_to_sign_in_without_a_session(browser_like: httpx.Client) -> None:
    for path in ("/console/", "/console/usage", "/console/ledger", "/console/admin/users"):
        response = browser_like.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/console/login"


def test_sign_in_sets_a_strict_http_only_cookie_and_pages_carry_a_strict_csp(
    browser_like: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user(credits="7.25")
    signed_in = sign_in(browser_like, user.email, user.password)
    assert signed_in.status_code == 303
    cookie = next(
        h for h in signed_in.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)
    )
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/console"} <= flags
    assert "secure" not in flags  # loopback: plain http
    overview = browser_like.get("/console/")
    assert overview.status_code == 200
    assert 'id="figure-balance">7.25<' in overview.text
    policy = overview.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert " style=" not in overview.text and "<script>" not in overview.text


def test_the_cookie_is_secure_off_loopback(
    server: ServerThread, make_user: Callable[..., User]
) -> None:
    user = make_user()
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"Host": "console.example"}
    ) as client:
        form = client.get("/console/login")
        login_cookie = form.headers["set-cookie"]
        assert "secure" in login_cookie.lower()
        token = _CSRF_FIELD.search(form.text)
        assert token is not None
        answer = client.post(
            "/console/login",
            data={"email": user.email, "password": user.password, "csrf": token.group(1)},
            # A Secure cookie: httpx keeps it back on plain http, as a browser would.
            headers={"Cookie": f"{LOGIN_CSRF_COOKIE}={form.cookies[LOGIN_CSRF_COOKIE]}"},
        )
    assert answer.status_code == 303
    assert "secure" in answer.headers["set-cookie"].lower()


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    browser_like: httpx.Client, api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    assert sign_in(browser_like, user.email, user.password).status_code == 303
    refused = browser_like.post("/console/keys", data={"name": "forged"})
    assert refused.status_code == 403
    assert 'data-code="csrf_failed"' in refused.text
    for guess in ("0" * 64, "é" * 64):  # not ASCII: refused as well, not a 500
        wrong = browser_like.post("/console/keys", data={"name": "forged", "csrf": guess})
        assert wrong.status_code == 403
    assert api.get("/v1/keys", headers=user.headers).json() == []


def test_a_post_from_another_origin_is_refused_even_with_the_token(
    browser_like: httpx.Client, api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    assert sign_in(browser_like, user.email, user.password).status_code == 303
    token = csrf_of(browser_like)
    refused = browser_like.post(
        "/console/keys",
        data={"name": "forged", "csrf": token},
        headers={"Origin": "http://evil.example"},
    )
    assert refused.status_code == 403
    assert api.get("/v1/keys", headers=user.headers).json() == []
    made = browser_like.post("/console/keys", data={"name": "mine", "csrf": token})
    assert made.status_code == 201
    assert [k["name"] for k in api.get("/v1/keys", headers=user.headers).json()] == ["mine"]


def test_the_login_form_needs_its_own_token(
    browser_like: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    browser_like.get("/console/login")
    forged = browser_like.post(
        "/console/login", data={"email": user.email, "password": user.password, "csrf": "x"}
    )
    assert forged.status_code == 403
    assert SESSION_COOKIE not in forged.headers.get("set-cookie", "")


def test_a_client_gets_403_on_admin_pages_and_actions(
    browser_like: httpx.Client, api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user(credits="1")
    assert sign_in(browser_like, user.email, user.password).status_code == 303
    token = csrf_of(browser_like)
    for path in ("/console/admin/users", "/console/admin/models", "/console/admin/usage"):
        assert browser_like.get(path).status_code == 403, path
    grant = browser_like.post(
        f"/console/admin/users/{user.id}/credits",
        data={"csrf": token, "amount": "100", "reason": "me", "idempotency_key": "k" * 20},
    )
    assert grant.status_code == 403
    assert api.get("/v1/balance", headers=user.headers).json()["balance"] == "1"


def test_sign_in_follows_the_api_lockout(
    browser_like: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    for _ in range(5):
        assert sign_in(browser_like, user.email, "wrong-password").status_code == 401
    locked = sign_in(browser_like, user.email, user.password)
    assert locked.status_code == 429
    assert "too many failed logins" in locked.text.lower()


def test_sign_out_ends_the_session(
    browser_like: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user()
    assert sign_in(browser_like, user.email, user.password).status_code == 303
    session = browser_like.cookies[SESSION_COOKIE]
    token = csrf_of(browser_like)
    assert browser_like.post("/console/logout", data={"csrf": token}).status_code == 303
    browser_like.cookies.set(SESSION_COOKIE, session, path="/console")
    assert browser_like.get("/console/").status_code == 303


def test_a_disabled_account_loses_its_session(
    browser_like: httpx.Client,
    api: httpx.Client,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
) -> None:
    user = make_user()
    assert sign_in(browser_like, user.email, user.password).status_code == 303
    assert browser_like.get("/console/").status_code == 200
    api.patch(f"/v1/admin/users/{user.id}", json={"disabled": True}, headers=admin_headers)
    assert browser_like.get("/console/").status_code == 303


def test_an_admin_grant_is_posted_once_however_often_the_form_is_sent(
    server: ServerThread, api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user(credits="2")
    with httpx.Client(base_url=server.url, timeout=30) as admin:
        assert sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303
        page = admin.get(f"/console/admin/users/{user.id}")
        assert page.status_code == 200
        key = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
        assert key is not None
        token = csrf_of(admin)
        form = {"csrf": token, "amount": "3.5", "reason": "console grant"}
        for _ in range(2):
            sent = admin.post(
                f"/console/admin/users/{user.id}/credits",
                data={**form, "idempotency_key": key.group(1)},
            )
            assert sent.status_code == 303
        shown = admin.get(f"/console/admin/users/{user.id}?done=granted")
        assert 'id="figure-balance">5.5<' in shown.text
        for odd in ("short", "\x00" * 20, "k" * 65):
            bad_key = admin.post(
                f"/console/admin/users/{user.id}/credits",
                data={**form, "idempotency_key": odd},
            )
            assert bad_key.status_code == 422
        refused = admin.post(
            f"/console/admin/users/{user.id}/credits",
            data={**form, "amount": "-100", "idempotency_key": uuid.uuid4().hex},
        )
        assert refused.status_code == 409
        assert 'data-code="insufficient_balance"' in refused.text
    assert api.get("/v1/balance", headers=user.headers).json()["balance"] == "5.5"


def test_usage_exports_as_csv(browser_like: httpx.Client, make_user: Callable[..., User]) -> None:
    user = make_user()
    assert sign_in(browser_like, user.email, user.password).status_code == 303
    export = browser_like.get("/console/usage.csv?days=7")
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert export.text.splitlines()[0] == (
        "day,model,generations,input_tokens,output_tokens,credits"
    )


def test_the_overview_shows_this_months_spend_and_charts_it_by_model(
    browser_like: httpx.Client,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits="100")
    for model in (test_models["openai"], test_models["anthropic"]):
        made = api.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers=user.headers,
        )
        assert made.status_code == 200, made.text
    costs = {
        g["model"]: g["cost"]
        for g in api.get("/v1/generations", headers=user.headers).json()["data"]
    }
    spent = sum(Decimal(c) for c in costs.values())
    assert sign_in(browser_like, user.email, user.password).status_code == 303
    overview = browser_like.get("/console/").text
    assert f'id="figure-month">{spent}<' in overview
    for model, cost in costs.items():
        assert re.search(
            rf"<rect class=\"series-\d\"[^>]*><title>[0-9-]+ {model}: {cost}<", overview
        )
    usage = browser_like.get("/console/usage.csv?days=7").text.splitlines()
    assert {line.split(",")[1] for line in usage[1:]} == set(costs)


def test_the_generations_pager_leads_to_the_older_page(
    browser_like: httpx.Client,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits="1000")
    for _ in range(51):  # one more than a page
        made = api.post(
            "/v1/chat/completions",
            json={"model": test_models["openai"], "messages": [{"role": "user", "content": "x"}]},
            headers=user.headers,
        )
        assert made.status_code == 200, made.text
    assert sign_in(browser_like, user.email, user.password).status_code == 303
    first = browser_like.get("/console/generations")
    assert first.text.count('href="/console/generations/') == 50
    older = re.search(r'href="(/console/generations\?cursor=[^"]+)"', first.text)
    assert older is not None
    # The cursor holds a timestamp with "+00:00": unquoted, the "+" would arrive as a space.
    second = browser_like.get(older.group(1).replace("&amp;", "&"))
    assert second.status_code == 200, second.text
    assert second.text.count('href="/console/generations/') == 1


def test_an_admin_manages_roles_access_and_models_through_the_api_services(
    server: ServerThread,
    api: httpx.Client,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
) -> None:
    user = make_user()
    name = f"console-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.url, timeout=30) as admin:
        assert sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303
        token = csrf_of(admin)
        base = f"/console/admin/users/{user.id}"
        assert admin.post(f"{base}/role", data={"csrf": token, "role": "admin"}).status_code == 303
        assert admin.post(f"{base}/disable", data={"csrf": token}).status_code == 303
        account = api.get(f"/v1/admin/users/{user.id}", headers=admin_headers).json()
        assert (account["role"], account["disabled"]) == ("admin", True)
        assert admin.post(f"{base}/enable", data={"csrf": token}).status_code == 303
        assert not api.get(f"/v1/admin/users/{user.id}", headers=admin_headers).json()["disabled"]
        bad_role = admin.post(f"{base}/role", data={"csrf": token, "role": "owner"})
        assert bad_role.status_code == 422

        model = {
            "csrf": token,
            "provider": "openai",
            "upstream_model": "openai-upstream",
            "input_price": "0.5",
            "output_price": "1.5",
            "context_window": "8000",
            "max_output_tokens": "1000",
            "default_max_tokens": "100",
            "enabled": "on",
        }
        added = admin.post("/console/admin/models", data={**model, "name": name})
        assert added.status_code == 303
        again = admin.post("/console/admin/models", data={**model, "name": name})
        assert again.status_code == 409
        free = admin.post(
            "/console/admin/models",
            data={**model, "name": name + "-x", "input_price": "0", "output_price": "0"},
        )
        assert free.status_code == 422  # a zero price needs the free box
        edited = admin.post(
            f"/console/admin/models/{name}",
            data={k: v for k, v in model.items() if k != "enabled"} | {"output_price": "2"},
        )
        assert edited.status_code == 303
    listed = {m["name"]: m for m in api.get("/v1/admin/models", headers=admin_headers).json()}
    assert listed[name]["enabled"] is False
    assert (listed[name]["input_price"], listed[name]["output_price"]) == ("0.5", "2")
    assert name + "-x" not in listed


def test_text_from_the_database_is_escaped_on_every_page(
    browser_like: httpx.Client,
    api: httpx.Client,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
) -> None:
    user = make_user()
    planted = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    grant_answer = api.post(
        f"/v1/admin/users/{user.id}/credits",
        json={"amount": "1", "reason": planted},
        headers={**admin_headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert grant_answer.status_code == 201
    made = api.post("/v1/keys", json={"name": planted}, headers=user.headers)
    assert made.status_code == 201
    assert sign_in(browser_like, user.email, user.password).status_code == 303
    for path in ("/console/ledger", "/console/keys"):
        page = browser_like.get(path).text
        assert "<script>alert" not in page and "<img src=x" not in page, path
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page, path


def test_bad_input_is_refused_with_a_status_not_a_500(
    browser_like: httpx.Client, server: ServerThread
) -> None:
    for email, password in (("a\x00b@example.com", "x"), ("not an email", "x"), ("a@b.co", "")):
        # Each rendering of the form draws a new token.
        token = _CSRF_FIELD.search(browser_like.get("/console/login").text)
        assert token is not None
        answer = browser_like.post(
            "/console/login", data={"email": email, "password": password, "csrf": token.group(1)}
        )
        assert answer.status_code == 422, (email, answer.text)
        assert "Enter an email address and a password." in answer.text
    with httpx.Client(base_url=server.url, timeout=30) as admin:
        assert sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303
        for path in (
            "/console/admin/users?q=a%00b",
            "/console/admin/users?cursor=a%00b",
            "/console/generations?cursor=%00",
            "/console/usage?days=0",
            "/console/ledger?cursor=x",
        ):
            assert admin.get(path).status_code == 422, path
