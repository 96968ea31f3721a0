"""`POST /v1/chat/completions` is served by a pure ASGI fast path
(`tollgate_server.api.chat_fast_path`) that hands every request it does not serve itself to the
FastAPI route. These tests pin the border between the two: what the fast path serves, and that
what it hands over is answered as the route answers it, with nothing held or charged."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
import pytest
from conftest import User

pytestmark = pytest.mark.postgres

PROMPT = [{"role": "user", "content": "hello there"}]


def _nothing_held(api: httpx.Client, user: User) -> None:
    assert api.get("/v1/balance", headers=user.headers).json()["held"] == "0"
    assert api.get("/v1/generations", headers=user.headers).json()["data"] == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_bodies_are_served_whatever_the_spelling_of_their_type(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    content_type: str,
) -> None:
    user = make_user(credits=1000)
    headers = {"Authorization": user.headers["Authorization"], "Content-Type": content_type}
    body = orjson.dumps({"model": test_models["openai"], "messages": PROMPT})
    response = api.post("/v1/chat/completions", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("content", "content_type", "field"),
    [
        (b'{"model": "x", "messages": [', "application/json", "body"),
        (b"", "application/json", "body"),
        (b"not json at all", "application/json", "body"),
        (b'{"model": "x", "messages": []}', "text/plain", "body"),
        (b'{"model": "x", "messages": [], "temperature": NaN}', "application/json", "body"),
    ],
)
def test_bodies_the_fast_path_cannot_read_get_the_routes_validation_error(
    api: httpx.Client,
    make_user: Callable[..., User],
    content: bytes,
    content_type: str,
    field: str,
) -> None:
    user = make_user(credits=1000)
    response = api.post(
        "/v1/chat/completions",
        content=content,
        headers={**user.headers, "Content-Type": content_type},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["fields"][0]["field"].startswith(field)
    _nothing_held(api, user)


def test_a_json_body_without_a_content_type_is_refused_as_the_route_refuses_it(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    """FastAPI's strict_content_type (a CSRF guard): no declared type, no JSON body."""
    user = make_user(credits=1000)
    request = api.build_request(
        "POST",
        "/v1/chat/completions",
        content=orjson.dumps({"model": test_models["openai"], "messages": PROMPT}),
        headers=user.headers,
    )
    assert "content-type" not in request.headers
    response = api.send(request)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    _nothing_held(api, user)


def test_the_first_of_repeated_headers_counts_as_on_the_route(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user(credits=1000)
    body = orjson.dumps({"model": test_models["openai"], "messages": PROMPT})
    second_scheme = api.post(
        "/v1/chat/completions",
        content=body,
        headers=[
            ("Authorization", "Basic dXNlcjpwYXNz"),
            ("Authorization", user.headers["Authorization"]),
            ("Content-Type", "application/json"),
        ],
    )
    assert second_scheme.status_code == 401, second_scheme.text
    second_type = api.post(
        "/v1/chat/completions",
        content=body,
        headers=[
            ("Authorization", user.headers["Authorization"]),
            ("Content-Type", "text/plain"),
            ("Content-Type", "application/json"),
        ],
    )
    assert second_type.status_code == 422, second_type.text
    _nothing_held(api, user)


def test_a_field_that_does_not_validate_names_the_field(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user(credits=1000)
    response = api.post(
        "/v1/chat/completions",
        json={"model": test_models["openai"], "messages": PROMPT, "max_tokens": "5"},
        headers=user.headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == "body.max_tokens"
    _nothing_held(api, user)


@pytest.mark.parametrize(
    "authorization", [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-token", "tg-abc"]
)
def test_missing_or_malformed_credentials_are_401_before_the_body_is_judged(
    api: httpx.Client, test_models: dict[str, str], authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    # The body is invalid too: a caller without credentials learns nothing about it.
    response = api.post(
        "/v1/chat/completions",
        json={"model": test_models["openai"], "messages": []},
        headers=headers,
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response.headers["www-authenticate"] == "Bearer"


def test_an_unknown_api_key_is_401(api: httpx.Client, test_models: dict[str, str]) -> None:
    response = api.post(
        "/v1/chat/completions",
        json={"model": test_models["openai"], "messages": PROMPT},
        headers={"Authorization": "Bearer tg-0000000000000000000000000000000000000000"},
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthenticated"


def test_an_unknown_model_is_404_from_the_fast_path(
    api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user(credits=1000)
    response = api.post(
        "/v1/chat/completions",
        json={"model": "no-such-model", "messages": PROMPT},
        headers=user.headers,
    )
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["request_id"] == response.headers["x-request-id"]
    _nothing_held(api, user)


def test_other_methods_on_the_path_are_the_routers_405(api: httpx.Client) -> None:
    response = api.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]
