"""The `Provider` base class: what a plugin implements to reach one upstream API."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import aiohttp

from tollgate_core.embeddings import EmbeddingRequest, EmbeddingResult
from tollgate_core.errors import UpstreamBadRequest
from tollgate_core.tokens import estimate_messages_tokens
from tollgate_core.tool_calls import join_tool_calls
from tollgate_core.types import (
    Completion,
    GenerationRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One configured upstream of a provider class.

    A provider class may yield several (say, OpenAI itself and another OpenAI-compatible
    service), each under its own `name`; models in the catalogue name the config by `name`.
    """

    name: str
    base_url: str
    api_key: str | None
    options: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Never print the key, even in a debugger or a log line.
        key = "set" if self.api_key else "unset"
        return f"ProviderConfig(name={self.name!r}, base_url={self.base_url!r}, api_key={key})"


class Provider(ABC):
    """Translates between Tollgate's types and one upstream's wire protocol.

    Subclasses set `kind` (the plugin's name, such as ``"openai"``), implement
    `configs_from_env` and `stream`. The server owns the pooled `aiohttp.ClientSession` and
    passes it in: a provider never creates or closes it.
    """

    kind: ClassVar[str]
    """Stable identifier of the provider class, such as ``"openai"``."""

    env_vars: ClassVar[tuple[str, ...]] = ()
    """Environment variables that configure this provider, listed by `tollgate providers list`."""

    needs_key: ClassVar[bool] = True
    """False for an upstream that takes no key (a local OpenAI-compatible server, the echo
    example): it is served without one. True upstreams without a key are listed but unused."""

    supported_extras: ClassVar[frozenset[str]] = frozenset()
    """The OpenAI request fields, beyond those `GenerationRequest` names, that this provider can
    carry in `GenerationRequest.extra` (such as ``"seed"``). The server passes only these; a
    provider refuses any other extra with `UpstreamBadRequest`."""

    supported_parameters: ClassVar[frozenset[str]] = frozenset()
    """The OpenAI request parameters beyond the plain text subset (model, messages of text,
    the token limit, temperature, top_p, stop, stream, user) that this provider carries out,
    named as in OpenAI's reference: ``"tools"`` (with ``tool_choice``, tool messages and
    assistant tool calls), ``"response_format"``, ``"reasoning_effort"``, ``"image_url"`` (image
    parts), ``"n"`` and so on, and every name in `supported_extras`. The server refuses any
    other parameter a request sets with 422 ``unsupported_parameter``, before any hold."""

    accepts_image_urls: ClassVar[bool] = True
    """False for a vendor that takes images only inline (Gemini): the gateway then fetches each
    ``https:`` image itself at planning, before any hold (`tollgate_core.images.fetch_image`,
    public addresses only), and hands the provider ``data:`` URLs."""

    image_tokens: ClassVar[int] = 1600
    """The most input tokens one image may cost on this vendor, by its published rule; the
    hold and the check of reported usage count this much per image."""

    supports_embeddings: ClassVar[bool] = False
    """True for a provider that implements `embed`: the server serves its models of kind
    ``embedding`` on ``/v1/embeddings`` and refuses them (400) otherwise, before any hold."""

    def __init__(self, *, config: ProviderConfig, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.http = http

    @property
    def name(self) -> str:
        return self.config.name

    @classmethod
    @abstractmethod
    def configs_from_env(cls, env: Mapping[str, str]) -> list[ProviderConfig]:
        """Read this provider's upstreams from the environment.

        Returns one config per upstream; an upstream without a key is still returned (with
        `api_key=None`) so it can be listed as unconfigured.
        """

    @abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """Yield `TextDelta`s as they arrive, then exactly one `StreamEnd`, last.

        A provider whose upstream reports usage before the end (the prompt's count) yields it
        once as a `UsageReport` as soon as it has it.

        Raises an `UpstreamError` subclass when the upstream fails. When the consumer stops
        iterating (`aclose()` or cancellation), the upstream connection must be closed at once
        so the upstream stops generating. Typed as an async generator because the gateway
        closes it with `aclose()`: write it as an ``async def`` with ``yield``.
        """

    async def generate(self, request: GenerationRequest) -> Completion:
        """Drain `stream()` into one completion. Override only when the upstream differs."""
        parts: list[str] = []
        calls: list[ToolCallDelta] = []
        end: StreamEnd | None = None
        async for event in self.stream(request):
            if isinstance(event, StreamEnd):
                end = event
            elif isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, ToolCallDelta):
                calls.append(event)
        if end is None:  # pragma: no cover - a contract violation by the provider
            raise RuntimeError(f"provider {self.name} ended its stream without a StreamEnd")
        return Completion(
            text="".join(parts),
            finish_reason=end.finish_reason,
            usage=end.usage,
            tool_calls=join_tool_calls(calls),
        )

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Embed every input of `request` in one upstream call: one vector per input, in order.

        Optional: a provider that implements it also sets `supports_embeddings`. The usage is
        the vendor's count, or the provider's own (`tollgate_core.embeddings.
        estimate_embedding_tokens`) marked ``estimated`` when the vendor reports none.

        Raises:
            UpstreamError: a subclass for each failure, as `stream` does; never the vendor's
                raw body.
        """
        raise UpstreamBadRequest(f"the {self.kind} provider does not serve embeddings")

    def check_embedding(self, request: EmbeddingRequest) -> None:
        """Refuse, before any hold, an embedding request this provider cannot translate (token
        ids for a vendor that takes only text, say). The default accepts everything.

        Raises:
            UpstreamBadRequest: with a message for the client, naming what to change.
        """
        return None

    @classmethod
    def supports(cls, parameter: str) -> bool:
        """Whether this provider carries out the OpenAI request `parameter`."""
        return parameter in cls.supported_parameters or parameter in cls.supported_extras

    def check_request(self, request: GenerationRequest) -> None:
        """Refuse, before any hold, a request this provider cannot translate (a combination of
        parameters its vendor does not take). The server calls it only for requests beyond
        plain text; the default accepts everything.

        Raises:
            UpstreamBadRequest: with a message for the client, naming what to change.
        """
        return None

    def count_tokens(self, messages: tuple[Message, ...]) -> int:
        """Estimate the prompt's tokens, for holds and context checks.

        The default is a conservative character-based estimate (see `tollgate_core.tokens`);
        a provider with an exact local tokenizer may override it.
        """
        return estimate_messages_tokens(messages)
