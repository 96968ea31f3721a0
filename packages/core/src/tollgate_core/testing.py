"""Test helpers for Tollgate and for third-party provider packages.

`FakeProvider` scripts deltas and usage with no network. `ProviderContract` (below) is the
shared contract test every provider package subclasses. This module needs pytest (and anyio for
the contract): install ``tollgate-core[testing]``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import ClassVar

import aiohttp
import pytest

from tollgate_core.embeddings import EmbeddingRequest, estimate_embedding_tokens
from tollgate_core.errors import (
    UpstreamAuthenticationError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from tollgate_core.fake_upstream import FakeUpstream, fake_vector
from tollgate_core.provider import Provider, ProviderConfig
from tollgate_core.types import (
    GenerationRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)
from tollgate_core.upstream import redact

__all__ = ["FakeProvider", "ProviderContract"]


class FakeProvider(Provider):
    """A provider that replays scripted deltas and usage, recording the requests it got."""

    kind: ClassVar[str] = "fake"

    deltas: Sequence[str] = ("Hello", ", ", "world")
    usage: Usage | None = Usage(input_tokens=10, output_tokens=3)
    delay: float = 0.0
    error: Exception | None = None

    def __init__(self, *, config: ProviderConfig, http: object = None) -> None:
        super().__init__(config=config, http=http)  # type: ignore[arg-type]
        self.calls: list[GenerationRequest] = []

    @classmethod
    def configs_from_env(cls, env: Mapping[str, str]) -> list[ProviderConfig]:
        return [ProviderConfig(name=cls.kind, base_url="memory://fake", api_key="fake")]

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        self.calls.append(request)
        if self.error is not None:
            raise self.error
        for text in self.deltas:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield TextDelta(text)
        yield StreamEnd(finish_reason="stop", usage=self.usage)


def _expected_deltas(count: int) -> list[str]:
    return [f"tok{i}" if i == 0 else f" tok{i}" for i in range(count)]


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class ProviderContract:
    """The contract every provider keeps, run over real HTTP against `FakeUpstream`.

    A provider package subclasses it in ``tests/test_contract.py`` (pytest collects classes
    named ``Test*`` only) and names its provider class; a provider whose upstream speaks one of
    the fake's three protocols needs nothing else::

        class TestOpenAIContract(ProviderContract):
            provider_class = OpenAIProvider

            def make_config(self, upstream: FakeUpstream) -> ProviderConfig:
                return ProviderConfig("openai", upstream.openai_base_url, self.api_key)

    The tests are async (anyio's pytest plugin on asyncio) and cover: deltas in order and
    ``StreamEnd`` once and last; usage exactly as reported; `generate` agreeing with `stream`;
    status errors mapped to the core errors; resets, cut streams and vendor error events;
    redaction of the key from every message; and the upstream connection being closed as soon
    as the consumer stops reading or is cancelled. A provider that sets `supports_embeddings`
    also keeps the embedding contract: one vector per input in order, the usage as reported (or
    estimated and flagged), status errors mapped and clean.
    """

    pytestmark = pytest.mark.anyio

    provider_class: ClassVar[type[Provider]]
    """The provider under test."""
    api_key: ClassVar[str] = "sk-contract-SECRET-0123456789abcdef"
    """A distinctive key: the fake echoes it in its error bodies, and no message may show it."""
    model: ClassVar[str] = "fake-model"

    # -- what a subclass may override ----------------------------------------------------------

    def make_config(self, upstream: FakeUpstream) -> ProviderConfig:
        """The config pointing the provider at `upstream` (default: its root URL)."""
        return ProviderConfig(
            name=self.provider_class.kind, base_url=upstream.url, api_key=self.api_key
        )

    def make_provider(self, upstream: FakeUpstream, http: aiohttp.ClientSession) -> Provider:
        """The provider under test, on the test's own session."""
        return self.provider_class(config=self.make_config(upstream), http=http)

    def make_request(
        self, text: str = "Say something.", *, max_tokens: int = 256
    ) -> GenerationRequest:
        """A request whose last user message is `text` (where the fake reads directives)."""
        return GenerationRequest(
            model=self.model,
            messages=(
                Message(role="system", content="You are terse."),
                Message(role="user", content=text),
            ),
            max_tokens=max_tokens,
        )

    # -- fixtures ------------------------------------------------------------------------------

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def upstream(self) -> AsyncIterator[FakeUpstream]:
        async with FakeUpstream() as upstream:
            yield upstream

    @pytest.fixture
    async def http(self) -> AsyncIterator[aiohttp.ClientSession]:
        async with aiohttp.ClientSession() as session:
            yield session

    @pytest.fixture
    def provider(self, upstream: FakeUpstream, http: aiohttp.ClientSession) -> Provider:
        return self.make_provider(upstream, http)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    async def drain(
        provider: Provider, request: GenerationRequest, into: list[StreamEvent] | None = None
    ) -> list[StreamEvent]:
        """Every event of one stream, appended to `into` as they arrive (kept on errors)."""
        events = [] if into is None else into
        async for event in provider.stream(request):
            events.append(event)
        return events

    def assert_clean(self, error: BaseException) -> None:
        """No key, and nothing shaped like one, in an error's message."""
        text = str(error)
        assert self.api_key not in text, f"the API key leaked into {text!r}"
        assert redact(text) == text, f"a key-shaped token leaked into {text!r}"

    # -- the contract --------------------------------------------------------------------------

    async def test_stream_yields_deltas_in_order_then_one_stream_end(
        self, provider: Provider, upstream: FakeUpstream
    ) -> None:
        events = await self.drain(provider, self.make_request("Hello [[fake:chunks=6]]"))
        record = upstream.last_record
        deltas = [e.text for e in events if isinstance(e, TextDelta)]
        ends = [e for e in events if isinstance(e, StreamEnd)]
        assert deltas == _expected_deltas(6)
        assert "".join(deltas) == record.text
        assert len(ends) == 1 and events[-1] is ends[0]
        assert ends[0].finish_reason == "stop"
        assert ends[0].usage == record.usage
        assert record.stream and record.completed

    async def test_stream_usage_buckets_match_the_upstream(
        self, provider: Provider, upstream: FakeUpstream
    ) -> None:
        events = await self.drain(provider, self.make_request("Hi [[fake:cached=3,reasoning=4]]"))
        end = events[-1]
        assert isinstance(end, StreamEnd)
        expected = upstream.last_record.usage
        assert expected is not None and end.usage is not None
        assert (end.usage.input_tokens, end.usage.output_tokens) == (
            expected.input_tokens,
            expected.output_tokens,
        )
        assert end.usage.cached_input_tokens == expected.cached_input_tokens == 3
        assert end.usage.reasoning_tokens == expected.reasoning_tokens == 4
        assert end.usage.output_tokens == 5 + 4  # reasoning is inside the output bucket

    async def test_generate_returns_the_same_text_and_usage(
        self, provider: Provider, upstream: FakeUpstream
    ) -> None:
        completion = await provider.generate(self.make_request("Hello [[fake:chunks=4]]"))
        record = upstream.last_record
        assert completion.text == "".join(_expected_deltas(4)) == record.text
        assert completion.usage == record.usage
        assert completion.finish_reason == "stop"

    async def test_max_tokens_reaches_the_upstream(
        self, provider: Provider, upstream: FakeUpstream
    ) -> None:
        events = await self.drain(
            provider, self.make_request("Hi [[fake:chunks=10]]", max_tokens=3)
        )
        end = events[-1]
        assert isinstance(end, StreamEnd)
        assert [e.text for e in events if isinstance(e, TextDelta)] == _expected_deltas(3)
        assert end.finish_reason == "length"
        assert end.usage is not None and end.usage.output_tokens == 3

    async def test_key_travels_in_the_vendor_header_only(
        self, provider: Provider, upstream: FakeUpstream
    ) -> None:
        await provider.generate(self.make_request())
        record = upstream.last_record
        assert record.api_key == self.api_key
        assert self.api_key not in record.url

    @pytest.mark.parametrize("mode", ["stream", "generate"])
    @pytest.mark.parametrize(
        ("status", "error_class"),
        [
            (400, UpstreamBadRequest),
            (401, UpstreamAuthenticationError),
            (429, UpstreamRateLimited),
            (500, UpstreamUnavailable),
            (503, UpstreamUnavailable),
        ],
    )
    async def test_status_errors_map_to_core_errors(
        self,
        provider: Provider,
        upstream: FakeUpstream,
        mode: str,
        status: int,
        error_class: type[UpstreamError],
    ) -> None:
        request = self.make_request(f"Hi [[fake:status={status},retry_after=3]]")
        with pytest.raises(error_class) as caught:
            if mode == "stream":
                await self.drain(provider, request)
            else:
                await provider.generate(request)
        assert caught.value.upstream_status == status
        assert str(status) in str(caught.value)
        self.assert_clean(caught.value)
        if status == 429:
            assert isinstance(caught.value, UpstreamRateLimited)
            assert caught.value.retry_after == 3
        assert len(upstream.records) == 1, "providers must not retry"

    # -- embeddings (providers that set `supports_embeddings`) ---------------------------------

    def _embedding_provider(self, provider: Provider) -> Provider:
        if not provider.supports_embeddings:
            pytest.skip(f"{self.provider_class.kind} serves no embeddings")
        return provider

    async def test_embed_answers_one_vector_per_input_in_order(
        self, provider: Provider, upstream: FakeUpstream
    ) -> None:
        provider = self._embedding_provider(provider)
        texts = ("first text", "second", "the third text")
        result = await provider.embed(EmbeddingRequest(model=self.model, inputs=texts))
        assert result.vectors == tuple(tuple(fake_vector(text)) for text in texts)
        record = upstream.last_record
        assert record.api_key == self.api_key and self.api_key not in record.url
        # The vendor's count when it reports one; otherwise the provider's, flagged.
        if record.usage is not None:
            assert result.usage == record.usage
        else:
            assert result.usage.estimated
            assert result.usage.input_tokens == estimate_embedding_tokens(texts)

    @pytest.mark.parametrize(
        ("status", "error_class"),
        [
            (400, UpstreamBadRequest),
            (401, UpstreamAuthenticationError),
            (429, UpstreamRateLimited),
            (503, UpstreamUnavailable),
        ],
    )
    async def test_embed_status_errors_map_to_core_errors(
        self,
        provider: Provider,
        upstream: FakeUpstream,
        status: int,
        error_class: type[UpstreamError],
    ) -> None:
        provider = self._embedding_provider(provider)
        request = EmbeddingRequest(model=self.model, inputs=(f"[[fake:status={status}]]",))
        with pytest.raises(error_class) as caught:
            await provider.embed(request)
        assert caught.value.upstream_status == status
        self.assert_clean(caught.value)
        assert len(upstream.records) == 1, "providers must not retry"

    async def test_reset_mid_stream_is_unavailable_after_the_deltas_before_it(
        self, provider: Provider
    ) -> None:
        events: list[StreamEvent] = []
        with pytest.raises(UpstreamUnavailable) as caught:
            await self.drain(provider, self.make_request("Hi [[fake:reset_after=2]]"), events)
        assert [e.text for e in events if isinstance(e, TextDelta)] == _expected_deltas(2)
        assert not any(isinstance(e, StreamEnd) for e in events)
        self.assert_clean(caught.value)

    async def test_stream_cut_before_its_terminal_event_is_unavailable(
        self, provider: Provider
    ) -> None:
        events: list[StreamEvent] = []
        with pytest.raises(UpstreamUnavailable):
            await self.drain(provider, self.make_request("Hi [[fake:stop_after=2]]"), events)
        assert [e.text for e in events if isinstance(e, TextDelta)] == _expected_deltas(2)

    async def test_vendor_error_event_mid_stream_raises_the_mapped_error(
        self, provider: Provider
    ) -> None:
        events: list[StreamEvent] = []
        with pytest.raises(UpstreamRateLimited) as caught:
            await self.drain(
                provider, self.make_request("Hi [[fake:error_after=2,error_status=429]]"), events
            )
        assert [e.text for e in events if isinstance(e, TextDelta)] == _expected_deltas(2)
        self.assert_clean(caught.value)
        with pytest.raises(UpstreamUnavailable) as caught_500:
            await self.drain(provider, self.make_request("Hi [[fake:error_after=1]]"))
        self.assert_clean(caught_500.value)

    async def test_missing_usage_is_none(self, provider: Provider) -> None:
        events = await self.drain(provider, self.make_request("Hi [[fake:no_usage]]"))
        end = events[-1]
        assert isinstance(end, StreamEnd) and end.usage is None
        completion = await provider.generate(self.make_request("Hi [[fake:no_usage]]"))
        assert completion.usage is None
        assert completion.text == "".join(_expected_deltas(5))

    async def test_reported_usage_is_trusted_over_the_text(self, provider: Provider) -> None:
        events = await self.drain(provider, self.make_request("Hi [[fake:usage_output=999]]"))
        end = events[-1]
        assert isinstance(end, StreamEnd)
        assert end.usage is not None and end.usage.output_tokens == 999

    async def test_aclose_closes_the_upstream_connection(
        self, provider: Provider, upstream: FakeUpstream
    ) -> None:
        stream = provider.stream(self.make_request("Hi [[fake:chunks=1000,delay_ms=20]]"))
        assert isinstance(stream, AsyncGenerator), "stream() must be an async generator"
        deltas = []
        async for event in stream:
            deltas.append(event)
            if len(deltas) == 2:
                break
        await stream.aclose()
        record = upstream.last_record
        assert await record.wait_disconnected_async(2.0), f"upstream saw {record.outcome}"

    async def test_cancellation_mid_stream_closes_the_upstream_connection(
        self, provider: Provider, upstream: FakeUpstream
    ) -> None:
        # What the gateway's idle timeout does: cancel the consumer while it waits.
        events: list[StreamEvent] = []
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await self.drain(
                    provider, self.make_request("Hi [[fake:stall_after=1,stall_s=30]]"), events
                )
        assert [e.text for e in events if isinstance(e, TextDelta)] == _expected_deltas(1)
        assert await upstream.last_record.wait_disconnected_async(2.0)

    async def test_cancellation_before_the_first_byte_closes_the_connection(
        self, provider: Provider, upstream: FakeUpstream
    ) -> None:
        # What the gateway's first-token timeout does.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await self.drain(provider, self.make_request("Hi [[fake:stall_first_s=30]]"))
        assert await upstream.last_record.wait_disconnected_async(2.0)

    @pytest.mark.parametrize("mode", ["stream", "generate"])
    async def test_unreachable_upstream_is_unavailable(
        self, http: aiohttp.ClientSession, upstream: FakeUpstream, mode: str
    ) -> None:
        config = self.make_config(upstream)
        dead = config.base_url.replace(f":{upstream.port}", f":{_unused_port()}")
        provider = self.provider_class(
            config=ProviderConfig(name=config.name, base_url=dead, api_key=config.api_key),
            http=http,
        )
        with pytest.raises(UpstreamUnavailable) as caught:
            if mode == "stream":
                await self.drain(provider, self.make_request())
            else:
                await provider.generate(self.make_request())
        self.assert_clean(caught.value)
