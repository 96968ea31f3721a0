"""Alerts as signed webhooks, through an outbox.

The events (an account's available balance falling below its threshold; a key reaching 80 and
100 per cent of its budget in a period) are rows of `webhook_events`, written by the very
statement that causes them: the admission statement (`tollgate_server.services.ledger`) and a
deduction's transaction. So an event is never lost (it commits with its cause) and never sent
for a change that rolled back. Each server process runs `run_webhooks`: it takes one due event at
a time with ``FOR UPDATE SKIP LOCKED`` (so processes never send the same event at once), POSTs it
to the admin's URL, and records the answer; a failure is retried with a doubling back-off (from
`webhook_backoff_seconds`, at most an hour apart) for `webhook_retry_hours` (more than a day)
before it is given up. A process killed between the commit and the delivery leaves the event
due: the next process to run delivers it. Receivers drop repeats by the event's id (a delivery
whose answer was lost is sent again).

The body is ``{"id", "type", "created_at", "data"}``; the ``Tollgate-Signature`` header is
``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>``, as Stripe signs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from tollgate_core import format_credits, parse_credits

from tollgate_server.db.raw import raw_connection
from tollgate_server.errors import not_found

if TYPE_CHECKING:
    from tollgate_server.runtime import Runtime
    from tollgate_server.settings import Settings

logger = logging.getLogger("tollgate.webhooks")

SIGNATURE_HEADER = "Tollgate-Signature"
MAX_BACKOFF_SECONDS = 3600.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def event_body(row: Any) -> bytes:
    data = row["data"]
    if isinstance(data, str):
        data = orjson.loads(data)
    return orjson.dumps(
        {
            "id": str(row["id"]),
            "type": row["type"],
            "created_at": row["created_at"].isoformat(),
            "data": data,
        }
    )


DUE_SQL = """
SELECT id, type, data, created_at, attempts FROM webhook_events
WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED
"""

DELIVERED_SQL = """
UPDATE webhook_events SET delivered_at = now(), attempts = attempts + 1, last_status = $2,
    last_error = NULL
WHERE id = $1
"""

FAILED_SQL = """
UPDATE webhook_events SET attempts = attempts + 1, last_status = $2, last_error = $3,
    next_attempt_at = now() + make_interval(secs => $4),
    gave_up_at = CASE WHEN now() - created_at > make_interval(secs => $5) THEN now() END
WHERE id = $1
"""


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before the next attempt, after `attempts` failed ones (1, 2, ...)."""
    return float(
        min(settings.webhook_backoff_seconds * 2 ** min(attempts - 1, 30), MAX_BACKOFF_SECONDS)
    )


async def deliver_due(pool: asyncpg.Pool, client: aiohttp.ClientSession, settings: Settings) -> int:
    """Send every event due now, one at a time; returns how many were delivered."""
    delivered = 0
    async with raw_connection(pool) as conn:
        endpoint = await conn.fetchrow("SELECT url, secret FROM webhook_endpoint WHERE id = 1")
        if endpoint is None:
            return 0
        while True:
            async with conn.transaction():
                row = await conn.fetchrow(DUE_SQL)
                if row is None:
                    return delivered
                body = event_body(row)
                status, error = await _post(client, endpoint["url"], endpoint["secret"], row, body)
                if error is None:
                    await conn.execute(DELIVERED_SQL, row["id"], status)
                    delivered += 1
                else:
                    await conn.execute(
                        FAILED_SQL,
                        row["id"],
                        status,
                        error,
                        backoff(settings, row["attempts"] + 1),
                        settings.webhook_retry_hours * 3600,
                    )


async def _post(
    client: aiohttp.ClientSession, url: str, secret: str, row: Any, body: bytes
) -> tuple[int | None, str | None]:
    headers = {
        "Content-Type": "application/json",
        "Tollgate-Event-Id": str(row["id"]),
        "Tollgate-Event": row["type"],
        SIGNATURE_HEADER: sign(secret, int(time.time()), body),
    }
    try:
        async with client.post(url, data=body, headers=headers, allow_redirects=False) as answer:
            status = answer.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The receiver's words are not kept: only what kind of failure it was.
        return None, type(exc).__name__
    if 200 <= status < 300:
        return status, None
    return status, f"HTTP {status}"


async def run_webhooks(runtime: Runtime) -> None:
    """The background task of every process: deliver what is due, now and then."""
    settings = runtime.settings
    timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        while True:
            try:
                await deliver_due(runtime.hot_pool, client, settings)
            except Exception as exc:  # a database outage must not end the loop
                # One line: the database's own outage is reported where it is watched.
                logger.warning("could not deliver webhooks (%s); will retry", type(exc).__name__)
            await asyncio.sleep(settings.webhook_poll_seconds)


# --- the admin's settings and view -----------------------------------------------------------


def endpoint_public(row: Any) -> dict[str, Any]:
    return {"url": row.url, "secret_set": True, "updated_at": row.updated_at}


async def set_endpoint(*, session: AsyncSession, url: str, secret: str) -> dict[str, Any]:
    row = (
        await session.execute(
            text(
                "INSERT INTO webhook_endpoint (id, url, secret) VALUES (1, :url, :secret) "
                "ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, secret = EXCLUDED.secret, "
                "updated_at = now() RETURNING url, updated_at"
            ),
            {"url": url, "secret": secret},
        )
    ).one()
    await session.commit()
    return endpoint_public(row)


async def get_endpoint(*, session: AsyncSession) -> dict[str, Any]:
    row = (
        await session.execute(text("SELECT url, updated_at FROM webhook_endpoint WHERE id = 1"))
    ).one_or_none()
    if row is None:
        raise not_found("webhook endpoint")
    return endpoint_public(row)


async def delete_endpoint(*, session: AsyncSession) -> None:
    """No more events are recorded; those already recorded are kept and sent when one is set."""
    await session.execute(text("DELETE FROM webhook_endpoint"))
    await session.commit()


async def set_balance_alert(
    *, session: AsyncSession, account_id: uuid.UUID, threshold: str
) -> dict[str, Any]:
    exists = await session.scalar(text("SELECT 1 FROM accounts WHERE id = :id"), {"id": account_id})
    if not exists:
        raise not_found("account")
    row = (
        await session.execute(
            text(
                "INSERT INTO balance_alerts (account_id, threshold) "
                "VALUES (:account, CAST(:threshold AS BIGINT)) ON CONFLICT (account_id) "
                "DO UPDATE SET threshold = EXCLUDED.threshold, alerted = false "
                "RETURNING account_id, threshold, alerted"
            ),
            {"account": account_id, "threshold": parse_credits(threshold)},
        )
    ).one()
    await session.commit()
    return {
        "account_id": row.account_id,
        "threshold": format_credits(row.threshold),
        "alerted": row.alerted,
    }


async def delete_balance_alert(*, session: AsyncSession, account_id: uuid.UUID) -> None:
    deleted = await session.scalar(
        text("DELETE FROM balance_alerts WHERE account_id = :account RETURNING 1"),
        {"account": account_id},
    )
    if not deleted:
        raise not_found("balance alert")
    await session.commit()


DELIVERY_COLUMNS = (
    "id, type, account_id, data, created_at, attempts, next_attempt_at, delivered_at, "
    "gave_up_at, last_status, last_error"
)


async def list_deliveries(
    *, session: AsyncSession, limit: int, pending: bool = False
) -> list[dict[str, Any]]:
    """Events newest first, with how their delivery went."""
    rows = await session.execute(
        text(
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_events "
            "WHERE NOT :pending OR (delivered_at IS NULL AND gave_up_at IS NULL) "
            "ORDER BY created_at DESC, id LIMIT :limit"
        ),
        {"limit": limit, "pending": pending},
    )
    return [
        {
            **{column: getattr(row, column) for column in DELIVERY_COLUMNS.split(", ")},
            "status": "delivered"
            if row.delivered_at
            else ("given_up" if row.gave_up_at else "pending"),
        }
        for row in rows
    ]
