"""Every string an operation takes, sent as a lone surrogate and as a NUL: never a 500.

The operations and their string fields come from the served OpenAPI document, so a new
operation or field is walked without touching this file (an operation whose body this file
cannot build fails until `BASES` has one). Each request is valid but for the one field, so the
hostile value is what the server must cope with. A lone surrogate (``"\\ud800"``, an escape
JSON's grammar allows but no Unicode text contains) is refused with a 422 wherever it is; a NUL
is either accepted (message text goes upstream as it came) or refused with a 4xx envelope.
Header parameters are left out: HTTP itself cannot carry either character in a header.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import PASSWORD, User

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

SURROGATE_JSON = "\\ud800"
"""The raw body text of a lone high surrogate: JSON escape syntax, not encodable as UTF-8."""
NUL_JSON = "\\u0000"
MARK = "@@HOSTILE@@"
HOSTILE_JSON = {"surrogate": SURROGATE_JSON, "nul": NUL_JSON}
HOSTILE_URL = {"surrogate": "%ED%A0%80", "nul": "%00"}
"""In a URL a surrogate can only come as the (invalid) UTF-8 bytes that would encode it."""


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"][name]
    return schema


def string_paths(
    doc: dict[str, Any], schema: dict[str, Any], path: tuple[str | int, ...] = ()
) -> Iterator[tuple[str | int, ...]]:
    """Every path (keys and list indexes) at which `schema` allows a string."""
    schema = _resolve(doc, schema)
    for alternative in schema.get("anyOf", []) + schema.get("oneOf", []):
        yield from string_paths(doc, alternative, path)
    kind = schema.get("type")
    if kind == "string":
        yield path
    elif kind == "object":
        for name, sub in schema.get("properties", {}).items():
            yield from string_paths(doc, sub, (*path, name))
    elif kind == "array":
        yield from string_paths(doc, schema.get("items", {}), (*path, 0))


def with_value(body: Any, path: tuple[str | int, ...], value: str) -> Any | None:
    """A copy of `body` with `value` at `path`, or None when `body` has no container there."""
    result = copy.deepcopy(body)
    parent = result
    for step in path[:-1]:
        if isinstance(step, int):
            if not isinstance(parent, list) or len(parent) <= step:
                return None
        elif not isinstance(parent, dict) or not isinstance(parent.get(step), dict | list):
            return None
        parent = parent[step]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(parent, list) or len(parent) <= last:
            return None
    elif not isinstance(parent, dict):
        return None
    parent[last] = value
    return result


class World:
    """The accounts and objects the operations act on, fresh for this test."""

    def __init__(
        self, api: httpx.Client, make_user: Callable[..., User], admin: dict[str, str]
    ) -> None:
        self.api = api
        self.admin = admin
        self.user = make_user(credits=1000)
        self.victim = make_user()
        self.model = f"walk-{uuid.uuid4().hex[:8]}"
        created = api.post(
            "/v1/admin/models",
            headers=admin,
            json={
                "name": self.model,
                "provider": "openai",
                "upstream_model": "openai-upstream",
                "context_window": 4000,
                "max_output_tokens": 1000,
                "input_price": "1",
                "output_price": "1",
            },
        )
        assert created.status_code == 201, created.text

    def bases(self, operation: str) -> list[Any]:
        """Valid bodies for `operation`; a field is set in the first one that can hold it."""
        message = {"role": "user", "content": "hello"}
        parts = {"role": "user", "content": [{"type": "text", "text": "hello"}]}
        chat = {"model": "fake-openai", "messages": [message], "max_tokens": 3}
        image_url = {"url": "https://example.com/a.png", "detail": "low"}
        image = {"role": "user", "content": [{"type": "image_url", "image_url": image_url}]}
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        called = {"role": "assistant", "content": None, "tool_calls": [call], "name": "a"}
        answered = {"role": "tool", "tool_call_id": "c1", "content": "done"}
        tool = {"type": "function", "function": {"name": "f", "description": "d"}}
        schema = {"name": "s", "description": "d", "schema": {"type": "object"}}
        hint = {"type": "ephemeral", "ttl": "5m"}
        said = {"role": "user", "content": [{"type": "text", "text": "hello"}]}
        hinted = {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}},
            ],
        }
        png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
        pictured = {
            "role": "user",
            "content": [
                {"type": "image", "source": png, "cache_control": hint},
                {"type": "text", "text": "what?"},
            ],
        }
        linked = {
            "role": "user",
            "content": [{"type": "image", "source": {"type": "url", "url": "https://e.com/a"}}],
        }
        used = {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "c1", "name": "f", "input": {}, "cache_control": hint},
                {"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "redacted_thinking", "data": "d"},
            ],
        }
        results: list[Any] = [
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "c1", "content": text}],
            }
            for text in ("done", [{"type": "text", "text": "done"}])
        ]
        deep_result = {
            "type": "tool_result",
            "tool_use_id": "c1",
            "content": [{"type": "text", "text": "done", "cache_control": hint}],
            "cache_control": hint,
        }
        prompt = {"model": "fake-anthropic", "messages": [message]}
        tooled = {
            "tools": [
                {
                    "type": "custom",
                    "name": "f",
                    "description": "d",
                    "input_schema": {},
                    "cache_control": hint,
                }
            ],
            "tool_choice": {"type": "tool", "name": "f"},
        }
        thinking = {
            "thinking": {"type": "adaptive"},
            "output_config": {
                "effort": "low",
                "format": {"type": "json_schema", "schema": {"type": "object"}},
            },
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
        }
        prompts: list[Any] = [
            {**prompt, "system": "s"},
            {
                **prompt,
                "messages": [said],
                "system": [{"type": "text", "text": "s", "cache_control": hint}],
            },
            {**prompt, "messages": [hinted]},
            {**prompt, "messages": [pictured]},
            {**prompt, "messages": [linked]},
            {**prompt, "messages": [message, used, results[0]], **tooled, **thinking},
            {**prompt, "messages": [message, used, results[1]], **tooled},
            # Deep hints (refused, as this conversation answers no call, but walked).
            {**prompt, "messages": [{**results[1], "content": [deep_result]}]},
        ]
        fresh_refresh = self.api.post(
            "/v1/auth/login", json={"email": self.user.email, "password": PASSWORD}
        ).json()["refresh_token"]
        bases: dict[str, list[Any]] = {
            "POST /v1/chat/completions": [
                chat,
                {**chat, "messages": [parts], "stop": ["x"], "stream_options": {}},
                {**chat, "messages": [image], "user": "u", "metadata": {"k": "v"}},
                {
                    **chat,
                    "messages": [called, answered, message],
                    "tools": [tool],
                    "tool_choice": {"type": "function", "function": {"name": "f"}},
                    "response_format": {"type": "json_schema", "json_schema": schema},
                    "prompt_cache_key": "k",
                    "safety_identifier": "s",
                },
                {**chat, "messages": [answered, message], "tools": [tool]},
                {
                    **chat,
                    "modalities": ["text"],
                    "function_call": "auto",
                    "verbosity": "low",
                    "service_tier": "auto",
                    "prompt_cache_retention": "in_memory",
                    "reasoning_effort": "low",
                    "tool_choice": "auto",
                    "response_format": {"type": "text"},
                    "logit_bias": {"1": 1},
                },
            ],
            "POST /v1/embeddings": [
                {"model": "fake-openai-embed", "input": "hello", "user": "u"},
                {"model": "fake-openai-embed", "input": ["hello", "world"]},
            ],
            "POST /v1/messages": [
                {**base, "max_tokens": 3, "metadata": {"user_id": "u"}, "stop_sequences": ["x"]}
                for base in prompts
            ],
            "POST /v1/messages/count_tokens": prompts,
            "POST /v1/auth/register": [
                {"email": f"walk-{uuid.uuid4().hex[:10]}@example.com", "password": PASSWORD}
            ],
            "POST /v1/auth/login": [{"email": self.user.email, "password": PASSWORD}],
            "POST /v1/auth/token": [
                {"grant_type": "password", "username": self.user.email, "password": PASSWORD}
            ],
            "POST /v1/auth/refresh": [{"refresh_token": fresh_refresh}],
            "POST /v1/auth/logout": [{"refresh_token": fresh_refresh}],
            "POST /v1/keys": [{"name": "walk", "models": ["fake-openai"]}],
            "PATCH /v1/admin/users/{user_id}": [{"role": "client"}],
            "POST /v1/admin/users/{user_id}/credits": [{"amount": "1", "reason": "walk"}],
            "POST /v1/admin/models": [
                {
                    "name": f"walk-{uuid.uuid4().hex[:8]}",
                    "provider": "openai",
                    "upstream_model": "x",
                    "context_window": 100,
                    "max_output_tokens": 10,
                    "input_price": "1",
                    "output_price": "1",
                }
            ],
            "PATCH /v1/admin/models/{name}": [
                {"upstream_model": "openai-upstream"},
                {"fallbacks": ["fake-openai"]},
            ],
            "POST /v1/admin/deployments": [
                {
                    "model": self.model,
                    "provider": "openai",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_key": "sk-walk-0123456789",
                    "upstream_model": "x",
                }
            ],
            "PATCH /v1/admin/deployments/{deployment_id}": [
                {
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_key": "sk-walk-0123456789",
                    "upstream_model": "x",
                }
            ],
            "PATCH /v1/keys/{key_id}": [{"spend_limit": "5", "spend_period": "day"}],
            "PATCH /v1/admin/keys/{key_id}": [{"spend_limit": "5", "spend_period": "day"}],
            "PUT /v1/admin/users/{user_id}/allowance": [
                {"amount": "5", "period": "day", "mode": "grant"}
            ],
            "PUT /v1/admin/users/{user_id}/balance-alert": [{"threshold": "5"}],
            "PUT /v1/admin/webhooks": [
                {"url": "https://example.com/hook", "secret": "0123456789abcdef0123"}
            ],
        }
        return bases[operation]

    def path_values(self) -> dict[str, str]:
        return {
            "user_id": self.victim.id,
            "generation_id": str(uuid.uuid4()),
            "key_id": str(uuid.uuid4()),
            "name": self.model,
            "deployment_id": "1",
        }

    def headers(self, operation: dict[str, Any], path: str) -> dict[str, str]:
        headers = dict(self.admin if path.startswith("/v1/admin") else self.user.headers)
        if any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", [])):
            headers["Idempotency-Key"] = uuid.uuid4().hex
        return headers


def _check(response: httpx.Response, what: str, *, refused: bool) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if refused or response.status_code >= 400:
        assert 400 <= response.status_code < 500, f"{what}: {response.status_code}"
        code = response.json()["error"]["code"]
        assert isinstance(code, str) and code, what


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


@pytest.mark.parametrize("kind", ["surrogate", "nul"])
def test_every_string_field_of_every_operation_survives_a_lone_surrogate_and_a_nul(
    kind: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    test_models: dict[str, str],
) -> None:
    doc = api.get("/openapi.json").json()
    world = World(api, make_user, admin_headers)
    sent = 0
    for method, path, operation in _operations(doc):
        name = f"{method} {path}"
        url = path.format(**world.path_values()) if "{" in path else path
        params = [p for p in operation.get("parameters", []) if p["in"] in ("path", "query")]
        for param in params:
            if _resolve(doc, param["schema"]).get("type") != "string" and not any(
                alt.get("type") == "string" for alt in param["schema"].get("anyOf", [])
            ):
                continue
            if param["in"] == "path":
                target = path.replace(f"{{{param['name']}}}", HOSTILE_URL[kind])
                target = target.format(**world.path_values())
            else:
                target = f"{url}?{param['name']}={HOSTILE_URL[kind]}"
            body = world.bases(name)[0] if "requestBody" in operation else None
            response = api.request(
                method, target, json=body, headers=world.headers(operation, path)
            )
            _check(response, f"{name} {param['in']} {param['name']}", refused=False)
            sent += 1
        if "requestBody" not in operation:
            continue
        content = operation["requestBody"]["content"]
        media, spec = next(iter(content.items()))
        bases = world.bases(name)
        for field in sorted(set(string_paths(doc, spec["schema"])), key=str):
            body = next(
                (b for b in (with_value(base, field, MARK) for base in bases) if b is not None),
                None,
            )
            assert body is not None, f"{name}: no base body can hold {field}; add one to bases"
            headers = world.headers(operation, path)
            if media == "application/x-www-form-urlencoded":
                raw = "&".join(
                    f"{k}={quote(str(v), safe='@')}".replace(
                        quote(MARK, safe="@"), HOSTILE_URL[kind]
                    )
                    for k, v in body.items()
                )
                headers["Content-Type"] = media
            else:
                raw = json.dumps(body).replace(MARK, HOSTILE_JSON[kind])
                headers["Content-Type"] = "application/json"
            response = api.request(method, url, content=raw.encode(), headers=headers)
            what = f"{name} body {'.'.join(map(str, field))} ({kind})"
            _check(response, what, refused=kind == "surrogate" and "json" in media)
            sent += 1
    assert sent > 40  # the walk reached the document's fields, not an empty list


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            '{"model": "fake-openai", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
        ),
        (
            "/v1/chat/completions",
            '{"model": "fake-openai", "messages": [{"role": "user", '
            '"content": [{"type": "text", "text": "\\ud800"}]}]}',
        ),
        ("/v1/keys", '{"name": "k", "models": ["\\ud800"]}'),
        ("/v1/embeddings", '{"model": "fake-openai-embed", "input": ["ok", "a\\ud800b"]}'),
    ],
    ids=["message-content", "text-part", "key-models", "embedding-input"],
)
def test_a_lone_surrogate_is_refused_with_422_and_changes_nothing(
    path: str,
    body: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=10)
    headers = {**user.headers, "Content-Type": "application/json"}
    response = api.post(path, content=body.encode(), headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert api.get("/v1/keys", headers=user.headers).json() == []
    assert api.get("/v1/generations", headers=user.headers).json()["data"] == []
