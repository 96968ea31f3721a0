"""The caller's balance, ledger and usage."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from tollgate_server.api.deps import CallerDep, SessionDep, UserDep
from tollgate_server.api.json_body import StrictJsonRoute
from tollgate_server.api.pagination import Limit, int_cursor
from tollgate_server.api.responses import errors
from tollgate_server.schemas import BalancePublic, LedgerEntryPage, Timestamp, UsagePublic
from tollgate_server.services import ledger

router = APIRouter(prefix="/v1", tags=["billing"], route_class=StrictJsonRoute)

LedgerCursor = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9]{1,18}$",
        description="`next_cursor` of the previous page (an entry id)",
        examples=["42"],
    ),
]
"""A ledger's cursor, checked here so that any other text is a 422 (not a 500)."""


@router.get(
    "/balance", response_model=BalancePublic, summary="Your balance", responses=errors(401, 403)
)
async def balance(caller: CallerDep, session: SessionDep) -> Any:
    """`balance`, the credits `held` by generations still running, and `available`
    (balance - held), as decimal strings. Accepts an API key."""
    result = await ledger.get_balance(session=session, account_id=caller.account_id)
    return result.public()


@router.get(
    "/ledger",
    response_model=LedgerEntryPage,
    summary="Your ledger",
    responses=errors(401, 403),
)
async def own_ledger(
    user: UserDep, session: SessionDep, limit: Limit = 50, cursor: LedgerCursor = None
) -> Any:
    """Every movement of your credits, newest first: grants, top-ups, adjustments, and for each
    generation its hold and its one charge (or release)."""
    entries, next_cursor = await ledger.list_entries(
        session=session, account_id=user.account_id, cursor=int_cursor(cursor), limit=limit
    )
    return {"data": entries, "next_cursor": str(next_cursor) if next_cursor else None}


@router.get(
    "/usage",
    response_model=UsagePublic,
    summary="Your usage by model and day",
    responses=errors(401, 403),
)
async def usage(
    user: UserDep,
    session: SessionDep,
    since: Annotated[
        Timestamp | None,
        Query(description="Only days from this time on, such as 2026-11-01T00:00:00Z"),
    ] = None,
) -> Any:
    """Totals of finished generations per UTC day and model: count, tokens and credits."""
    rows = await ledger.usage_by_day(session=session, account_id=user.account_id, since=since)
    return {"data": rows}
