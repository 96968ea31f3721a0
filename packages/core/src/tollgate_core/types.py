"""Request and stream types shared by the server and every provider.

Requests arrive in OpenAI's chat format; providers translate from these types to their vendor's
wire protocol and back. Everything here is a plain frozen dataclass: cheap to build on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "developer", "user", "assistant", "tool"]

FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "error", "cancelled"]


@dataclass(frozen=True, slots=True)
class TextPart:
    """A piece of text in a message made of parts."""

    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image in a user message: an ``https:`` or ``data:`` URL, as OpenAI takes it.

    `detail` is OpenAI's ``"low"``, ``"high"`` or ``"auto"`` (None when not given).
    """

    url: str
    detail: str | None = None


ContentPart = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for: `arguments` is the JSON text it wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message.

    `content` is always the message's text (the parts' text joined), which the token estimates
    read; `parts` keeps the order of text and images when the message was sent as parts (an
    empty tuple for plain text). An assistant message may carry `tool_calls` (its content may
    then be empty); a ``tool`` message answers the call named by `tool_call_id`.
    """

    role: Role
    content: str
    name: str | None = None
    parts: tuple[ContentPart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: `parameters` is its JSON Schema (None: no arguments)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """Whether and which tool the model must call: ``none``, ``auto``, ``required`` or
    ``function`` (then `name` is the function it must call)."""

    mode: Literal["none", "auto", "required", "function"]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """The shape of the answer: ``text``, ``json_object`` or ``json_schema`` (with `schema`,
    its `name` and whether it is `strict`)."""

    type: Literal["text", "json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What the gateway asks a provider to generate.

    `model` is the upstream model id, already resolved from the catalogue by the server.
    `max_tokens` is always set: the gateway fills in the model's default so the hold it took
    at admission bounds what the upstream may produce.
    """

    model: str
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Vendor-specific fields the caller asked for and the provider agreed to carry."""
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    """OpenAI's ``minimal``, ``low``, ``medium`` or ``high`` (None: the model's default)."""
    n: int = 1
    """How many answers (choices) to generate; above 1 only where the provider carries ``n``."""
    logprobs: bool = False
    """Whether to return the log-probability of each output token."""
    top_logprobs: int | None = None
    """How many most likely alternatives to return with each token's log-probability."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one generation, in inclusive buckets.

    `input_tokens` includes `cached_input_tokens`; `output_tokens` includes `reasoning_tokens`.
    Vendor extras go in `details`. `estimated` is True when the counts were not reported by the
    upstream (for example after a disconnect) but counted by the gateway.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    details: dict[str, int] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One output token's log-probability, with the most likely alternatives when asked for
    (`top`: pairs of token and log-probability, most likely first)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of generated text, forwarded to the client as it arrives.

    `choice` is the answer it belongs to when the request asked for several (``n``);
    `logprobs` holds its tokens' log-probabilities when the request asked for them.
    """

    text: str
    choice: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Usage the upstream has counted so far, sent before the stream ends.

    Anthropic's ``message_start`` and Gemini's first ``usageMetadata`` carry the exact prompt
    count long before the last event; a provider hands it over at once so that a stream cut
    short is charged the vendor's count, not the gateway's estimate. Output counts in it are
    running totals and may be partial. A provider sends it at most once or twice per stream:
    it is not a per-chunk event.
    """

    usage: Usage


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last event of every stream: why it ended and what it used.

    `usage` is None when the upstream never reported usage (it was cut off, or it does not
    report usage in streams); the gateway then estimates it and marks it as estimated.
    """

    finish_reason: FinishReason
    usage: Usage | None
    finish_reasons: tuple[FinishReason, ...] = ()
    """Each choice's own finish reason when the request asked for several (``n``), by choice
    index; empty for one choice, whose reason is `finish_reason`."""


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call, as OpenAI streams them: the first piece of call `index` has its
    `id` and `name`, later pieces only more of its `arguments` (JSON text). An upstream that
    sends a call whole sends it as one piece."""

    index: int
    id: str | None
    name: str | None
    arguments: str
    choice: int = 0
    """The answer the call belongs to when the request asked for several (``n``)."""


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's thinking, as the upstream streams it (Anthropic's
    ``thinking_delta``). Not part of the answer's text: a client format that carries thinking
    (Anthropic's Messages) forwards it, and then it counts as output the client received; the
    others leave it out. Its tokens are in the usage's `reasoning_tokens` either way."""

    text: str


StreamEvent = TextDelta | ToolCallDelta | ReasoningDelta | UsageReport | StreamEnd


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole generation, as `Provider.generate` returns it."""

    text: str
    finish_reason: FinishReason
    usage: Usage | None
    tool_calls: tuple[ToolCall, ...] = ()
