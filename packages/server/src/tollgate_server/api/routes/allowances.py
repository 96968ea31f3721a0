"""Admin: an account's periodic allowance (a recurring grant, issued by the servers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from tollgate_server.api.deps import AdminDep, RuntimeDep, SessionDep
from tollgate_server.api.json_body import StrictJsonRoute
from tollgate_server.api.responses import Failure, errors
from tollgate_server.api.routes.admin import NOT_ADMIN, UserId
from tollgate_server.schemas import AllowancePublic, AllowanceSet
from tollgate_server.services import allowances

router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=StrictJsonRoute)

NO_ALLOWANCE = {
    404: Failure(
        "No such account, or it has no allowance (`not_found`)", "not_found", "no such allowance"
    )
}


@router.put(
    "/users/{user_id}/allowance",
    response_model=AllowancePublic,
    summary="Give an account a periodic allowance",
    responses=errors(401, 403, 404, 413, notes={**NOT_ADMIN, **NO_ALLOWANCE}),
)
async def set_allowance(
    user_id: UserId,
    data: AllowanceSet,
    admin: AdminDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Any:
    """`amount` credits every `period` (mode `grant`), or a top-up of the available balance to
    `amount` (mode `floor`); periods are calendar days, weeks (from Monday) or months in UTC.
    Replaces the account's allowance if it had one. Each period is granted once, as a ledger
    entry of kind `grant`, by whichever server gets there first; the current period is granted
    before this answer."""
    await allowances.set_allowance(
        session=session, account_id=user_id, data=data, actor_id=admin.account_id
    )
    await allowances.issue_due(
        runtime.hot_pool,
        clock_offset=runtime.settings.period_clock_offset_seconds,
        account_id=user_id,
    )
    return await allowances.get_allowance(session=session, account_id=user_id)


@router.get(
    "/users/{user_id}/allowance",
    response_model=AllowancePublic,
    summary="An account's periodic allowance",
    responses=errors(401, 403, 404, notes={**NOT_ADMIN, **NO_ALLOWANCE}),
)
async def get_allowance(user_id: UserId, admin: AdminDep, session: SessionDep) -> Any:
    """The allowance and its last twelve grants, newest first."""
    return await allowances.get_allowance(session=session, account_id=user_id)


@router.delete(
    "/users/{user_id}/allowance",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Stop an account's periodic allowance",
    responses=errors(401, 403, 404, notes={**NOT_ADMIN, **NO_ALLOWANCE}),
)
async def delete_allowance(user_id: UserId, admin: AdminDep, session: SessionDep) -> None:
    """No further period is granted; the grants already made stay in the ledger."""
    await allowances.delete_allowance(session=session, account_id=user_id)
