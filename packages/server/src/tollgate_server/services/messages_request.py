"""From a validated Anthropic Messages request to what a provider is asked to do.

The counterpart of `tollgate_server.services.chat_request` for ``POST /v1/messages``: the same
`Features`, the same rule (every parameter is carried out by the model's provider, which says so
in `Provider.supports`, or refused before any hold), and the same count of what the hold must
cover beyond the messages' text. Only the names differ: a refusal names the Anthropic field.
"""

from __future__ import annotations

import orjson
from tollgate_core import Provider
from tollgate_core.images import ImageRefused, parse_data_url
from tollgate_core.tokens import estimate_text_tokens

from tollgate_server.anthropic_format import (
    Base64ImageSource,
    ImageBlock,
    MessageCreate,
    PromptBase,
)
from tollgate_server.errors import InvalidRequest
from tollgate_server.services.chat_request import PER_TOOL_CALL_TOKENS, PLAIN, Features

_FIELD_NAMES = {
    "tools": "tools",
    "tool_choice": "tool_choice",
    "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
    "image_url": "image",
    "reasoning_effort": "thinking",
    "top_k": "top_k",
    "response_format": "output_config.format",
}
"""The OpenAI parameter a provider declares, by the Anthropic field that asks for it."""


def input_allowance(body: PromptBase, provider: Provider) -> int:
    """Input tokens beyond the messages' text: tool definitions, earlier tool calls and
    results, and images at the vendor's largest image cost."""
    allowance = 0
    if body.tools:
        tools = [tool.model_dump(exclude_none=True) for tool in body.tools]
        allowance += estimate_text_tokens(orjson.dumps(tools).decode())
    arguments, results = body.tool_history()
    for text in arguments:
        allowance += estimate_text_tokens(text) + PER_TOOL_CALL_TOKENS
    allowance += results * PER_TOOL_CALL_TOKENS
    fmt = body.output_config.format if body.output_config is not None else None
    if fmt is not None:
        allowance += estimate_text_tokens(orjson.dumps(fmt.schema_).decode())
    return allowance + body.image_count() * provider.image_tokens


def features(body: MessageCreate, provider: Provider, model_name: str) -> Features:
    """Check each parameter `body` sets against `provider` and translate the ones it carries.

    Raises:
        Refused: 400 ``unsupported_parameter`` for the first parameter the provider cannot
            carry out (naming the Anthropic field), or 400 for an image that is not one.
    """
    asked: list[str] = []
    arguments, results = body.tool_history()
    if body.tools or arguments or results:
        asked.append("tools")
    if body.tool_choice is not None:
        asked.append("tool_choice")
    if body.parallel_tool_calls() is not None:
        asked.append("parallel_tool_calls")
    if body.image_count():
        asked.append("image_url")
    reasoning_effort = body.reasoning_effort()
    if reasoning_effort is not None:
        asked.append("reasoning_effort")
    if body.top_k is not None:
        asked.append("top_k")
    response_format = body.response_format()
    if response_format is not None:
        asked.append("response_format")
    if not asked:
        return PLAIN
    for name in asked:
        if not provider.supports(name):
            field = _FIELD_NAMES[name]
            raise InvalidRequest(
                "unsupported_parameter",
                f"{field}: the model {model_name} does not support this parameter",
                extra={"param": field},
            )
    for message in body.messages:
        for block in message.content if isinstance(message.content, list) else ():
            if isinstance(block, ImageBlock) and isinstance(block.source, Base64ImageSource):
                try:
                    parse_data_url(block.url())
                except ImageRefused as exc:
                    raise InvalidRequest(exc.code, exc.message) from None
    return Features(
        extra={"top_k": body.top_k} if body.top_k is not None else {},
        tools=body.core_tools(),
        tool_choice=body.core_tool_choice(),
        parallel_tool_calls=body.parallel_tool_calls(),
        reasoning_effort=reasoning_effort,
        response_format=response_format,
        input_allowance=input_allowance(body, provider),
    )
