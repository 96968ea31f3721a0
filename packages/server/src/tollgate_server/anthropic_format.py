"""Anthropic's Messages API, in: the request models of ``POST /v1/messages`` and
``POST /v1/messages/count_tokens``, and their translation into core's request types.

Every field of Anthropic's reference is either translated (into `tollgate_core.types`, so that
every provider carries it with the translation it already has) or refused: unknown fields are a
400 ``invalid_request_error`` (``extra="forbid"``), never dropped. What is accepted and not
carried, because no core type holds it:

* ``cache_control`` on blocks and tools: a prompt-caching hint, it changes no answer;
* ``citations`` of earlier text blocks;
* earlier ``thinking`` and ``redacted_thinking`` blocks of assistant turns: the gateway never
  sends earlier thinking back upstream (so ``context_management``'s clearing of thinking, the
  one edit accepted, is always in effect). Anthropic itself needs the thinking block before a
  ``tool_use`` of the last turn when thinking is on; core has no place for it yet.

``thinking`` becomes core's reasoning effort (a budget to the effort whose budget is the largest
not above it; adaptive thinking to ``output_config.effort``), which every provider translates.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)
from tollgate_core import ContentPart, Message, ResponseFormat, Tool, ToolCall, ToolChoice
from tollgate_core import ImagePart as CoreImagePart
from tollgate_core import TextPart as CoreTextPart


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CacheControl(_Block):
    """A prompt-caching breakpoint. Accepted, not carried: it changes no answer."""

    type: Literal["ephemeral"] = Field(description="Always `ephemeral`")
    ttl: Literal["5m", "1h"] | None = Field(None, description="How long the cache entry lives")


class TextBlock(_Block):
    """A piece of text."""

    type: Literal["text"] = Field(description="Always `text`")
    text: str = Field(description="The text")
    cache_control: CacheControl | None = Field(None, description="Accepted and ignored")
    citations: list[dict[str, Any]] | None = Field(
        None, description="Citations of an earlier answer; accepted, not sent upstream"
    )


class Base64ImageSource(_Block):
    """An image sent inline."""

    type: Literal["base64"] = Field(description="Always `base64`")
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"] = Field(
        description="The image's type"
    )
    data: str = Field(description="The image, base64-encoded")


class UrlImageSource(_Block):
    """An image the gateway or the vendor fetches from a public `https:` address."""

    type: Literal["url"] = Field(description="Always `url`")
    url: str = Field(description="An `https:` address")


class ImageBlock(_Block):
    """An image in a user message."""

    type: Literal["image"] = Field(description="Always `image`")
    source: Annotated[Base64ImageSource | UrlImageSource, Field(discriminator="type")] = Field(
        description="Where the image is"
    )
    cache_control: CacheControl | None = Field(None, description="Accepted and ignored")

    def url(self) -> str:
        source = self.source
        if isinstance(source, Base64ImageSource):
            return f"data:{source.media_type};base64,{source.data}"
        return source.url


class ToolUseBlock(_Block):
    """A tool call the model made in an earlier assistant turn."""

    type: Literal["tool_use"] = Field(description="Always `tool_use`")
    id: str = Field(min_length=1, max_length=256, description="The call's id")
    name: str = Field(min_length=1, max_length=128, description="The tool called")
    input: dict[str, Any] = Field(description="The arguments, a JSON object")
    cache_control: CacheControl | None = Field(None, description="Accepted and ignored")


class ToolResultBlock(_Block):
    """The result of a tool call, in the user turn after it."""

    type: Literal["tool_result"] = Field(description="Always `tool_result`")
    tool_use_id: str = Field(
        min_length=1, max_length=256, description="The id of the `tool_use` it answers"
    )
    content: str | list[TextBlock] | None = Field(
        None, description="The result: text, or text blocks"
    )
    is_error: StrictBool | None = Field(
        None, description="The tool failed; the result is sent on prefixed with `Error: `"
    )
    cache_control: CacheControl | None = Field(None, description="Accepted and ignored")

    def text(self) -> str:
        if self.content is None:
            body = ""
        elif isinstance(self.content, str):
            body = self.content
        else:
            body = "".join(block.text for block in self.content)
        # Only Anthropic has a flag for a failed tool; the others read it from the text.
        return f"Error: {body}" if self.is_error else body


class ThinkingBlock(_Block):
    """The model's thinking in an earlier assistant turn."""

    type: Literal["thinking"] = Field(description="Always `thinking`")
    thinking: str = Field(description="The thinking text")
    signature: str | None = Field(None, description="Anthropic's signature of it")


class RedactedThinkingBlock(_Block):
    """Thinking Anthropic returned encrypted, in an earlier assistant turn."""

    type: Literal["redacted_thinking"] = Field(description="Always `redacted_thinking`")
    data: str = Field(description="The encrypted thinking")


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class InputMessage(_Block):
    """One turn of the conversation."""

    role: Literal["user", "assistant", "system"] = Field(
        description="`user` or `assistant`; `system` for instructions in the conversation's "
        "course (as Claude Code sends them), text only"
    )
    content: str | list[ContentBlock] = Field(
        description="Text, or blocks: `text`, `image` and `tool_result` in user turns; `text`, "
        "`tool_use` and `thinking` in assistant turns; `text` in system turns"
    )

    @model_validator(mode="after")
    def _blocks_fit_role(self) -> InputMessage:
        if isinstance(self.content, str):
            return self
        allowed: tuple[type[_Block], ...] = {
            "user": (TextBlock, ImageBlock, ToolResultBlock),
            "assistant": (TextBlock, ToolUseBlock, ThinkingBlock, RedactedThinkingBlock),
            "system": (TextBlock,),
        }[self.role]
        for block in self.content:
            if not isinstance(block, allowed):
                raise ValueError(f"a {self.role} message may not hold a {block.type} block")
        return self


class InputTool(_Block):
    """A tool (a function) the model may call."""

    type: Literal["custom"] | None = Field(
        None, description="`custom` or absent; Anthropic's server tools are not served"
    )
    name: str = Field(
        min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]+$", description="Its name"
    )
    description: str | None = Field(None, description="What it does, for the model")
    input_schema: dict[str, Any] = Field(description="The JSON Schema of its input")
    cache_control: CacheControl | None = Field(None, description="Accepted and ignored")


class ToolChoiceParam(_Block):
    """Whether and which tool the model must call."""

    type: Literal["auto", "any", "tool", "none"] = Field(
        description="`auto`: it decides; `any`: some tool; `tool`: the one named; `none`: no tool"
    )
    name: str | None = Field(None, min_length=1, description="With `tool`: the tool to call")
    disable_parallel_tool_use: StrictBool | None = Field(
        None, description="At most one tool call per turn"
    )

    @model_validator(mode="after")
    def _name_with_tool(self) -> ToolChoiceParam:
        if (self.type == "tool") != (self.name is not None):
            raise ValueError("tool_choice: name is given with type tool, and only then")
        return self


class ThinkingEnabled(_Block):
    """Extended thinking, with a budget of tokens."""

    type: Literal["enabled"] = Field(description="Always `enabled`")
    budget_tokens: StrictInt = Field(
        ge=1024, description="Tokens the model may think with (at least 1024, below max_tokens)"
    )


class ThinkingDisabled(_Block):
    """No extended thinking."""

    type: Literal["disabled"] = Field(description="Always `disabled`")


class ThinkingAdaptive(_Block):
    """Extended thinking as the model sees fit, at the effort of `output_config.effort`."""

    type: Literal["adaptive"] = Field(description="Always `adaptive`")


Effort = Literal["low", "medium", "high", "max"]


Thinking = ThinkingEnabled | ThinkingDisabled | ThinkingAdaptive


class JsonSchemaOutput(_Block):
    """An answer that is JSON fitting a schema."""

    type: Literal["json_schema"] = Field(description="Always `json_schema`")
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON Schema")


class OutputConfig(_Block):
    """How the answer is produced."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    effort: Effort | None = Field(
        None,
        description="How much the model thinks: carried as the reasoning effort, with "
        "`thinking` enabled or adaptive only",
    )
    format: JsonSchemaOutput | None = Field(None, description="Structured output")


class ClearThinkingEdit(_Block):
    """Anthropic's context edit that clears earlier thinking."""

    model_config = ConfigDict(extra="allow")

    type: Literal["clear_thinking_20251015"] = Field(description="The edit's type")


class ContextManagement(_Block):
    """Context edits. Only the clearing of earlier thinking is accepted: the gateway never
    sends earlier thinking upstream, so it is always cleared."""

    edits: list[ClearThinkingEdit] = Field(max_length=8, description="The edits")


class Metadata(_Block):
    """About the request."""

    user_id: str | None = Field(
        None, max_length=256, description="An opaque id of the end user, passed on upstream"
    )


_CHOICE_MODES: dict[str, Literal["auto", "required", "none"]] = {
    "auto": "auto",
    "any": "required",
    "none": "none",
}


def _thinking_effort(budget: int) -> str:
    """The reasoning effort whose thinking budget (`tollgate_anthropic.wire.THINKING_BUDGETS`)
    is the largest not above `budget`: every provider carries an effort, and Anthropic's gets
    back a budget of at most the one asked for."""
    for effort, most in (("minimal", 2047), ("low", 8191), ("medium", 24575)):
        if budget <= most:
            return effort
    return "high"


class PromptBase(_Block):
    """What `POST /v1/messages` and its `count_tokens` share: the prompt."""

    model: str = Field(min_length=1, max_length=200, description="A model of the catalogue")
    messages: list[InputMessage] = Field(
        min_length=1, max_length=2048, description="The conversation, user turn first"
    )
    system: str | list[TextBlock] | None = Field(
        None, description="The system prompt: text, or text blocks"
    )
    tools: list[InputTool] | None = Field(
        None, min_length=1, max_length=128, description="Tools the model may call"
    )
    tool_choice: ToolChoiceParam | None = Field(None, description="Whether it must call one")
    thinking: (
        Annotated[
            ThinkingEnabled | ThinkingDisabled | ThinkingAdaptive, Field(discriminator="type")
        ]
        | None
    ) = Field(None, description="Extended thinking: a budget, adaptive, or none")
    output_config: OutputConfig | None = Field(None, description="Effort and structured output")
    context_management: ContextManagement | None = Field(
        None, description="Context edits: only clearing earlier thinking (always done)"
    )

    @model_validator(mode="after")
    def _tool_results_answer_calls(self) -> PromptBase:
        if all(message.role == "system" for message in self.messages):
            raise ValueError("messages: at least one user or assistant turn")
        called: set[str] = set()
        for message in self.messages:
            for block in message.content if isinstance(message.content, list) else ():
                if isinstance(block, ToolUseBlock):
                    called.add(block.id)
                elif isinstance(block, ToolResultBlock) and block.tool_use_id not in called:
                    raise ValueError(
                        f"the tool_result for {block.tool_use_id} answers no earlier tool_use"
                    )
        effort = self.output_config.effort if self.output_config is not None else None
        if effort is not None and not isinstance(self.thinking, ThinkingEnabled | ThinkingAdaptive):
            raise ValueError("output_config.effort: carried only with thinking enabled or adaptive")
        return self

    def core_messages(self) -> tuple[Message, ...]:
        """The conversation as core messages: the system prompt first; a user turn's tool
        results as ``tool`` messages (before its other blocks, as Anthropic orders them); an
        assistant turn's tool uses as its `tool_calls`. Earlier thinking is left out."""
        out: list[Message] = []
        if self.system:
            system = (
                self.system
                if isinstance(self.system, str)
                else "\n\n".join(block.text for block in self.system)
            )
            out.append(Message(role="system", content=system))
        for message in self.messages:
            if isinstance(message.content, str):
                out.append(Message(role=message.role, content=message.content))
                continue
            if message.role == "system":
                text = "\n\n".join(b.text for b in message.content if isinstance(b, TextBlock))
                out.append(Message(role="system", content=text))
                continue
            parts: list[ContentPart] = []
            calls: list[ToolCall] = []
            for block in message.content:
                if isinstance(block, ToolResultBlock):
                    out.append(
                        Message(role="tool", content=block.text(), tool_call_id=block.tool_use_id)
                    )
                elif isinstance(block, TextBlock):
                    parts.append(CoreTextPart(block.text))
                elif isinstance(block, ImageBlock):
                    parts.append(CoreImagePart(block.url()))
                elif isinstance(block, ToolUseBlock):
                    calls.append(
                        ToolCall(
                            id=block.id,
                            name=block.name,
                            arguments=orjson.dumps(block.input).decode(),
                        )
                    )
            if not parts and not calls:
                continue  # only tool results (already out), or only earlier thinking
            text = "".join(p.text for p in parts if isinstance(p, CoreTextPart))
            has_images = any(isinstance(p, CoreImagePart) for p in parts)
            out.append(
                Message(
                    role=message.role,
                    content=text,
                    parts=tuple(parts) if has_images else (),
                    tool_calls=tuple(calls),
                )
            )
        return tuple(out)

    def core_tools(self) -> tuple[Tool, ...]:
        return tuple(
            Tool(name=tool.name, description=tool.description, parameters=tool.input_schema)
            for tool in self.tools or ()
        )

    def core_tool_choice(self) -> ToolChoice | None:
        choice = self.tool_choice
        if choice is None:
            return None
        if choice.type == "tool":
            return ToolChoice(mode="function", name=choice.name)
        return ToolChoice(mode=_CHOICE_MODES[choice.type])

    def parallel_tool_calls(self) -> bool | None:
        choice = self.tool_choice
        if choice is None or choice.disable_parallel_tool_use is None:
            return None
        return not choice.disable_parallel_tool_use

    def reasoning_effort(self) -> str | None:
        """The core reasoning effort: from the thinking budget, or the effort asked for with
        adaptive thinking (``medium`` when none is)."""
        effort = self.output_config.effort if self.output_config is not None else None
        if isinstance(self.thinking, ThinkingEnabled):
            return effort or _thinking_effort(self.thinking.budget_tokens)
        if isinstance(self.thinking, ThinkingAdaptive):
            return effort or "medium"
        return None

    def response_format(self) -> ResponseFormat | None:
        output = self.output_config
        if output is None or output.format is None:
            return None
        return ResponseFormat(type="json_schema", schema=output.format.schema_)

    def image_count(self) -> int:
        return sum(
            1
            for message in self.messages
            if isinstance(message.content, list)
            for block in message.content
            if isinstance(block, ImageBlock)
        )

    def tool_history(self) -> tuple[list[str], int]:
        """The arguments of earlier tool calls, and the number of tool results."""
        arguments: list[str] = []
        results = 0
        for message in self.messages:
            for block in message.content if isinstance(message.content, list) else ():
                if isinstance(block, ToolUseBlock):
                    arguments.append(orjson.dumps(block.input).decode())
                elif isinstance(block, ToolResultBlock):
                    results += 1
        return arguments, results


class MessageCreate(PromptBase):
    """Anthropic's Messages request. Fields not listed here are refused with a 400."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 256,
                    "messages": [{"role": "user", "content": "Say hello"}],
                }
            ]
        },
    )

    max_tokens: StrictInt = Field(ge=1, description="The most tokens the answer may have")
    stream: StrictBool = Field(False, description="Answer with Server-Sent Events")
    stop_sequences: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None, max_length=16, description="Text that ends the answer when generated"
    )
    temperature: StrictFloat | StrictInt | None = Field(
        None, ge=0, le=1, description="Randomness, 0 to 1"
    )
    top_p: StrictFloat | StrictInt | None = Field(None, ge=0, le=1, description="Nucleus sampling")
    top_k: StrictInt | None = Field(None, ge=0, description="Sample from the k likeliest tokens")
    metadata: Metadata | None = Field(None, description="About the request")

    @model_validator(mode="after")
    def _budget_below_max_tokens(self) -> MessageCreate:
        thinking = self.thinking
        if isinstance(thinking, ThinkingEnabled) and thinking.budget_tokens >= self.max_tokens:
            raise ValueError("thinking.budget_tokens: must be below max_tokens")
        return self

    @property
    def user(self) -> str | None:
        return self.metadata.user_id if self.metadata is not None else None

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class CountTokensCreate(PromptBase):
    """The prompt of a Messages request, to count its tokens. Unknown fields are refused."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}]}
            ]
        },
    )


# --- out: for the OpenAPI document ------------------------------------------------------------


class MessageUsagePublic(BaseModel):
    """Anthropic's usage, plus Tollgate's `cost` and `estimated`."""

    input_tokens: int = Field(description="Input tokens not read from or written to the cache")
    output_tokens: int = Field(description="Output tokens, thinking included")
    cache_creation_input_tokens: int = Field(description="Input tokens written to the cache")
    cache_read_input_tokens: int = Field(description="Input tokens read from the cache")
    cost: str = Field(description="Credits charged, a decimal string", examples=["0.000195"])
    estimated: bool = Field(
        description="The counts are the gateway's, not the upstream's (a stream cut short)"
    )


class MessagePublic(BaseModel):
    """Anthropic's `message` object, plus `generation_id`."""

    id: str = Field(
        description="The message's id (the generation's, prefixed msg_)",
        examples=["msg_5f0c2d9e8b1a4e7fa3c619d2b4e6f801"],
    )
    type: Literal["message"] = Field("message", description="Always `message`")
    role: Literal["assistant"] = Field("assistant", description="Always `assistant`")
    model: str = Field(description="The model asked for", examples=["claude-haiku-4-5"])
    content: list[dict[str, Any]] = Field(
        description="`text` and `tool_use` blocks", examples=[[{"type": "text", "text": "Hi"}]]
    )
    stop_reason: Literal["end_turn", "max_tokens", "tool_use", "refusal"] = Field(
        description="Why the answer ended"
    )
    stop_sequence: str | None = Field(None, description="Always null: not reported")
    usage: MessageUsagePublic = Field(description="What the message used and cost")
    generation_id: str = Field(description="Look it up at /v1/generations/{generation_id}")


class TokenCountPublic(BaseModel):
    """The prompt's tokens, as the model's provider counts them before any call."""

    input_tokens: int = Field(description="The prompt's tokens (an estimate)", examples=[14])


class AnthropicErrorObject(BaseModel):
    """Anthropic's error, plus Tollgate's stable `code`."""

    type: str = Field(
        description="Anthropic's error type: invalid_request_error (400), authentication_error "
        "(401), billing_error (402), permission_error (403), not_found_error (404), "
        "request_too_large (413), rate_limit_error (429), api_error (500, 502), "
        "overloaded_error (503), timeout_error (504)",
        examples=["billing_error"],
    )
    message: str = Field(description="What went wrong, for people")
    code: str = Field(description="Tollgate's stable code", examples=["insufficient_balance"])


class AnthropicErrorEnvelope(BaseModel):
    """Every failure of /v1/messages, in Anthropic's shape (its SDKs raise their own classes)."""

    type: Literal["error"] = Field("error", description="Always `error`")
    error: AnthropicErrorObject = Field(description="What went wrong")
    request_id: str = Field(description="Also in the request-id and X-Request-Id headers")
