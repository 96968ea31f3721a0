"""OpenAI-compatible generation: `/v1/chat/completions` and `/v1/models`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import Response
from tollgate_core import format_credits

from tollgate_server.api.deps import CallerDep, Principal, RuntimeDep
from tollgate_server.api.generation_response import GenerationResponse
from tollgate_server.api.json_body import StrictJsonRoute
from tollgate_server.api.responses import STREAM_EVENT_SCHEMA, errors
from tollgate_server.openai_format import ChatCompletionCreate
from tollgate_server.runtime import Runtime
from tollgate_server.schemas import ChatCompletionPublic, ModelKind
from tollgate_server.services.gateway import plan_generation

router = APIRouter(prefix="/v1", tags=["generation"], route_class=StrictJsonRoute)


class ModelPricing(BaseModel):
    """A model's prices, in credits per million tokens."""

    input: str = Field(description="Credits per million input tokens", examples=["200000"])
    output: str = Field(description="Credits per million output tokens", examples=["200000"])
    cached_input: str | None = Field(
        None,
        description="Credits per million input tokens read from the prompt cache "
        "(null: the input price)",
        examples=["50000"],
    )


class ModelCard(BaseModel):
    """A model you may use, in OpenAI's format, plus its limits and prices."""

    id: str = Field(description="The name to send as `model`", examples=["gpt-4o-mini"])
    object: str = Field("model", description="Always `model`")
    created: int = Field(description="When it was added to the catalogue, Unix time")
    owned_by: str = Field(description="The provider that serves it", examples=["openai"])
    kind: ModelKind = Field(
        description="chat (use /v1/chat/completions) or embedding (use /v1/embeddings)"
    )
    context_window: int = Field(description="Tokens of prompt and answer together")
    max_output_tokens: int = Field(description="The most max_tokens a request may ask for")
    pricing: ModelPricing = Field(description="What its tokens cost")


class ModelList(BaseModel):
    """The models you may use, in OpenAI's list format."""

    object: str = Field("list", description="Always `list`")
    data: list[ModelCard] = Field(description="The models")


@router.get(
    "/models", response_model=ModelList, summary="Models you may use", responses=errors(401, 403)
)
async def list_models(caller: CallerDep, runtime: RuntimeDep) -> Any:
    """The enabled, priced models whose provider is configured, in OpenAI's list format, each
    with its price. An API key limited to some models sees only those."""
    data = []
    await runtime.router.fresh()
    for model in (await runtime.catalogue.models()).values():
        if not model.servable or not runtime.router.serves(model):
            continue
        if not caller.may_use(model.name):
            continue
        assert model.price is not None
        data.append(
            {
                "id": model.name,
                "object": "model",
                "created": int(model.created_at.timestamp()),
                "owned_by": model.provider,
                "kind": model.kind,
                "context_window": model.context_window,
                "max_output_tokens": model.max_output_tokens,
                "pricing": {
                    "input": format_credits(model.price.input_per_million),
                    "output": format_credits(model.price.output_per_million),
                    "cached_input": (
                        format_credits(model.price.cached_input_per_million)
                        if model.price.cached_input_per_million is not None
                        else None
                    ),
                },
            }
        )
    return {"object": "list", "data": data}


STREAM_EXAMPLE = (
    'data: {"id":"chatcmpl-…","object":"chat.completion.chunk","created":1764201600,'
    '"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},'
    '"finish_reason":null}]}\n\n'
    'data: {"id":"chatcmpl-…","object":"chat.completion.chunk","created":1764201600,'
    '"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},'
    '"finish_reason":null}]}\n\n'
    'data: {"id":"chatcmpl-…","object":"chat.completion.chunk","created":1764201600,'
    '"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    'data: {"id":"chatcmpl-…","object":"chat.completion.chunk","created":1764201600,'
    '"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,'
    '"total_tokens":10,"cost":"0.000195","estimated":false},"generation_id":"…"}\n\n'
    "data: [DONE]\n\n"
)

COMPLETION_EXAMPLE = {
    "id": "chatcmpl-5f0c…",
    "object": "chat.completion",
    "created": 1764201600,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 1,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
        "cost": "0.000195",
        "estimated": False,
    },
    "generation_id": "5f0c…",
}


@router.post(
    "/chat/completions",
    summary="Generate a chat completion (OpenAI-compatible)",
    response_class=Response,
    responses={
        200: {
            "model": ChatCompletionPublic,
            "description": "The completion; with `stream: true`, Server-Sent Events",
            "headers": {
                "X-Tollgate-Generation-Id": {
                    "description": "The generation's id",
                    "schema": {"type": "string"},
                }
            },
            "content": {
                "application/json": {"example": COMPLETION_EXAMPLE},
                # OpenAPI 3.1 readers take this schema as that of each event.
                "text/event-stream": {"schema": STREAM_EVENT_SCHEMA, "example": STREAM_EXAMPLE},
            },
        },
        **errors(400, 401, 402, 403, 404, 413, 429, 502, 503, 504),
    },
)
async def chat_completions(
    body: ChatCompletionCreate, caller: CallerDep, runtime: RuntimeDep
) -> Response:
    """Send `messages` to `model` and get the answer, billed in credits.

    The request is admitted with a hold of its worst-case cost (prompt estimate at the input
    price plus `max_tokens` at the output price): 402 `insufficient_balance` when no credits
    are available. It is then charged once from the real usage and the hold is released.
    An API key's own limits refuse with 402 `key_budget_exceeded` (its spend in the period,
    holds included, would pass its `spend_limit`) and 429 `key_rate_limited` (its `rpm` or
    `tpm`, with `Retry-After`).

    With `stream: true` the answer is Server-Sent Events in OpenAI's chunk format, ending with
    a chunk that carries `usage` (with `cost`) and then `data: [DONE]`. You pay for what you
    received: if you hang up, the upstream is stopped and you are charged for the prompt and
    the deltas sent to you; a non-streaming request that ends in an error is not charged. Look
    it up with `GET /v1/generations/{id}` (the id is in the `X-Tollgate-Generation-Id` header).
    """
    return await caller_generation(runtime, caller, body)


async def caller_generation(
    runtime: Runtime, caller: Principal, body: ChatCompletionCreate
) -> GenerationResponse:
    """The caller's generation, planned and ready to admit; shared with the fast path
    (`tollgate_server.api.chat_fast_path`)."""
    plan = await plan_generation(
        runtime,
        account_id=caller.account_id,
        api_key_id=caller.key.key_id if caller.key else None,
        allowed_models=caller.key.models if caller.key else None,
        body=body,
    )
    return GenerationResponse(runtime, plan)
