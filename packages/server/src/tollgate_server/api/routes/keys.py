"""API keys for programs (managed with a JWT; a key cannot manage keys)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, status

from tollgate_server.api.deps import RuntimeDep, SessionDep, UserDep
from tollgate_server.api.json_body import StrictJsonRoute
from tollgate_server.api.responses import Failure, errors
from tollgate_server.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, ApiKeyUpdate
from tollgate_server.services import keys

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=StrictJsonRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    summary="Create an API key",
    responses=errors(401, 403, 409, 413),
)
async def create_key(
    data: ApiKeyCreate, user: UserDep, session: SessionDep, runtime: RuntimeDep
) -> Any:
    """Create a key (`tg-...`) for the OpenAI SDKs and scripts. The secret is in `key`, shown
    only in this answer; Tollgate keeps only its hash. `models` limits the key to those models.
    An account holds a limited number of live keys (`too_many_api_keys`: revoke one first).

    Limits, each optional: `spend_limit` credits per `spend_period` (`day`, `week`, `month`:
    calendar periods in UTC; null for the key's lifetime), `rpm` requests and `tpm` tokens per
    minute. A request is refused with 402 `key_budget_exceeded` when its hold would take the
    key's spend (its holds plus its charges in the period) past the limit, and with 429
    `key_rate_limited` (and `Retry-After`) past `rpm` or `tpm`.
    """
    return await keys.create_key(
        session=session,
        account_id=user.account_id,
        data=data,
        max_keys=runtime.settings.max_api_keys_per_account,
    )


@router.get(
    "", response_model=list[ApiKeyPublic], summary="Your API keys", responses=errors(401, 403)
)
async def list_keys(user: UserDep, session: SessionDep, runtime: RuntimeDep) -> Any:
    """Your keys, newest first, without their secrets, with their limits and their `spend` in
    the current period (charges plus the holds of generations still running)."""
    return await keys.list_keys(
        session=session,
        account_id=user.account_id,
        clock_offset=runtime.settings.period_clock_offset_seconds,
    )


@router.patch(
    "/{key_id}",
    response_model=ApiKeyPublic,
    summary="Change an API key's limits",
    responses=errors(
        401,
        403,
        404,
        413,
        422,
        notes={404: Failure("No such key among yours (`not_found`)", "not_found", "no such key")},
    ),
)
async def update_key(
    key_id: Annotated[uuid.UUID, Path(description="The key's id")],
    data: ApiKeyUpdate,
    user: UserDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Any:
    """Change one of your keys' limits: only the fields sent change; null removes a limit. The
    next request on the key is admitted under the new limits. Changing `spend_period` counts
    afresh in the new kind of period."""
    return await keys.update_key(
        session=session,
        key_id=key_id,
        account_id=user.account_id,
        data=data,
        clock_offset=runtime.settings.period_clock_offset_seconds,
    )


@router.delete(
    "/{key_id}",
    response_model=ApiKeyPublic,
    summary="Revoke an API key",
    responses=errors(
        401,
        403,
        404,
        notes={404: Failure("No such key among yours (`not_found`)", "not_found", "no such key")},
    ),
)
async def revoke_key(
    key_id: Annotated[uuid.UUID, Path(description="The key's id")],
    user: UserDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Any:
    """Revoke one of your keys; it stops working at once. Revoking twice is harmless."""
    revoked = await keys.revoke_key(session=session, key_id=key_id, account_id=user.account_id)
    # Other processes empty their caches on the NOTIFY; this one must not wait for it.
    runtime.keys.clear()
    return revoked
