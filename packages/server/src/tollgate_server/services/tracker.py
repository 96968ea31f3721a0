"""The generations running in this process, for the shutdown drain.

Kept apart from the engine (`services.gateway`) so that `Runtime` can hold it without importing
the engine, which imports `Runtime`: no import cycle between the runtime and the services.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Running(Protocol):
    """What the drain needs of a generation: its task, and a way to end it."""

    task: asyncio.Task[None] | None

    def stop(self, reason: str) -> None: ...


class GenerationTracker:
    """The admitted, not yet finished generations of this process."""

    def __init__(self) -> None:
        self._running: set[Running] = set()

    def add(self, generation: Running) -> None:
        self._running.add(generation)

    def discard(self, generation: Running) -> None:
        self._running.discard(generation)

    def __len__(self) -> int:
        return len(self._running)

    def tasks(self) -> set[asyncio.Task[None]]:
        return {g.task for g in self._running if g.task is not None}

    async def drain(self, grace_seconds: float) -> None:
        """Give running generations `grace_seconds` to finish, then end the rest (each settles
        for what it produced); returns when every one has finished."""
        running = self.tasks()
        if running:
            await asyncio.wait(running, timeout=grace_seconds)
        for generation in list(self._running):
            generation.stop("shutdown")
        left = self.tasks()
        if left:
            await asyncio.wait(left)
