"""`UpstreamRecord`: what the fake upstream received, and what it did with it."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from tollgate_core.fake_upstream.dialects import ProtocolName
from tollgate_core.fake_upstream.directives import Directives
from tollgate_core.types import Usage

Outcome = Literal[
    "pending",
    "completed",
    "error_status",
    "stopped",
    "reset",
    "error_event",
    "disconnected",
    "shutdown",
]


@dataclass(eq=False)
class UpstreamRecord:
    """One request the fake upstream received, and what it did with it.

    The fake updates a record while it answers; read `outcome` after `wait_finished`.
    """

    protocol: ProtocolName
    method: str
    path: str
    url: str
    """Path and query string as received, to check that no key travelled in the URL."""
    query: dict[str, str]
    headers: dict[str, str]
    """Request headers with lower-cased names."""
    body: dict[str, Any]
    model: str
    stream: bool
    api_key: str | None
    """The key found in the protocol's own header (``Authorization: Bearer``, ``x-goog-api-key``,
    ``x-api-key``); None when that header was missing, wherever else a key may have been."""
    directives: Directives | None = None
    status: int = 200
    """The HTTP status the fake answered with."""
    text: str = ""
    """The text actually sent (deltas written before any cut)."""
    chunks_sent: int = 0
    usage: Usage | None = None
    """The usage the fake reported, in Tollgate's buckets; None if none was sent. A provider
    must report exactly this."""
    finish_reason: str | None = None
    """The finish reason sent, in Tollgate's words; None if the stream was cut before it."""
    outcome: Outcome = "pending"
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)
    _disconnect: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def completed(self) -> bool:
        """True when the whole response was sent, terminal event included."""
        return self.outcome in ("completed", "error_status")

    @property
    def disconnected(self) -> bool:
        """True when the client went away before the fake had sent everything."""
        return self.outcome == "disconnected"

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait_disconnected(self, timeout: float) -> bool:
        """Block until the client disconnects (True) or `timeout` seconds pass (False)."""
        return self._disconnect.wait(timeout)

    def wait_finished(self, timeout: float) -> bool:
        """Block until the fake is done with this request, whatever the outcome."""
        return self._finished.wait(timeout)

    async def wait_disconnected_async(self, timeout: float) -> bool:  # noqa: ASYNC109
        """`wait_disconnected` for async code, in any event loop or thread."""
        return await _poll(self._disconnect, timeout)

    async def wait_finished_async(self, timeout: float) -> bool:  # noqa: ASYNC109
        """`wait_finished` for async code, in any event loop or thread."""
        return await _poll(self._finished, timeout)

    def _finish(self, outcome: Outcome) -> None:
        if self.outcome == "pending":
            self.outcome = outcome
            if outcome == "disconnected":
                self._disconnect.set()
        self._finished.set()


async def _poll(event: threading.Event, timeout: float) -> bool:  # noqa: ASYNC109
    # A threading.Event, because the fake may run in another thread and loop than the waiter.
    deadline = time.monotonic() + timeout
    while not event.is_set():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.005)
    return True
