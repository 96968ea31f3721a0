"""Several answers (``n``) and log-probabilities through the official `openai` SDK.

OpenAI-compatible upstreams get ``n``, ``logprobs`` and ``top_logprobs`` as they came; Gemini
gets ``candidateCount``, ``responseLogprobs`` and ``logprobs``; Anthropic has neither, and the
request is refused by name before any hold. The hold covers every answer's output limit and the
charge is the upstream's usage, which counts every answer.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from conftest import User
from openai.types.chat import ChatCompletionMessageParam
from support import balance, openai_client
from test_chat_surface import check_gemini_body, generations, priced
from tollgate_core.fake_upstream import FakeUpstream

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

CHOOSING = ["openai", "gemini"]
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "say something [[fake:chunks=3]]"}
]
FIRST = "tok0 tok1 tok2"
SECOND = "c1tok0 tok1 tok2"  # the fake marks each further answer with its number


def _key(api: httpx.Client, user: User) -> str:
    created = api.post("/v1/keys", json={"name": "choices"}, headers=user.headers)
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


@pytest.mark.parametrize("provider", CHOOSING)
def test_n_answers_come_back_as_n_choices_and_are_charged_all(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    before = balance(api, user)
    upstream.clear()
    with openai_client(api, _key(api, user)) as client:
        completion = client.chat.completions.create(
            model=test_models[provider], messages=ASK, n=2, max_tokens=10
        )
    assert [c.index for c in completion.choices] == [0, 1]
    assert [c.message.content for c in completion.choices] == [FIRST, SECOND]
    assert [c.finish_reason for c in completion.choices] == ["stop", "stop"]
    usage = completion.usage
    assert usage is not None and usage.completion_tokens == 6  # three tokens per answer
    assert balance(api, user) == before - priced(usage)
    body = upstream.last_record.body
    if provider == "openai":
        assert body["n"] == 2
    else:
        assert body["generationConfig"]["candidateCount"] == 2
        check_gemini_body(body)
    # The hold covered both answers' output limit: 2 x 10 tokens at 2 credits, and the prompt.
    generation = generations(api, user)[0]
    assert Decimal(generation["hold"]) >= 2 * 10 * 2
    assert generation["endpoint"] == "chat.completions"


@pytest.mark.parametrize("provider", CHOOSING)
def test_n_answers_stream_by_index(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    before = balance(api, user)
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    usage: Any = None
    with openai_client(api, _key(api, user)) as client:
        stream = client.chat.completions.create(
            model=test_models[provider],
            messages=ASK,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
            usage = chunk.usage or usage
    assert texts == {0: FIRST, 1: SECOND}
    assert finishes == {0: "stop", 1: "stop"}
    assert usage is not None and usage.completion_tokens == 6
    assert balance(api, user) == before - priced(usage)


@pytest.mark.parametrize("provider", CHOOSING)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_logprobs_come_back_token_by_token(
    provider: str,
    stream: bool,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    model = test_models[provider]
    upstream.clear()
    with openai_client(api, _key(api, user)) as client:
        tokens = _logprobs(client, model, stream=stream)
    assert [t.token for t in tokens] == ["tok0", " tok1", " tok2"]
    assert all(t.logprob == -0.25 for t in tokens)
    assert [alt.token for alt in tokens[0].top_logprobs] == ["tok0", "alt1"]
    assert tokens[0].bytes == list(b"tok0")
    body = upstream.last_record.body
    if provider == "openai":
        assert (body["logprobs"], body["top_logprobs"]) == (True, 2)
    else:
        config = body["generationConfig"]
        assert (config["responseLogprobs"], config["logprobs"]) == (True, 2)
        check_gemini_body(body)


def _logprobs(client: openai.OpenAI, model: str, *, stream: bool) -> list[Any]:
    """The first answer's token log-probabilities, streamed or whole."""
    tokens: list[Any] = []
    if stream:
        chunks = client.chat.completions.create(
            model=model, messages=ASK, logprobs=True, top_logprobs=2, stream=True
        )
        for chunk in chunks:
            for choice in chunk.choices:
                if choice.logprobs is not None:
                    tokens.extend(choice.logprobs.content or [])
        return tokens
    completion = client.chat.completions.create(
        model=model, messages=ASK, logprobs=True, top_logprobs=2
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    return list(logprobs.content or [])


def test_without_logprobs_the_choice_has_none(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user(credits=1000)
    with openai_client(api, _key(api, user)) as client:
        completion = client.chat.completions.create(model=test_models["openai"], messages=ASK)
    assert completion.choices[0].logprobs is None


@pytest.mark.parametrize(
    "asked", [{"n": 2}, {"logprobs": True}, {"logprobs": True, "top_logprobs": 3}]
)
def test_anthropic_models_refuse_them_by_name_before_any_hold(
    asked: dict[str, Any],
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    upstream.clear()
    model = test_models["anthropic"]
    with (
        openai_client(api, _key(api, user)) as client,
        pytest.raises(openai.UnprocessableEntityError) as e,
    ):
        client.chat.completions.create(model=model, messages=ASK, **asked)
    error = e.value.body
    assert isinstance(error, dict) and error["code"] == "unsupported_parameter"
    assert "n" in asked or "logprobs" in error["message"]
    assert model in error["message"]
    assert upstream.records == [] and generations(api, user) == []
    assert balance(api, user) == 1000


def test_top_logprobs_without_logprobs_is_a_clear_422(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user(credits=1000)
    response = api.post(
        "/v1/chat/completions",
        json={"model": test_models["openai"], "messages": ASK, "top_logprobs": 2},
        headers=user.headers,
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error" and "logprobs" in error["message"]
    assert generations(api, user) == []
