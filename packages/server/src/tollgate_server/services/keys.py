"""API keys: created with their secret shown once, stored as a hash, revoked by id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tollgate_server.errors import not_found
from tollgate_server.schemas import ApiKeyCreate
from tollgate_server.security.tokens import hash_api_key, new_api_key

KEY_COLUMNS = "id, name, prefix, models, expires_at, revoked_at, last_used_at, created_at"


def key_public(row: Any) -> dict[str, Any]:
    return {column: getattr(row, column) for column in KEY_COLUMNS.split(", ")}


async def create_key(
    *, session: AsyncSession, account_id: uuid.UUID, data: ApiKeyCreate
) -> dict[str, Any]:
    secret, prefix, key_hash = new_api_key()
    row = (
        await session.execute(
            text(
                "INSERT INTO api_keys (account_id, name, prefix, key_hash, models, expires_at) "
                "VALUES (:account, :name, :prefix, :hash, :models, :expires) "
                f"RETURNING {KEY_COLUMNS}"
            ),
            {
                "account": account_id,
                "name": data.name,
                "prefix": prefix,
                "hash": key_hash,
                "models": data.models,
                "expires": data.expires_at,
            },
        )
    ).one()
    await session.commit()
    return {**key_public(row), "key": secret}


async def list_keys(*, session: AsyncSession, account_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = :account "
            "ORDER BY created_at DESC"
        ),
        {"account": account_id},
    )
    return [key_public(r) for r in rows]


async def revoke_key(
    *, session: AsyncSession, key_id: uuid.UUID, account_id: uuid.UUID | None
) -> dict[str, Any]:
    """Revoke a key. With `account_id`, only that account's key (others answer 404)."""
    row = (
        await session.execute(
            text(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = :id "
                "AND (CAST(:account AS UUID) IS NULL OR account_id = :account) "
                f"RETURNING {KEY_COLUMNS}"
            ),
            {"id": key_id, "account": account_id},
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


LOOKUP_SQL = """
UPDATE api_keys SET last_used_at = now()
WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
RETURNING id, account_id, models
"""


async def identify_key(conn: asyncpg.Connection, secret: str) -> KeyIdentity | None:
    """The key's identity, or None when it is unknown, revoked or expired."""
    row = await conn.fetchrow(LOOKUP_SQL, hash_api_key(secret))
    if row is None:
        return None
    models = tuple(row["models"]) if row["models"] is not None else None
    return KeyIdentity(key_id=row["id"], account_id=row["account_id"], models=models)


def key_expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and expires_at <= now
