"""Issue 15, embeddings: `POST /v1/embeddings` end to end, through the official `openai` SDK and
LangChain's `OpenAIEmbeddings`, on an OpenAI-compatible and a Gemini model.

Each request is admitted, settled once and listed in `/v1/generations` with ``endpoint:
"embeddings"``; its charge is the upstream's input count at the model's input price (Gemini
counts nothing: the gateway's calibrated estimate, flagged ``estimated``). What the fake upstream
received is checked against the vendor SDKs' own request types, and every refusal is a 4xx with
a stable code that charges nothing.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from conftest import TEST_EMBEDDING_MODELS, TEST_MODELS, User, ensure_test_models, make_settings
from google.genai import types as genai_types
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr, TypeAdapter
from support import ServerThread, balance
from tollgate_core import estimate_embedding_tokens
from tollgate_core.fake_upstream import FakeUpstream, fake_vector
from tollgate_server.app import create_app

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PROVIDERS = ["openai", "gemini"]
TEXTS = ["hello embedding world", "a second text to embed"]


def sdk(api: httpx.Client, key: str) -> openai.OpenAI:
    base = str(api.base_url).rstrip("/")
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)


def generations(api: httpx.Client, user: User) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = api.get("/v1/generations", headers=user.headers).json()["data"]
    return data


def expected_tokens(provider: str, texts: list[str]) -> int:
    """The input count charged: the fake OpenAI upstream's (words + 2 per input), or for Gemini,
    which counts nothing, the gateway's calibrated estimate."""
    if provider == "openai":
        return sum(len(text.split()) + 2 for text in texts)
    return estimate_embedding_tokens(texts)


def float32s(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def check_recorded_body(provider: str, body: dict[str, Any], texts: list[str]) -> None:
    """What the upstream received is a request the vendor's own SDK types accept."""
    if provider == "openai":
        checked = TypeAdapter(openai.types.EmbeddingCreateParams).validate_python(body)
        assert checked["input"] == texts
        assert checked["model"] == "openai-embed-upstream"
        assert checked.get("encoding_format") == "float"
        return
    # google-genai sends batchEmbedContents itself; its types name each request's parts.
    assert [r["model"] for r in body["requests"]] == ["models/gemini-embed-upstream"] * len(texts)
    for request, text in zip(body["requests"], texts, strict=True):
        content = genai_types.Content.model_validate(request["content"])
        assert content.parts is not None and content.parts[0].text == text
        config = {k: v for k, v in request.items() if k not in ("model", "content")}
        genai_types.EmbedContentConfig.model_validate(config)


def check_charged(
    api: httpx.Client, user: User, before: Decimal, provider: str, texts: list[str]
) -> dict[str, Any]:
    """One settled embedding generation, charged its input tokens at 1 credit each."""
    tokens = expected_tokens(provider, texts)
    assert before - balance(api, user) == Decimal(tokens)
    [generation] = generations(api, user)
    assert generation["endpoint"] == "embeddings"
    assert generation["status"] == "completed"
    assert (generation["input_tokens"], generation["output_tokens"]) == (tokens, 0)
    assert generation["estimated"] is (provider == "gemini")
    assert Decimal(generation["cost"]) == Decimal(tokens)
    return generation


@pytest.mark.parametrize("provider", PROVIDERS)
def test_sdk_float_vectors_charged_at_usage_times_price(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    upstream: FakeUpstream,
    test_models: dict[str, str],
) -> None:
    model = TEST_EMBEDDING_MODELS[provider]
    user = make_user("1000")
    before = balance(api, user)
    upstream.clear()
    result = sdk(api, user.token).embeddings.create(
        model=model, input=TEXTS, encoding_format="float"
    )
    assert [d.index for d in result.data] == [0, 1]
    assert [d.embedding for d in result.data] == [fake_vector(t) for t in TEXTS]
    assert result.model == model
    assert result.usage.prompt_tokens == expected_tokens(provider, TEXTS)
    check_recorded_body(provider, upstream.last_record.body, TEXTS)
    check_charged(api, user, before, provider, TEXTS)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_sdk_base64_vectors_decode_to_the_same_floats(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    model = TEST_EMBEDDING_MODELS[provider]
    user = make_user("1000")
    client = sdk(api, user.token)
    # Asked for explicitly, base64 comes back as the string the server sent.
    explicit = client.embeddings.create(model=model, input=TEXTS, encoding_format="base64")
    encoded = [d.embedding for d in explicit.data]
    assert all(isinstance(e, str) for e in encoded)
    assert [float32s(str(e)) for e in encoded] == [fake_vector(t) for t in TEXTS]
    # Without encoding_format the SDK asks for base64 itself and decodes it.
    implicit = client.embeddings.create(model=model, input=TEXTS[0])
    assert implicit.data[0].embedding == fake_vector(TEXTS[0])
    assert {g["endpoint"] for g in generations(api, user)} == {"embeddings"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dimensions_reach_the_upstream(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    upstream: FakeUpstream,
    test_models: dict[str, str],
) -> None:
    user = make_user("1000")
    upstream.clear()
    result = sdk(api, user.token).embeddings.create(
        model=TEST_EMBEDDING_MODELS[provider], input=TEXTS, dimensions=4, encoding_format="float"
    )
    assert [d.embedding for d in result.data] == [fake_vector(t, 4) for t in TEXTS]
    body = upstream.last_record.body
    check_recorded_body(provider, body, TEXTS)
    if provider == "openai":
        assert body["dimensions"] == 4
    else:
        assert {r["outputDimensionality"] for r in body["requests"]} == {4}


def test_token_ids_reach_an_openai_compatible_upstream(
    api: httpx.Client,
    make_user: Callable[..., User],
    upstream: FakeUpstream,
    test_models: dict[str, str],
) -> None:
    user = make_user("1000")
    upstream.clear()
    before = balance(api, user)
    ids = [[1, 2, 3], [40, 50]]
    result = sdk(api, user.token).embeddings.create(
        model=TEST_EMBEDDING_MODELS["openai"], input=ids, encoding_format="float"
    )
    assert [d.embedding for d in result.data] == [fake_vector(i) for i in ids]
    TypeAdapter(openai.types.EmbeddingCreateParams).validate_python(upstream.last_record.body)
    assert upstream.last_record.body["input"] == ids
    # Token ids are counted exactly: 5 tokens at 1 credit.
    assert result.usage.prompt_tokens == 5
    assert before - balance(api, user) == Decimal(5)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_langchain_openai_embeddings(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user("1000")
    before = balance(api, user)
    embeddings = OpenAIEmbeddings(
        model=TEST_EMBEDDING_MODELS[provider],
        openai_api_base=f"{str(api.base_url).rstrip('/')}/v1",
        openai_api_key=SecretStr(user.token),
        max_retries=0,
        # Its length check tokenizes with tiktoken, whose vocabulary is downloaded on first
        # use: off, so the texts go as strings (the gateway checks lengths itself).
        check_embedding_ctx_length=False,
    )
    assert embeddings.embed_documents(TEXTS) == [fake_vector(t) for t in TEXTS]
    check_charged(api, user, before, provider, TEXTS)
    assert embeddings.embed_query("one query") == fake_vector("one query")


def test_gemini_refuses_token_ids_before_any_hold(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user("1000")
    response = api.post(
        "/v1/embeddings",
        json={"model": TEST_EMBEDDING_MODELS["gemini"], "input": [[1, 2, 3]]},
        headers=user.headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "unsupported_parameter"
    assert generations(api, user) == []
    assert balance(api, user) == Decimal("1000")


# --- refusals: each a 4xx with a stable code, before any hold -------------------------------


@pytest.fixture(scope="module")
def limited(
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    provider_env: dict[str, str],
    admin_headers: dict[str, str],
) -> Iterator[ServerThread]:
    """A server whose embedding requests take at most 3 inputs and 40 tokens."""
    settings = make_settings(
        database_url,
        tmp_path_factory.mktemp("embedding-limits"),
        embedding_max_inputs=3,
        embedding_max_tokens=40,
    )
    with ServerThread(create_app(settings, provider_env=provider_env)) as running:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            ensure_test_models(client, admin_headers)
        yield running


def embed(api: httpx.Client, user: User, **body: Any) -> httpx.Response:
    return api.post("/v1/embeddings", json=body, headers=user.headers)


REFUSALS: list[tuple[str, dict[str, Any], int, str]] = [
    ("too many inputs", {"input": ["a", "b", "c", "d"]}, 400, "too_many_inputs"),
    # 3 inputs of 60 bytes are 20 + 2 tokens each on the safe side: 66 > 40.
    ("too many tokens", {"input": ["x" * 60] * 3}, 400, "too_many_tokens"),
    ("an empty list", {"input": []}, 400, "empty_input"),
    ("an empty string", {"input": ""}, 400, "empty_input"),
    ("an empty string in a list", {"input": ["fine", ""]}, 400, "empty_input"),
    ("an empty token list", {"input": [[]]}, 400, "empty_input"),
    ("a bad encoding_format", {"input": "x", "encoding_format": "int8"}, 422, "validation_error"),
    ("zero dimensions", {"input": "x", "dimensions": 0}, 422, "validation_error"),
    ("an unknown field", {"input": "x", "truncate": True}, 422, "validation_error"),
    ("a number as input", {"input": 5}, 422, "validation_error"),
    (
        "a chat model",
        {"input": "x", "model": TEST_MODELS["openai"]},
        400,
        "not_an_embedding_model",
    ),
]


@pytest.mark.parametrize(("case", "body", "status", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_have_stable_codes_and_charge_nothing(
    limited: ServerThread,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
    upstream: FakeUpstream,
    case: str,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    user = make_user("1000")
    upstream.clear()
    with httpx.Client(base_url=limited.url, timeout=30) as client:
        response = embed(client, user, **{"model": TEST_EMBEDDING_MODELS["openai"], **body})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code
        assert "Traceback" not in response.text
        assert generations(client, user) == []
        assert balance(client, user) == Decimal("1000")
    assert upstream.records == []


def test_an_input_longer_than_the_model_takes_is_refused(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user("1000")
    # The test embedding models take 2,000 tokens: 9,000 bytes are 3,000 on the safe side.
    response = embed(api, user, model=TEST_EMBEDDING_MODELS["openai"], input=["ok", "y" * 9000])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert generations(api, user) == []


def test_an_embedding_model_on_chat_completions_is_a_400(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user("1000")
    response = api.post(
        "/v1/chat/completions",
        json={
            "model": TEST_EMBEDDING_MODELS["openai"],
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers=user.headers,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "not_a_chat_model"
    assert generations(api, user) == []
    assert balance(api, user) == Decimal("1000")


def test_no_credits_is_a_402(
    api: httpx.Client,
    make_user: Callable[..., User],
    upstream: FakeUpstream,
    test_models: dict[str, str],
) -> None:
    user = make_user()
    upstream.clear()
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(api, user.token).embeddings.create(model=TEST_EMBEDDING_MODELS["openai"], input=TEXTS)
    assert caught.value.status_code == 402
    assert caught.value.body["code"] == "insufficient_balance"  # type: ignore[index]
    assert generations(api, user) == []
    assert upstream.records == []


# --- failures: nothing charged -----------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_upstream_error_charges_nothing_and_shows_no_upstream_body(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user("1000")
    response = embed(
        api, user, model=TEST_EMBEDDING_MODELS[provider], input=["[[fake:status=500]] boom"]
    )
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_error"
    assert "fake upstream" not in response.text
    assert balance(api, user) == Decimal("1000")
    [generation] = generations(api, user)
    assert (generation["endpoint"], generation["status"]) == ("embeddings", "upstream_error")
    assert Decimal(generation["cost"]) == 0


def test_a_client_that_hangs_up_first_pays_nothing(
    api: httpx.Client,
    make_user: Callable[..., User],
    upstream: FakeUpstream,
    test_models: dict[str, str],
) -> None:
    user = make_user("1000")
    upstream.clear()
    with pytest.raises(httpx.ReadTimeout):
        api.post(
            "/v1/embeddings",
            json={"model": TEST_EMBEDDING_MODELS["openai"], "input": "[[fake:stall_first_s=3]]"},
            headers=user.headers,
            timeout=0.5,
        )
    # The gateway cancels its upstream call and settles without a charge.
    assert upstream.last_record.wait_disconnected(5.0)
    deadline = time.monotonic() + 5
    while (listed := generations(api, user)) and listed[0]["status"] == "running":
        assert time.monotonic() < deadline, listed
        time.sleep(0.05)
    [generation] = listed
    assert generation["status"] == "client_disconnected"
    assert Decimal(generation["cost"]) == 0
    assert balance(api, user) == Decimal("1000")


def test_generations_of_both_endpoints_are_listed_apart(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user("1000")
    client = sdk(api, user.token)
    client.chat.completions.create(
        model=TEST_MODELS["openai"], messages=[{"role": "user", "content": "hi"}]
    )
    client.embeddings.create(model=TEST_EMBEDDING_MODELS["openai"], input="hi")
    assert sorted(g["endpoint"] for g in generations(api, user)) == [
        "chat.completions",
        "embeddings",
    ]


def test_an_api_key_embeds_within_its_model_list(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user("1000")

    def new_key(models: list[str]) -> str:
        created = api.post(
            "/v1/keys", json={"name": "embed", "models": models}, headers=user.headers
        )
        assert created.status_code == 201, created.text
        return str(created.json()["key"])

    allowed = sdk(api, new_key([TEST_EMBEDDING_MODELS["openai"]]))
    result = allowed.embeddings.create(model=TEST_EMBEDDING_MODELS["openai"], input="hi")
    assert result.data[0].embedding == fake_vector("hi")
    chat_only = sdk(api, new_key([TEST_MODELS["openai"]]))
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat_only.embeddings.create(model=TEST_EMBEDDING_MODELS["openai"], input="hi")
    assert caught.value.body["code"] == "model_not_allowed"  # type: ignore[index]
    assert len(generations(api, user)) == 1


def test_an_embedding_model_whose_provider_serves_none_is_a_400(
    api: httpx.Client,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
    upstream: FakeUpstream,
    test_models: dict[str, str],
) -> None:
    created = api.post(
        "/v1/admin/models",
        json={
            "name": "fake-anthropic-embed",
            "provider": "anthropic",
            "kind": "embedding",
            "upstream_model": "anthropic-embed-upstream",
            "input_price": "1000000",
            "output_price": "0",
        },
        headers=admin_headers,
    )
    assert created.status_code in (201, 409), created.text
    user = make_user("1000")
    upstream.clear()
    response = embed(api, user, model="fake-anthropic-embed", input="x")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "embeddings_not_supported"
    assert generations(api, user) == []
    assert upstream.records == []
