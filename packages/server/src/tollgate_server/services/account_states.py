"""Whether an authenticated caller's account may act: it exists and is not disabled.

Access tokens are checked by signature and API keys from memory, so neither says whether the
account was disabled (or removed) since. Every authenticated route asks `AccountStates`, which
answers from memory: no database round trip for an account seen in the last `CACHE_SECONDS`.
Disabling, enabling or deleting an account fires a NOTIFY (a trigger in the schema) that empties
every server's memory before its next request, as for API keys.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg

from tollgate_server.db.listener import Listener
from tollgate_server.db.raw import run_with_retry
from tollgate_server.errors import Forbidden, Refused, unauthenticated

ACCOUNTS_CHANNEL = "tollgate_accounts"
CACHE_SECONDS = 30.0
"""Longest a state is trusted from memory; a change anywhere is announced at once anyway."""
MAX_CACHED = 10_000

STATE_SQL = "SELECT disabled FROM accounts WHERE id = $1"


def account_disabled() -> Refused:
    return Forbidden("account_disabled", "this account is disabled")


class AccountStates:
    def __init__(self, pool: asyncpg.Pool, listener: Listener) -> None:
        self._pool = pool
        self._entries: dict[uuid.UUID, tuple[bool | None, float]] = {}
        """account id -> (disabled, or None when there is no such account; when read)."""
        self._epoch = 0
        """Bumped by every `clear`: a state read before a change must not be stored after it."""
        self._reading: dict[uuid.UUID, asyncio.Future[bool | None]] = {}
        """Reads under way: a burst of first requests of one account makes one query."""
        listener.subscribe(ACCOUNTS_CHANNEL, self.clear)

    def clear(self) -> None:
        self._entries.clear()
        self._reading.clear()  # a read begun before the change must not answer after it
        self._epoch += 1

    async def check(self, account_id: uuid.UUID) -> None:
        """Return when the account may act.

        Raises:
            Refused: 401 ``unauthenticated`` for an account that does not exist (a validly
                signed token can outlive its account), 403 ``account_disabled`` for a disabled
                one.
        """
        now = time.monotonic()
        entry = self._entries.get(account_id)
        if entry is not None and now - entry[1] <= CACHE_SECONDS:
            disabled = entry[0]
        else:
            disabled = await self._read(account_id, now)
        if disabled is None:
            raise unauthenticated("this account no longer exists")
        if disabled:
            raise account_disabled()

    async def _read(self, account_id: uuid.UUID, now: float) -> bool | None:
        task = self._reading.get(account_id)
        if task is None:
            # A task of its own: a requester that leaves does not cancel the others' read.
            task = asyncio.ensure_future(self._query(account_id, self._epoch, now))
            self._reading[account_id] = task
            task.add_done_callback(lambda done: self._read_done(account_id, done))
        return await asyncio.shield(task)

    def _read_done(self, account_id: uuid.UUID, task: asyncio.Future[bool | None]) -> None:
        if self._reading.get(account_id) is task:
            del self._reading[account_id]
        if not task.cancelled():
            task.exception()  # its waiters have it; never "exception was never retrieved"

    async def _query(self, account_id: uuid.UUID, epoch: int, now: float) -> bool | None:
        row = await run_with_retry(self._pool, lambda conn: conn.fetchrow(STATE_SQL, account_id))
        disabled: bool | None = row["disabled"] if row is not None else None
        if epoch == self._epoch:
            if len(self._entries) >= MAX_CACHED:
                self._entries.clear()
            self._entries[account_id] = (disabled, now)
        return disabled
