"""`AnthropicProvider`: Anthropic's Messages API over the server's session."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import ClassVar

import aiohttp
import orjson
from tollgate_core import (
    Completion,
    GenerationRequest,
    Provider,
    ProviderConfig,
    StreamEvent,
)
from tollgate_core.streaming import stream_events
from tollgate_core.upstream import post_for_body

from tollgate_anthropic import wire


class AnthropicProvider(Provider):
    """Claude models through ``POST /v1/messages``, streaming and not."""

    kind: ClassVar[str] = "anthropic"
    env_vars: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
    supported_extras: ClassVar[frozenset[str]] = wire.SUPPORTED_EXTRAS
    supported_parameters: ClassVar[frozenset[str]] = wire.SUPPORTED_PARAMETERS
    image_tokens: ClassVar[int] = 1600
    """Anthropic's rule is width x height / 750, and larger images are scaled to about 1.15
    megapixels: at most about 1600 tokens."""

    def __init__(self, *, config: ProviderConfig, http: aiohttp.ClientSession) -> None:
        super().__init__(config=config, http=http)
        base = config.base_url.rstrip("/")
        self._url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
        headers = {"Content-Type": "application/json", "anthropic-version": wire.API_VERSION}
        if config.api_key:
            headers["x-api-key"] = config.api_key
        self._headers = headers
        self._stream_headers = {**headers, "Accept": "text/event-stream"}
        self._secrets = (config.api_key,)

    @classmethod
    def configs_from_env(cls, env: Mapping[str, str]) -> list[ProviderConfig]:
        """One upstream named ``anthropic``: ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL``
        (default ``https://api.anthropic.com``)."""
        return [
            ProviderConfig(
                name="anthropic",
                base_url=(env.get("ANTHROPIC_BASE_URL") or wire.DEFAULT_BASE_URL).rstrip("/"),
                api_key=env.get("ANTHROPIC_API_KEY") or None,
            )
        ]

    def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream a message: text deltas, then one `StreamEnd` with the usage."""
        return stream_events(
            self.http,
            self._url,
            body=orjson.dumps(wire.build_body(request, stream=True)),
            headers=self._stream_headers,
            parser=wire.EventParser(self._secrets),
            secrets=self._secrets,
        )

    def check_request(self, request: GenerationRequest) -> None:
        """Translate once at planning, so what Anthropic cannot take is refused before a hold."""
        wire.build_body(request, stream=True)

    async def generate(self, request: GenerationRequest) -> Completion:
        """One non-streaming Messages API call."""
        data = await post_for_body(
            self.http,
            self._url,
            body=orjson.dumps(wire.build_body(request, stream=False)),
            headers=self._headers,
            secrets=self._secrets,
        )
        return wire.parse_completion(data, self._secrets)
