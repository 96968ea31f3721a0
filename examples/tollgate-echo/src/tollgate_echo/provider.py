"""`EchoProvider`: repeats the last user message back, one word per delta, with no network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import ClassVar

from tollgate_core import (
    ConfigurationError,
    GenerationRequest,
    Provider,
    ProviderConfig,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)


class EchoProvider(Provider):
    """Echoes the last user message word by word; `max_tokens` counts words.

    Usage is exact by construction: input is the core estimate of the prompt, output is one
    token per word sent.
    """

    kind: ClassVar[str] = "echo"
    env_vars: ClassVar[tuple[str, ...]] = ("TOLLGATE_ECHO_DELAY_MS",)
    needs_key: ClassVar[bool] = False

    @classmethod
    def configs_from_env(cls, env: Mapping[str, str]) -> list[ProviderConfig]:
        """One upstream named ``echo``; ``TOLLGATE_ECHO_DELAY_MS`` slows it down for demos."""
        delay = env.get("TOLLGATE_ECHO_DELAY_MS", "0")
        if not delay.isdigit():
            raise ConfigurationError("TOLLGATE_ECHO_DELAY_MS must be a whole number of ms")
        return [
            ProviderConfig(name="echo", base_url="echo:", api_key=None, options={"delay_ms": delay})
        ]

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """Yield the last user message's words, then one `StreamEnd`."""
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        words = last_user.split()
        sent = words[: request.max_tokens]
        delay = int(self.config.options.get("delay_ms", "0")) / 1000
        for index, word in enumerate(sent):
            if delay:
                await asyncio.sleep(delay)
            yield TextDelta(word if index == 0 else f" {word}")
        usage = Usage(input_tokens=self.count_tokens(request.messages), output_tokens=len(sent))
        yield StreamEnd(finish_reason="length" if len(sent) < len(words) else "stop", usage=usage)
