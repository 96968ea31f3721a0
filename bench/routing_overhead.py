"""What routing adds to a request with one deployment, measured alone: a generation's upstream
events read straight from a provider (as before routing) and through `RoutedCall` (the choice,
the attempt loop, the health bookkeeping), in alternating rounds so that a busy machine weighs
on both alike. The provider replays 16 deltas and the end from memory. Prints CPU microseconds
per request; compare with the server's CPU per request from `bench/run.py`.

    uv run python bench/routing_overhead.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from datetime import UTC, datetime

from tollgate_core import GenerationRequest, Message, Price, ProviderConfig
from tollgate_core.testing import FakeProvider
from tollgate_server.services.catalogue import CatalogueModel
from tollgate_server.services.credentials import CredentialBox
from tollgate_server.services.routing import RoutedCall, Router
from tollgate_server.settings import Settings

MODEL = CatalogueModel(
    id=1,
    name="gpt-4o-mini",
    provider="fake",
    upstream_model="gpt-4o-mini",
    enabled=True,
    free=False,
    context_window=128_000,
    max_output_tokens=16_384,
    default_max_tokens=16,
    created_at=datetime.now(UTC),
    price=Price(150_000, 600_000, id=1),
    price_effective_from=None,
)
REQUEST = GenerationRequest(
    model="gpt-4o-mini", messages=(Message(role="user", content="Hello"),), max_tokens=16
)


class Provider(FakeProvider):
    deltas = tuple(f" tok{i}" for i in range(16))

    async def stream(self, request: GenerationRequest):  # type: ignore[no-untyped-def,override]
        # FakeProvider without its record of calls, which would grow through the run.
        for text in self.deltas:
            yield self._delta(text)
        yield self._end

    def __init__(self) -> None:
        from tollgate_core import StreamEnd, TextDelta

        super().__init__(config=ProviderConfig("fake", "memory://", "k"))
        self._delta = TextDelta
        self._end = StreamEnd(finish_reason="stop", usage=self.usage)


async def direct(provider: Provider, requests: int) -> float:
    started = time.process_time()
    for _ in range(requests):
        events = provider.stream(REQUEST)
        async for _event in events:
            pass
        await events.aclose()
    return (time.process_time() - started) / requests * 1e6


async def routed(router: Router, requests: int) -> float:
    started = time.process_time()
    for _ in range(requests):
        # What plan_generation adds: the routes, from memory.
        await router.fresh()
        routes = [router.routes(MODEL)]
        call = RoutedCall(router, routes, REQUEST, tokens=30)
        events = await call.open()
        for _event in call.early:
            pass
        async for _event in events:
            pass
        await call.close()
    return (time.process_time() - started) / requests * 1e6


async def main(requests: int, rounds: int) -> None:
    provider = Provider()
    router = Router(
        settings=Settings(),
        classes={},
        defaults={"fake": provider},
        env={},
        http=None,  # type: ignore[arg-type]
        box=CredentialBox("bench"),
        engine=None,  # type: ignore[arg-type]
        rng=random.Random(1),
    )
    # The zero-configuration default: the provider's upstream from the environment.
    router._loaded_version, router._loaded_at = router._announced, time.monotonic() + 3600
    assert router.routes(MODEL)
    await direct(provider, 1000)
    await routed(router, 1000)
    plain: list[float] = []
    through: list[float] = []
    for _ in range(rounds):
        plain.append(await direct(provider, requests))
        through.append(await routed(router, requests))
    a, b = statistics.median(plain), statistics.median(through)
    print(f"provider stream read directly: {a:.1f} us CPU per request (median of {rounds})")
    print(f"through RoutedCall (1 route):  {b:.1f} us CPU per request")
    print(f"routing adds:                  {b - a:.1f} us CPU per request")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
