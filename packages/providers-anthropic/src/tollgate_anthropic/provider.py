"""`AnthropicProvider`: Anthropic's Messages API over the server's session."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import ClassVar

import aiohttp
import orjson
from tollgate_core import (
    Completion,
    GenerationRequest,
    Provider,
    ProviderConfig,
    StreamEvent,
    TextDelta,
    UpstreamError,
    UsageReport,
)
from tollgate_core.sse import iter_events
from tollgate_core.upstream import (
    TRANSPORT_ERRORS,
    end_response,
    incomplete_stream_error,
    post,
    post_for_body,
    response_error,
    transport_error,
    upstream_request_id,
)

from tollgate_anthropic import wire


class AnthropicProvider(Provider):
    """Claude models through ``POST /v1/messages``, streaming and not."""

    kind: ClassVar[str] = "anthropic"
    env_vars: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
    supported_extras: ClassVar[frozenset[str]] = wire.SUPPORTED_EXTRAS

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

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream a message: text deltas, then one `StreamEnd` with the usage."""
        response = await post(
            self.http,
            self._url,
            body=orjson.dumps(wire.build_body(request, stream=True)),
            headers=self._stream_headers,
            secrets=self._secrets,
        )
        parser = wire.EventParser(self._secrets)
        complete = False
        try:
            if response.status >= 300:
                error = await response_error(response, secrets=self._secrets)
                complete = True
                raise error
            async with aclosing(iter_events(response.content)) as events:
                reported = False
                async for event in events:
                    if text := parser.feed(event.event, event.data):
                        yield TextDelta(text)
                    elif not reported and (usage := parser.usage) is not None:
                        # message_start carries the exact prompt count: hand it over at once,
                        # so a stream cut short is charged the vendor's count.
                        reported = True
                        yield UsageReport(usage)
                    if parser.done:
                        break
            # After message_stop the body is normally over too; if not, close rather than wait.
            complete = response.content.is_eof()
        except UpstreamError as exc:
            # An error event mid-stream: the request id is in the headers the stream began with.
            exc.request_id = exc.request_id or upstream_request_id(response.headers)
            raise
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, secrets=self._secrets) from exc
        finally:
            end_response(response, complete=complete)
        if not parser.finished:
            raise incomplete_stream_error()
        yield parser.end()

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
