"""Accounts: registration, lookup, admin changes."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from tollgate_core import format_credits, parse_credits

from tollgate_server.errors import Conflict, NotFound, Refused, not_found
from tollgate_server.schemas import AccountCreate, AccountUpdate
from tollgate_server.security.passwords import hash_password
from tollgate_server.settings import Settings

ACCOUNT_COLUMNS = "id, email, role, disabled, created_at, balance, held"


def account_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "email": row.email,
        "role": row.role,
        "disabled": row.disabled,
        "created_at": row.created_at,
        "balance": format_credits(row.balance),
    }


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def create_account(
    *, session: AsyncSession, data: AccountCreate, settings: Settings, role: str = "client"
) -> Any:
    """Create an account (a client unless an operator says otherwise) with its signup grant."""
    password_hash = await hash_password(data.password)
    grant = parse_credits(settings.signup_grant)
    try:
        row = (
            await session.execute(
                text(
                    "INSERT INTO accounts (email, password_hash, role, balance) "
                    "VALUES (:email, :hash, :role, :grant) "
                    f"RETURNING {ACCOUNT_COLUMNS}"
                ),
                {
                    "email": normalise_email(data.email),
                    "hash": password_hash,
                    "role": role,
                    "grant": grant,
                },
            )
        ).one()
    except IntegrityError as exc:
        await session.rollback()
        if "uq_accounts_email" not in str(exc.orig):
            raise
        raise Conflict("email_taken", "an account with this email exists") from None
    if grant:
        await session.execute(
            text(
                "INSERT INTO ledger_entries (account_id, kind, amount, held_delta, "
                "balance_after, held_after, reason) "
                "VALUES (:id, 'grant', :grant, 0, :grant, 0, 'signup grant')"
            ),
            {"id": row.id, "grant": grant},
        )
    await session.commit()
    return row


async def get_account(*, session: AsyncSession, account_id: uuid.UUID) -> Any:
    row = (
        await session.execute(
            text(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = :id"), {"id": account_id}
        )
    ).one_or_none()
    if row is None:
        raise not_found("account")
    return row


async def find_account_by_email(*, session: AsyncSession, email: str) -> Any:
    row = (
        await session.execute(
            text(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = :email"),
            {"email": normalise_email(email)},
        )
    ).one_or_none()
    if row is None:
        raise NotFound("not_found", f"no account with email {normalise_email(email)}")
    return row


async def list_accounts(
    *, session: AsyncSession, email: str | None, cursor: str | None, limit: int
) -> tuple[list[Any], str | None]:
    """Accounts ordered by email; the cursor is the last email of the previous page."""
    rows = (
        await session.execute(
            text(
                f"SELECT {ACCOUNT_COLUMNS} FROM accounts "
                "WHERE (CAST(:filter AS TEXT) IS NULL OR email LIKE :filter) "
                "AND (CAST(:cursor AS TEXT) IS NULL OR email > :cursor) "
                "ORDER BY email LIMIT :limit"
            ),
            {
                "filter": _like_pattern(email) if email else None,
                "cursor": cursor,
                "limit": limit + 1,
            },
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return list(rows), (rows[-1].email if more and rows else None)


def _like_pattern(fragment: str) -> str:
    escaped = normalise_email(fragment).replace("\\", "\\\\").replace("%", r"\%")
    return "%" + escaped.replace("_", r"\_") + "%"


async def update_account(
    *,
    session: AsyncSession,
    account_id: uuid.UUID,
    data: AccountUpdate,
    actor_id: uuid.UUID | None,
) -> Any:
    row = (
        await session.execute(
            text(
                "UPDATE accounts SET role = coalesce(:role, role), "
                "disabled = coalesce(:disabled, disabled), updated_at = now() "
                f"WHERE id = :id RETURNING {ACCOUNT_COLUMNS}"
            ),
            {"role": data.role, "disabled": data.disabled, "id": account_id},
        )
    ).one_or_none()
    if row is None:
        raise not_found("account")
    if data.disabled:
        # A disabled account keeps no way back in: its refresh tokens die with it.
        await session.execute(
            text(
                "UPDATE refresh_tokens SET revoked_at = now() "
                "WHERE account_id = :id AND revoked_at IS NULL"
            ),
            {"id": account_id},
        )
    await record_audit(
        session=session,
        actor_id=actor_id,
        action="account.update",
        detail={"account_id": str(account_id), **data.model_dump(exclude_none=True)},
    )
    await session.commit()
    return row


async def ensure_admin(
    *, session: AsyncSession, email: str, password: str, settings: Settings
) -> None:
    """Create the configured first admin once; an existing account is never overwritten."""
    exists = await session.scalar(
        text("SELECT 1 FROM accounts WHERE email = :email"), {"email": normalise_email(email)}
    )
    if exists:
        return
    try:
        await create_account(
            session=session,
            data=AccountCreate(email=email, password=password),
            settings=settings,
            role="admin",
        )
    except Refused as exc:
        if exc.code != "email_taken":  # another worker created it a moment ago
            raise


async def record_audit(
    *, session: AsyncSession, actor_id: uuid.UUID | None, action: str, detail: dict[str, Any]
) -> None:
    import orjson

    await session.execute(
        text(
            "INSERT INTO audit_log (actor_id, action, detail) "
            "VALUES (:actor, :action, CAST(:detail AS JSONB))"
        ),
        {"actor": actor_id, "action": action, "detail": orjson.dumps(detail).decode()},
    )
