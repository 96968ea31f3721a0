"""API keys: created with their secret shown once, stored as a hash, revoked by id."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from tollgate_core import format_credits, parse_credits

from tollgate_server.db.listener import Listener
from tollgate_server.db.raw import run_with_retry
from tollgate_server.errors import Conflict, InvalidParameters, not_found
from tollgate_server.schemas import ApiKeyCreate, ApiKeyUpdate
from tollgate_server.security.tokens import hash_api_key, new_api_key

logger = logging.getLogger("tollgate.keys")

KEY_COLUMNS = (
    "id, name, prefix, models, expires_at, revoked_at, last_used_at, created_at, "
    "spend_limit, spend_period, rpm, tpm"
)
SPEND_SQL = (
    "coalesce((SELECT s.held + s.charged FROM key_spend s WHERE s.api_key_id = api_keys.id "
    "AND s.period_start = tollgate_period_start(api_keys.spend_period, "
    "now() + make_interval(secs => :offset))), 0) AS spend"
)
"""A key's spend in its current period, from the counter the admission statement keeps."""


def key_public(row: Any) -> dict[str, Any]:
    public = {column: getattr(row, column) for column in KEY_COLUMNS.split(", ")}
    if row.spend_limit is not None:
        public["spend_limit"] = format_credits(row.spend_limit)
    public["spend"] = format_credits(getattr(row, "spend", 0))
    return public


def _limits(data: ApiKeyCreate | ApiKeyUpdate) -> dict[str, Any]:
    return {
        "spend_limit": parse_credits(data.spend_limit) if data.spend_limit is not None else None,
        "spend_period": data.spend_period,
        "rpm": data.rpm,
        "tpm": data.tpm,
    }


async def create_key(
    *, session: AsyncSession, account_id: uuid.UUID, data: ApiKeyCreate, max_keys: int
) -> dict[str, Any]:
    """Create a key, unless the account already holds `max_keys` live ones (409).

    The account's row is locked first, so concurrent creations cannot all slip under the cap.
    """
    secret, prefix, key_hash = new_api_key()
    await session.execute(
        text("SELECT 1 FROM accounts WHERE id = :account FOR UPDATE"), {"account": account_id}
    )
    row = (
        await session.execute(
            text(
                "INSERT INTO api_keys (account_id, name, prefix, key_hash, models, expires_at, "
                "spend_limit, spend_period, rpm, tpm) "
                "SELECT :account, :name, :prefix, :hash, :models, :expires, "
                "CAST(:spend_limit AS BIGINT), :spend_period, :rpm, :tpm "
                "WHERE (SELECT count(*) FROM api_keys WHERE account_id = :account "
                "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())) < :max "
                f"RETURNING {KEY_COLUMNS}"
            ),
            {
                "account": account_id,
                "name": data.name,
                "prefix": prefix,
                "hash": key_hash,
                "models": data.models,
                "expires": data.expires_at,
                "max": max_keys,
                **_limits(data),
            },
        )
    ).one_or_none()
    if row is None:
        await session.rollback()
        raise Conflict(
            "too_many_api_keys",
            f"an account may hold at most {max_keys} live API keys; revoke one first",
        )
    await session.commit()
    return {**key_public(row), "key": secret}


async def list_keys(
    *, session: AsyncSession, account_id: uuid.UUID, clock_offset: float = 0.0
) -> list[dict[str, Any]]:
    """The account's keys, newest first, each with its spend in its current period."""
    rows = await session.execute(
        text(
            f"SELECT {KEY_COLUMNS}, {SPEND_SQL} FROM api_keys WHERE account_id = :account "
            "ORDER BY created_at DESC"
        ),
        {"account": account_id, "offset": clock_offset},
    )
    return [key_public(r) for r in rows]


async def update_key(
    *,
    session: AsyncSession,
    key_id: uuid.UUID,
    account_id: uuid.UUID | None,
    data: ApiKeyUpdate,
    clock_offset: float = 0.0,
) -> dict[str, Any]:
    """Change a key's limits (only the fields sent; null removes a limit). With `account_id`,
    only that account's key (others answer 404). The next admission reads the new limits.

    A key's spend is counted per period start, so changing `spend_period` counts afresh in the
    new kind of period (spend already made in the current day, week or month is not carried
    over); the limit itself applies at once to what the current period has spent.
    """
    changes = _limits(data)
    sent = data.model_fields_set & set(changes)
    if not sent:
        raise InvalidParameters("validation_error", "send at least one of " + ", ".join(changes))
    assignments = ", ".join(
        f"{name} = CAST(:{name} AS BIGINT)" if name == "spend_limit" else f"{name} = :{name}"
        for name in sorted(sent)
    )
    row = (
        await session.execute(
            text(
                f"UPDATE api_keys SET {assignments} WHERE id = :id "
                "AND (CAST(:account AS UUID) IS NULL OR account_id = :account) "
                f"RETURNING {KEY_COLUMNS}, {SPEND_SQL}"
            ),
            {
                "id": key_id,
                "account": account_id,
                "offset": clock_offset,
                **{name: changes[name] for name in sent},
            },
        )
    ).one_or_none()
    if row is None:
        raise not_found("key")
    await session.commit()
    return key_public(row)


async def revoke_key(
    *, session: AsyncSession, key_id: uuid.UUID, account_id: uuid.UUID | None
) -> dict[str, Any]:
    """Revoke a key. With `account_id`, only that account's key (others answer 404)."""
    row = (
        await session.execute(
            text(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = :id "
                "AND (CAST(:account AS UUID) IS NULL OR account_id = :account) "
                f"RETURNING {KEY_COLUMNS}, {SPEND_SQL}"
            ),
            {"id": key_id, "account": account_id, "offset": 0.0},
        )
    ).one_or_none()
    if row is None:
        raise not_found("key")
    await session.commit()
    return key_public(row)


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    key_id: uuid.UUID
    account_id: uuid.UUID
    models: tuple[str, ...] | None


KEYS_CHANNEL = "tollgate_keys"
CACHE_SECONDS = 30.0
"""Longest a key is trusted from memory; a revocation anywhere is announced at once anyway."""
TOUCH_SECONDS = 60.0
"""`last_used_at` is written at most this often per key, never on every request."""
MAX_CACHED = 10_000

LOOKUP_SQL = """
SELECT id, account_id, models, expires_at FROM api_keys
WHERE key_hash = $1 AND revoked_at IS NULL
"""
TOUCH_SQL = "UPDATE api_keys SET last_used_at = now() WHERE id = $1"


@dataclass(slots=True)
class _Cached:
    identity: KeyIdentity
    expires_at: datetime | None
    cached_at: float
    touched_at: float


class KeyCache:
    """API keys by hash, from memory: no database round trip for a key seen in the last
    `CACHE_SECONDS`. Revoking or changing a key fires a NOTIFY (a trigger in the schema) that
    empties every server's cache before its next request."""

    def __init__(self, pool: asyncpg.Pool, listener: Listener) -> None:
        self._pool = pool
        self._entries: dict[bytes, _Cached] = {}
        self._touches: set[asyncio.Task[None]] = set()
        listener.subscribe(KEYS_CHANNEL, self.clear)

    def clear(self) -> None:
        self._entries.clear()

    async def identify(self, secret: str) -> KeyIdentity | None:
        """The key's identity, or None when it is unknown, revoked or expired."""
        digest = hash_api_key(secret)
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is None or now - entry.cached_at > CACHE_SECONDS:
            row = await run_with_retry(self._pool, lambda conn: conn.fetchrow(LOOKUP_SQL, digest))
            if row is None:
                self._entries.pop(digest, None)
                return None
            models = tuple(row["models"]) if row["models"] is not None else None
            identity = KeyIdentity(key_id=row["id"], account_id=row["account_id"], models=models)
            if len(self._entries) >= MAX_CACHED:
                self._entries.clear()
            entry = _Cached(identity, row["expires_at"], cached_at=now, touched_at=0.0)
            self._entries[digest] = entry
        if key_expired(entry.expires_at, datetime.now(UTC)):
            return None
        if now - entry.touched_at > TOUCH_SECONDS:
            entry.touched_at = now
            task = asyncio.create_task(self._touch(entry.identity.key_id))
            self._touches.add(task)
            task.add_done_callback(self._touches.discard)
        return entry.identity

    async def _touch(self, key_id: uuid.UUID) -> None:
        try:
            await run_with_retry(self._pool, lambda conn: conn.execute(TOUCH_SQL, key_id))
        except Exception:  # bookkeeping only: never fail a request for it
            logger.warning("could not record the use of key %s", key_id)


def key_expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and expires_at <= now
