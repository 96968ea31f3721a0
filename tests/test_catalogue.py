"""The model catalogue: admin changes, price rules, and what clients see."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
from conftest import User

pytestmark = pytest.mark.postgres


def _model(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": f"m-{uuid.uuid4().hex[:8]}",
        "provider": "openai",
        "upstream_model": "fake",
        "context_window": 1000,
        "max_output_tokens": 100,
        "input_price": "10",
        "output_price": "20",
    }
    body.update(overrides)
    return body


def test_default_catalogue_has_the_briefs_examples(
    api: httpx.Client, admin_headers: dict[str, str]
) -> None:
    models = {m["name"]: m for m in api.get("/v1/admin/models", headers=admin_headers).json()}
    # 20 credits per 100 tokens and 10 credits per 100 tokens, per million tokens.
    assert models["gpt-4"]["input_price"] == "200000"
    assert models["gpt-4"]["output_price"] == "200000"
    assert models["gemini-flash"]["input_price"] == "100000"
    assert {m["provider"] for m in models.values()} >= {"openai", "gemini", "anthropic"}


def test_create_and_update_a_model(api: httpx.Client, admin_headers: dict[str, str]) -> None:
    body = _model()
    created = api.post("/v1/admin/models", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    assert created.json()["input_price"] == "10"
    assert created.json()["default_max_tokens"] == 100
    again = api.post("/v1/admin/models", json=body, headers=admin_headers)
    assert again.status_code == 409
    patched = api.patch(
        f"/v1/admin/models/{body['name']}",
        json={"input_price": "11.5", "enabled": False},
        headers=admin_headers,
    )
    assert patched.status_code == 200
    assert patched.json()["input_price"] == "11.5"
    assert patched.json()["output_price"] == "20"
    assert patched.json()["enabled"] is False
    assert (
        api.patch(
            "/v1/admin/models/nope", json={"enabled": True}, headers=admin_headers
        ).status_code
        == 404
    )


@pytest.mark.parametrize("spelling", ["/", "%2F"])
def test_a_model_named_with_a_slash_can_be_changed_and_disabled(
    spelling: str,
    api: httpx.Client,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
) -> None:
    """Names such as ``meta-llama/Llama-3-8B`` are allowed at creation, so every admin route
    that names a model takes them too, with the slash as it is or percent-encoded."""
    body = _model(name=f"org-{uuid.uuid4().hex[:6]}/model-{uuid.uuid4().hex[:6]}")
    assert api.post("/v1/admin/models", json=body, headers=admin_headers).status_code == 201
    path = "/v1/admin/models/" + str(body["name"]).replace("/", spelling)
    patched = api.patch(path, json={"input_price": "12", "enabled": False}, headers=admin_headers)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["enabled"]) == (body["name"], False)
    assert patched.json()["input_price"] == "12"
    user = make_user(credits=10)
    refused = api.post(
        "/v1/chat/completions",
        json={"model": body["name"], "messages": [{"role": "user", "content": "hi"}]},
        headers=user.headers,
    )
    assert refused.status_code == 404, refused.text
    missing = api.patch("/v1/admin/models/org/nope", json={"enabled": True}, headers=admin_headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no such model"


@pytest.mark.parametrize(
    "overrides",
    [
        {"input_price": "-1"},
        {"output_price": "0"},
        {"input_price": "0.0000001"},
        {"max_output_tokens": 10, "default_max_tokens": 20},
        {"context_window": 0},
        {"name": "bad name with spaces"},
        {"unknown": 1},
    ],
)
def test_bad_models_are_refused(
    api: httpx.Client, admin_headers: dict[str, str], overrides: dict[str, object]
) -> None:
    body = _model(**overrides)
    response = api.post("/v1/admin/models", json=body, headers=admin_headers)
    assert response.status_code == 422, response.text
    names = {m["name"] for m in api.get("/v1/admin/models", headers=admin_headers).json()}
    assert body["name"] not in names


def test_zero_price_only_for_a_free_model(api: httpx.Client, admin_headers: dict[str, str]) -> None:
    body = _model(input_price="0", output_price="0", free=True)
    assert api.post("/v1/admin/models", json=body, headers=admin_headers).status_code == 201
    unfree = api.patch(
        f"/v1/admin/models/{body['name']}", json={"free": False}, headers=admin_headers
    )
    assert unfree.status_code == 422


def test_catalogue_changes_are_seen_by_the_next_request(
    api: httpx.Client, admin_headers: dict[str, str], make_user: Callable[..., User]
) -> None:
    user = make_user()
    body = _model()
    api.post("/v1/admin/models", json=body, headers=admin_headers)
    listed = {m["id"]: m for m in api.get("/v1/models", headers=user.headers).json()["data"]}
    # Issue 14 adds the cached input price (null: cached tokens cost the input price).
    assert listed[body["name"]]["pricing"] == {"input": "10", "output": "20", "cached_input": None}
    api.patch(
        f"/v1/admin/models/{body['name']}", json={"output_price": "25"}, headers=admin_headers
    )
    listed = {m["id"]: m for m in api.get("/v1/models", headers=user.headers).json()["data"]}
    assert listed[body["name"]]["pricing"]["output"] == "25"
    api.patch(f"/v1/admin/models/{body['name']}", json={"enabled": False}, headers=admin_headers)
    listed_ids = {m["id"] for m in api.get("/v1/models", headers=user.headers).json()["data"]}
    assert body["name"] not in listed_ids
