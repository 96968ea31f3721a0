"""Logging in: passwords, lockouts, and the refresh-token families.

Refresh tokens are single use. Exchanging one marks it used and issues the next of the same
family; presenting a used one again means it was stolen or replayed, so the whole family is
revoked and its holder must log in again.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tollgate_server.errors import RateLimited, Refused, unauthenticated
from tollgate_server.schemas import AccountCreate
from tollgate_server.security.passwords import HASHER, needs_rehash, verify_password
from tollgate_server.security.tokens import InvalidToken, decode_token, issue_token
from tollgate_server.services.accounts import create_account, normalise_email
from tollgate_server.settings import Settings

INVALID_LOGIN = "wrong email or password"


async def _recent(session: AsyncSession, scopes: list[str], seconds: int) -> dict[str, int]:
    """How many `auth_failures` rows each scope has within the last `seconds`."""
    rows = (
        await session.execute(
            text(
                "SELECT scope, count(*) AS failures FROM auth_failures "
                "WHERE scope = ANY(:scopes) AND at > now() - make_interval(secs => :window) "
                "GROUP BY scope"
            ),
            {"scopes": scopes, "window": seconds},
        )
    ).all()
    return {row.scope: row.failures for row in rows}


async def _locked_out(session: AsyncSession, scopes: list[str], settings: Settings) -> bool:
    """Whether the account (scopes[0]) or the client address (scopes[1]) is locked out."""
    counts = await _recent(session, scopes, settings.login_lockout_seconds)
    return (
        counts.get(scopes[0], 0) >= settings.login_max_failures
        or counts.get(scopes[1], 0) >= settings.login_max_failures_per_address
    )


async def register(
    *, session: AsyncSession, data: AccountCreate, client_address: str, settings: Settings
) -> Any:
    """Create a client account, throttled so that the 409 ``email_taken`` cannot be used to
    list who has an account (see the README's "Registration").

    One email may be tried `register_max_per_email` times a window, whatever the answers; one
    client address may be told `register_max_taken_per_address` times a window that an email
    is taken. Past either, the answer is 429 before the email is looked up, so it tells nothing.
    """
    email = normalise_email(data.email)
    scopes = [f"register-email:{email}", f"register-taken:{client_address}"]
    counts = await _recent(session, scopes, settings.register_window_seconds)
    if (
        counts.get(scopes[0], 0) >= settings.register_max_per_email
        or counts.get(scopes[1], 0) >= settings.register_max_taken_per_address
    ):
        raise RateLimited(
            "rate_limited",
            "too many registrations for this email or from this address; try again later",
            retry_after=settings.register_window_seconds,
        )
    # Recorded in a transaction of its own: a refused registration rolls its own back.
    await session.execute(text("INSERT INTO auth_failures (scope) VALUES (:s)"), {"s": scopes[0]})
    await session.commit()
    try:
        return await create_account(session=session, data=data, settings=settings)
    except Refused as exc:
        if exc.code == "email_taken":
            await session.execute(
                text("INSERT INTO auth_failures (scope) VALUES (:s)"), {"s": scopes[1]}
            )
            await session.commit()
        raise


async def login(
    *,
    session: AsyncSession,
    email: str,
    password: str,
    client_address: str,
    settings: Settings,
    secret: str,
) -> dict[str, Any]:
    email = normalise_email(email)
    scopes = [f"account:{email}", f"address:{client_address}"]
    if await _locked_out(session, scopes, settings):
        # Refused even with the right password: otherwise a lockout only slows guessing.
        raise RateLimited(
            "rate_limited",
            "too many failed logins; try again later",
            retry_after=settings.login_lockout_seconds,
        )
    row = (
        await session.execute(
            text("SELECT id, password_hash, disabled FROM accounts WHERE email = :email"),
            {"email": email},
        )
    ).one_or_none()
    ok = await verify_password(row.password_hash if row else None, password)
    if not ok or row is None or row.disabled:
        await session.execute(
            text("INSERT INTO auth_failures (scope) VALUES (:a), (:b)"),
            {"a": scopes[0], "b": scopes[1]},
        )
        await session.commit()
        raise unauthenticated(INVALID_LOGIN)
    if needs_rehash(row.password_hash):
        await session.execute(
            text("UPDATE accounts SET password_hash = :hash WHERE id = :id"),
            {"hash": HASHER.hash(password), "id": row.id},
        )
    pair = await _issue_pair(session, row.id, uuid.uuid4(), settings, secret)
    await session.commit()
    return pair


async def _issue_pair(
    session: AsyncSession,
    account_id: uuid.UUID,
    family_id: uuid.UUID,
    settings: Settings,
    secret: str,
) -> dict[str, Any]:
    access, _ = issue_token(
        settings=settings, secret=secret, subject=account_id, token_type="access"
    )
    refresh, claims = issue_token(
        settings=settings,
        secret=secret,
        subject=account_id,
        token_type="refresh",
        family_id=family_id,
    )
    await session.execute(
        text(
            "INSERT INTO refresh_tokens (id, family_id, account_id, expires_at) "
            "VALUES (:id, :family, :account, :expires)"
        ),
        {
            "id": claims.token_id,
            "family": family_id,
            "account": account_id,
            "expires": datetime.fromtimestamp(claims.expires_at, UTC),
        },
    )
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "bearer",
        "expires_in": settings.access_token_ttl_seconds,
    }


async def refresh(
    *, session: AsyncSession, token: str, settings: Settings, secret: str
) -> dict[str, Any]:
    try:
        claims = decode_token(token, settings=settings, secret=secret, expected="refresh")
    except InvalidToken:
        raise unauthenticated("invalid refresh token") from None
    # Mark it used in the same statement that checks it, so two racing refreshes
    # cannot both succeed.
    row = (
        await session.execute(
            text(
                "UPDATE refresh_tokens t SET used_at = now() FROM accounts a "
                "WHERE t.id = :id AND a.id = t.account_id AND t.used_at IS NULL "
                "AND t.revoked_at IS NULL AND t.expires_at > now() AND NOT a.disabled "
                "RETURNING t.family_id, t.account_id"
            ),
            {"id": claims.token_id},
        )
    ).one_or_none()
    if row is None:
        reused = await session.scalar(
            text("SELECT family_id FROM refresh_tokens WHERE id = :id AND used_at IS NOT NULL"),
            {"id": claims.token_id},
        )
        if reused is not None:
            await revoke_family(session=session, family_id=reused)
            await session.commit()
        raise unauthenticated("invalid refresh token")
    pair = await _issue_pair(session, row.account_id, row.family_id, settings, secret)
    await session.commit()
    return pair


async def revoke_family(*, session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        text(
            "UPDATE refresh_tokens SET revoked_at = now() "
            "WHERE family_id = :family AND revoked_at IS NULL"
        ),
        {"family": family_id},
    )


async def logout(*, session: AsyncSession, token: str, settings: Settings, secret: str) -> None:
    try:
        claims = decode_token(token, settings=settings, secret=secret, expected="refresh")
    except InvalidToken:
        raise unauthenticated("invalid refresh token") from None
    family = await session.scalar(
        text("SELECT family_id FROM refresh_tokens WHERE id = :id"), {"id": claims.token_id}
    )
    if family is not None:
        await revoke_family(session=session, family_id=family)
        await session.commit()
