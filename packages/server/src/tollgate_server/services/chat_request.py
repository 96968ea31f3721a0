"""From a validated chat completion request to what a provider is asked to do.

Every parameter of OpenAI's Chat Completions reference that a request sets is either carried
out by the model's provider (it declares so in `Provider.supported_parameters` or
`supported_extras`) or refused here with 422 ``unsupported_parameter``, naming the parameter
and the model, before any hold: nothing is silently dropped.

What the hold must cover beyond the messages' text is counted here too: tool definitions and
schemas, the tool calls of earlier turns, and images at the vendor's largest image cost.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from tollgate_core import ContentPart, Message, Provider, ResponseFormat, Tool, ToolChoice
from tollgate_core import ImagePart as CoreImagePart
from tollgate_core.images import ImageRefused, fetch_image, parse_data_url
from tollgate_core.tokens import estimate_text_tokens

from tollgate_server.errors import InvalidParameters, InvalidRequest
from tollgate_server.openai_format import ChatCompletionCreate
from tollgate_server.openai_request import ImagePart, JsonSchemaFormat, NamedToolChoice

EXTRA_PARAMETERS = (
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "metadata",
    "service_tier",
    "store",
    "verbosity",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "prediction",
)
"""Parameters carried to the provider as they came, in `GenerationRequest.extra`."""

OTHER_PARAMETERS = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "n",
    "logprobs",
    "top_logprobs",
    "audio",
    "modalities",
    "functions",
    "function_call",
    "web_search_options",
    "moderation",
    "prompt_cache_options",
)
"""Parameters a provider must declare it carries; each has its own field in the core request
or is not carried by any provider today."""

CHECKED_PARAMETERS = EXTRA_PARAMETERS + OTHER_PARAMETERS
_CHECKED = frozenset(CHECKED_PARAMETERS)


@dataclass(frozen=True, slots=True)
class Features:
    """What a request asks for beyond plain text, in the core request's terms."""

    extra: dict[str, Any]
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int | None = None
    input_allowance: int = 0
    """Input tokens beyond the messages' text: tools, schemas, earlier tool calls, images."""


PLAIN = Features(extra={})


def features(body: ChatCompletionCreate, provider: Provider, model_name: str) -> Features:
    """Check each parameter `body` sets against `provider` and translate the ones it carries.

    Raises:
        Refused: 422 ``unsupported_parameter`` for the first parameter the provider cannot
            carry out.
    """
    # Only the fields the request sent: the plain text path pays one set intersection.
    sent = body.model_fields_set & _CHECKED
    asked = [name for name in CHECKED_PARAMETERS if name in sent and _asks(body, name)]
    images = sum(1 for message in body.messages if message.has_images())
    uses_tools = any(m.tool_calls or m.role == "tool" for m in body.messages)
    if not asked and not images and not uses_tools:
        return PLAIN
    if "top_logprobs" in asked and not body.logprobs:
        raise InvalidParameters("validation_error", "top_logprobs: needs logprobs: true")
    if uses_tools and "tools" not in asked:
        asked.append("tools")
    if images:
        asked.append("image_url")
    for name in asked:
        if not provider.supports(name):
            raise InvalidParameters(
                "unsupported_parameter",
                f"{name}: the model {model_name} does not support this parameter",
                extra={"param": name},
            )
    allowance = 0
    tools = tuple(
        Tool(
            name=tool.function.name,
            description=tool.function.description,
            parameters=tool.function.parameters,
            strict=tool.function.strict,
        )
        for tool in body.tools or ()
    )
    if body.tools:
        allowance += estimate_text_tokens(_json([t.model_dump() for t in body.tools]))
    response_format = None
    if (fmt := body.response_format) is not None:
        if isinstance(fmt, JsonSchemaFormat):
            schema = fmt.json_schema
            response_format = ResponseFormat(
                type="json_schema",
                schema=schema.schema_,
                name=schema.name,
                description=schema.description,
                strict=schema.strict,
            )
            allowance += estimate_text_tokens(_json(schema.model_dump()))
        else:
            response_format = ResponseFormat(type=fmt.type)
    for message in body.messages:
        for call in message.tool_calls or ():
            allowance += estimate_text_tokens(call.function.arguments) + PER_TOOL_CALL_TOKENS
        if message.tool_call_id is not None:
            allowance += PER_TOOL_CALL_TOKENS
    image_count = 0
    for message in body.messages:
        for part in message.content if isinstance(message.content, list) else ():
            if isinstance(part, ImagePart):
                image_count += 1
                if part.image_url.url[:5].lower() == "data:":
                    _check_data_url(part.image_url.url)
    allowance += image_count * provider.image_tokens
    tool_choice = None
    if isinstance(body.tool_choice, NamedToolChoice):
        tool_choice = ToolChoice(mode="function", name=body.tool_choice.function.name)
    elif body.tool_choice is not None:
        tool_choice = ToolChoice(mode=body.tool_choice)
    return Features(
        extra={name: getattr(body, name) for name in EXTRA_PARAMETERS if _asks(body, name)},
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=response_format,
        reasoning_effort=body.reasoning_effort,
        n=body.n or 1,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs,
        input_allowance=allowance,
    )


PER_TOOL_CALL_TOKENS = 16
"""A tool call's id, name and framing, and a tool result's framing, counted generously."""


def _asks(body: ChatCompletionCreate, name: str) -> bool:
    """Whether the request sets `name` to something that changes the answer: null, ``n: 1``
    and ``logprobs: false`` ask for nothing."""
    value = getattr(body, name)
    if value is None:
        return False
    if name == "n":
        return bool(value != 1)
    if name == "logprobs":
        return bool(value)
    return True


def _check_data_url(url: str) -> None:
    try:
        parse_data_url(url)
    except ImageRefused as exc:
        raise InvalidRequest(exc.code, exc.message) from None


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


async def inline_image_urls(
    messages: tuple[Message, ...], http: aiohttp.ClientSession
) -> tuple[Message, ...]:
    """`messages` with every ``https:`` image fetched into a ``data:`` URL, for a provider that
    takes no image URL. Runs at planning, so a refused image (a private address, too large, not
    an image) is a 400 before any hold or upstream call."""
    out: list[Message] = []
    for message in messages:
        if not any(isinstance(p, CoreImagePart) and not _is_data(p.url) for p in message.parts):
            out.append(message)
            continue
        parts: list[ContentPart] = []
        for part in message.parts:
            if isinstance(part, CoreImagePart) and not _is_data(part.url):
                try:
                    image = await fetch_image(http, part.url)
                except ImageRefused as exc:
                    raise InvalidRequest(exc.code, exc.message) from None
                encoded = base64.b64encode(image.data).decode()
                part = CoreImagePart(
                    url=f"data:{image.mime_type};base64,{encoded}", detail=part.detail
                )
            parts.append(part)
        out.append(dataclasses.replace(message, parts=tuple(parts)))
    return tuple(out)


def _is_data(url: str) -> bool:
    return url[:5].lower() == "data:"
