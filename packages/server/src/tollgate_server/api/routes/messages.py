"""Anthropic's Messages API on every chat model: `/v1/messages` and its `count_tokens`.

A request is translated into core's request types (`tollgate_server.anthropic_format`) and run
by the one generation engine, as chat completions are; `MessagesResponse` writes the answer in
Anthropic's JSON and events. Errors use Anthropic's envelope (`api.anthropic_errors`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header
from starlette.responses import Response

from tollgate_server.anthropic_format import (
    AnthropicErrorEnvelope,
    CountTokensCreate,
    MessageCreate,
    MessagePublic,
    TokenCountPublic,
)
from tollgate_server.api.anthropic_errors import AnthropicRoute, envelope_body
from tollgate_server.api.deps import MessagesCallerDep, RuntimeDep
from tollgate_server.api.messages_response import MessagesResponse
from tollgate_server.api.responses import REQUEST_ID_EXAMPLE, errors
from tollgate_server.services import messages_request
from tollgate_server.services.gateway import plan_generation, served_model

router = APIRouter(prefix="/v1", tags=["generation"], route_class=AnthropicRoute)

_ERROR_STATUSES: dict[int, tuple[str, str, str]] = {
    400: (
        "Invalid request, unknown field, or a parameter the model cannot carry",
        "unsupported_parameter",
        "top_k: the model gpt-4o-mini does not support this parameter",
    ),
    401: ("Missing or invalid API key", "unauthenticated", "invalid, revoked or expired API key"),
    402: (
        "Not enough credits, or the key's budget is spent",
        "insufficient_balance",
        "available balance is 0 credits",
    ),
    403: (
        "A disabled account, or a key limited to other models",
        "model_not_allowed",
        "this API key may not use claude-sonnet-4-5",
    ),
    404: ("No such model", "model_not_found", "no model named claude-x is served"),
    429: ("Rate limited; wait for Retry-After", "rate_limited", "too many requests"),
    502: ("The upstream failed", "upstream_error", "the upstream failed or could not be reached"),
    503: (
        "The database is unavailable or the server is shutting down; retry after Retry-After",
        "service_unavailable",
        "the database is unavailable; retry shortly",
    ),
    504: (
        "The upstream or the generation took too long",
        "upstream_timeout",
        "the upstream did not answer in time",
    ),
}


def _errors(*statuses: int) -> dict[int | str, Any]:
    """`responses=` in Anthropic's envelope; a body too large is refused before any route, in
    Tollgate's envelope."""
    documented: dict[int | str, Any] = {413: errors(413)[413]}
    for status in statuses:
        description, code, message = _ERROR_STATUSES[status]
        example = envelope_body(status, code, message, REQUEST_ID_EXAMPLE)
        kind = example["error"]["type"]
        documented[status] = {
            "model": AnthropicErrorEnvelope,
            "description": f"{description} (`{kind}`)",
            "content": {"application/json": {"example": example}},
        }
    return dict(sorted(documented.items(), key=lambda item: int(item[0])))


STREAM_EXAMPLE = (
    'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_…",'
    '"type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],'
    '"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":0}}}\n\n'
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    '"content_block":{"type":"text","text":""}}\n\n'
    'event: ping\ndata: {"type":"ping"}\n\n'
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    '"delta":{"type":"text_delta","text":"Hello"}}\n\n'
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    '"stop_sequence":null},"usage":{"input_tokens":9,"output_tokens":1,'
    '"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cost":"0.000195",'
    '"estimated":false}}\n\n'
    'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)

_VERSION_HEADER = Header(
    None,
    alias="anthropic-version",
    description="Accepted and not needed: this API speaks Anthropic's 2023-06-01 version",
)
_BETA_HEADER = Header(
    None,
    alias="anthropic-beta",
    description="Accepted; no beta feature changes what this API does",
)


@router.post(
    "/messages",
    summary="Create a message (Anthropic's Messages API)",
    response_class=Response,
    responses={
        200: {
            "model": MessagePublic,
            "description": "The message; with `stream: true`, Anthropic's Server-Sent Events",
            "headers": {
                "X-Tollgate-Generation-Id": {
                    "description": "The generation's id",
                    "schema": {"type": "string"},
                },
                "request-id": {
                    "description": "The request's id, as Anthropic names it",
                    "schema": {"type": "string"},
                },
            },
            "content": {"text/event-stream": {"example": STREAM_EXAMPLE}},
        },
        **_errors(400, 401, 402, 403, 404, 429, 502, 503, 504),
    },
)
async def create_message(
    body: MessageCreate,
    caller: MessagesCallerDep,
    runtime: RuntimeDep,
    anthropic_version: str | None = _VERSION_HEADER,
    anthropic_beta: str | None = _BETA_HEADER,
) -> Response:
    """Send `messages` to `model` in Anthropic's format, on any chat model of the catalogue,
    billed in credits exactly as `/v1/chat/completions` is (a hold, one charge, the same
    records in `/v1/generations`).

    Authenticate with an API key in `x-api-key` (as Anthropic's SDKs and Claude Code send it)
    or as `Authorization: Bearer`. Every field of Anthropic's request is carried to the model's
    provider or refused with a 400 naming it. With `stream: true` the answer is Anthropic's
    event sequence; if you hang up, the upstream is stopped and you pay for the prompt and what
    was sent to you.
    """
    plan = await plan_generation(
        runtime,
        account_id=caller.account_id,
        api_key_id=caller.key.key_id if caller.key else None,
        allowed_models=caller.key.models if caller.key else None,
        body=body,
    )
    return MessagesResponse(runtime, plan)


@router.post(
    "/messages/count_tokens",
    summary="Count a message's input tokens (free)",
    response_model=TokenCountPublic,
    responses=_errors(400, 401, 403, 404, 503),
)
async def count_message_tokens(
    body: CountTokensCreate,
    caller: MessagesCallerDep,
    runtime: RuntimeDep,
    anthropic_version: str | None = _VERSION_HEADER,
    anthropic_beta: str | None = _BETA_HEADER,
) -> Any:
    """The prompt's input tokens as the gateway counts them for the model's provider (system
    prompt, messages, tools, images), without calling the upstream. Free: nothing is held or
    charged, and no generation is recorded."""
    _, routes = await served_model(runtime, body.model, caller.key.models if caller.key else None)
    provider = routes[0].provider
    tokens = provider.count_tokens(body.core_messages())
    return {"input_tokens": tokens + messages_request.input_allowance(body, provider)}
