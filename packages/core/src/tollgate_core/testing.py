"""Test helpers for Tollgate and for third-party provider packages.

`FakeProvider` scripts deltas and usage with no network. `ProviderContract` (below) is the
shared contract test every provider package subclasses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import ClassVar

from tollgate_core.provider import Provider, ProviderConfig
from tollgate_core.types import GenerationRequest, StreamEnd, StreamEvent, TextDelta, Usage


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

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        self.calls.append(request)
        if self.error is not None:
            raise self.error
        for text in self.deltas:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield TextDelta(text)
        yield StreamEnd(finish_reason="stop", usage=self.usage)
