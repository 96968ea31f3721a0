"""Issue 14: two widely used frameworks as clients, through Tollgate, on every provider.

LangChain's `ChatOpenAI` with `bind_tools` gets the fake upstream's tool call back as
LangChain tool calls; `instructor` (its default tools mode: a named ``tool_choice``) returns a
validated pydantic object. The charge of each generation is the upstream's usage priced.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import httpx
import instructor
import pytest
from conftest import User
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr
from support import balance, openai_client
from tollgate_core.fake_upstream import FakeUpstream

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PROVIDERS = ["openai", "anthropic", "gemini"]


def base_url(api: httpx.Client) -> str:
    return str(api.base_url).rstrip("/") + "/v1"


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class Weather(BaseModel):
    city: str
    celsius: int


@pytest.mark.parametrize("provider", PROVIDERS)
def test_langchain_bind_tools_gets_the_tool_call(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    model = ChatOpenAI(
        model=test_models[provider],
        base_url=base_url(api),
        api_key=SecretStr(user.token),
        max_retries=0,
        timeout=30,
    )
    answer = model.bind_tools([get_weather]).invoke(
        "What is the weather in Paris? [[fake:tool=get_weather]]"
    )
    assert [(call["name"], call["args"]) for call in answer.tool_calls] == [
        ("get_weather", {"city": "tok"})
    ]
    usage = answer.response_metadata["token_usage"]
    charged = Decimal(usage["prompt_tokens"]) + 2 * Decimal(usage["completion_tokens"])
    assert balance(api, user) == 1000 - charged
    assert upstream.last_record.status in (None, 200)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_instructor_returns_the_structured_object(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    client = instructor.from_openai(openai_client(api, user.token))
    weather = client.chat.completions.create(
        model=test_models[provider],
        response_model=Weather,
        max_retries=0,
        messages=[{"role": "user", "content": "Weather in Paris? [[fake:tool=Weather]]"}],
    )
    # instructor hands back its own subclass of the model, with the raw response attached.
    assert isinstance(weather, Weather)
    assert weather.model_dump() == {"city": "tok", "celsius": 1}
    assert balance(api, user) < 1000
