"""Admin: users, their credits and ledgers, and the model catalogue."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, status

from tollgate_server.api.deps import AdminDep, RuntimeDep, SessionDep
from tollgate_server.api.json_body import StrictJsonRoute
from tollgate_server.api.pagination import Limit, int_cursor
from tollgate_server.api.responses import Failure, errors
from tollgate_server.api.routes.billing import LedgerCursor
from tollgate_server.api.routes.generations import GenerationAdmin
from tollgate_server.schemas import (
    AccountPage,
    AccountPublic,
    AccountUpdate,
    AdminUsagePublic,
    ApiKeyPublic,
    ApiKeyUpdate,
    CreditsCreate,
    CreditsResult,
    LedgerEntryPage,
    ModelCreate,
    ModelPublic,
    ModelUpdate,
    Text,
    Timestamp,
)
from tollgate_server.services import accounts, generations, keys, ledger, models

router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=StrictJsonRoute)

UserId = Annotated[uuid.UUID, Path(description="The account's id")]
ModelName = Annotated[Text, Path(description="The model's name", examples=["gpt-4o-mini"])]

NOT_ADMIN: dict[int, str | Failure] = {
    403: Failure(
        "Not an admin, or an API key instead of an access token (`forbidden`)",
        "forbidden",
        "this needs the admin role",
    )
}
NO_ACCOUNT = {404: Failure("No such account (`not_found`)", "not_found", "no such account")}

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Any unique string; a retry with the same key returns the first result",
    ),
]


@router.get(
    "/users",
    response_model=AccountPage,
    summary="List accounts",
    responses=errors(401, 403, notes=NOT_ADMIN),
)
async def list_users(
    admin: AdminDep,
    session: SessionDep,
    email: Annotated[Text | None, Query(max_length=320, description="Part of an email")] = None,
    limit: Limit = 50,
    cursor: Annotated[
        Text | None,
        Query(max_length=400, description="`next_cursor` of the previous page (an email)"),
    ] = None,
) -> Any:
    """Accounts ordered by email, optionally those whose email contains `email`."""
    rows, next_cursor = await accounts.list_accounts(
        session=session, email=email, cursor=cursor, limit=limit
    )
    return {"data": [accounts.account_public(r) for r in rows], "next_cursor": next_cursor}


@router.get(
    "/users/{user_id}",
    response_model=AccountPublic,
    summary="One account",
    responses=errors(401, 403, 404, notes={**NOT_ADMIN, **NO_ACCOUNT}),
)
async def get_user(user_id: UserId, admin: AdminDep, session: SessionDep) -> Any:
    """The account with its role, whether it is disabled, and its balance."""
    return accounts.account_public(await accounts.get_account(session=session, account_id=user_id))


@router.patch(
    "/users/{user_id}",
    response_model=AccountPublic,
    summary="Change an account's role or disable it",
    responses=errors(401, 403, 404, 413, notes={**NOT_ADMIN, **NO_ACCOUNT}),
)
async def update_user(
    user_id: UserId, data: AccountUpdate, admin: AdminDep, session: SessionDep, runtime: RuntimeDep
) -> Any:
    """Set `role` (client or admin) and/or `disabled`. A disabled account cannot log in,
    refresh or use any route with a token or key it still holds, and its refresh tokens are
    revoked."""
    row = await accounts.update_account(
        session=session, account_id=user_id, data=data, actor_id=admin.account_id
    )
    # Other processes forget the account's state on the NOTIFY; this one must not wait for it.
    runtime.accounts.clear()
    return accounts.account_public(row)


@router.post(
    "/users/{user_id}/credits",
    response_model=CreditsResult,
    status_code=status.HTTP_201_CREATED,
    summary="Top up or deduct credits",
    responses=errors(
        401,
        403,
        404,
        409,
        413,
        notes={
            **NOT_ADMIN,
            **NO_ACCOUNT,
            409: Failure(
                "A deduction larger than the available balance (`insufficient_balance`), or "
                "this Idempotency-Key was used for another request (`idempotency_key_reused`)",
                "insufficient_balance",
                "a deduction may not exceed the available balance",
            ),
        },
    ),
)
async def post_credits(
    user_id: UserId,
    data: CreditsCreate,
    idempotency_key: IdempotencyKey,
    admin: AdminDep,
    session: SessionDep,
) -> Any:
    """A positive `amount` tops up, a negative one deducts (never below the available balance).
    Requires an `Idempotency-Key` header: a retry with the same key and body returns the first
    result; the same key with another body is a 409."""
    entry, balance, _ = await ledger.post_credits(
        session=session,
        account_id=user_id,
        amount=data.amount,
        reason=data.reason,
        actor_id=admin.account_id,
        idempotency_key=idempotency_key,
    )
    return {"entry": entry, "balance": balance.public()}


@router.get(
    "/users/{user_id}/ledger",
    response_model=LedgerEntryPage,
    summary="An account's ledger",
    responses=errors(401, 403, 404, notes={**NOT_ADMIN, **NO_ACCOUNT}),
)
async def user_ledger(
    user_id: UserId,
    admin: AdminDep,
    session: SessionDep,
    limit: Limit = 50,
    cursor: LedgerCursor = None,
) -> Any:
    """Every movement of the account's credits, newest first (as `GET /v1/ledger` shows its
    owner)."""
    await accounts.get_account(session=session, account_id=user_id)
    entries, next_cursor = await ledger.list_entries(
        session=session, account_id=user_id, cursor=int_cursor(cursor), limit=limit
    )
    return {"data": entries, "next_cursor": str(next_cursor) if next_cursor else None}


@router.get(
    "/users/{user_id}/usage",
    response_model=AdminUsagePublic,
    summary="An account's usage, with what it was not charged",
    responses=errors(401, 403, 404, notes={**NOT_ADMIN, **NO_ACCOUNT}),
)
async def user_usage(
    user_id: UserId,
    admin: AdminDep,
    session: SessionDep,
    since: Annotated[
        Timestamp | None,
        Query(description="Only days from this time on, such as 2026-11-01T00:00:00Z"),
    ] = None,
) -> Any:
    """Totals of finished generations per UTC day and model, as `GET /v1/usage` shows the
    owner, plus the tokens the upstream may bill the operator for that the client was not
    charged: a client pays for what it received, so reconcile the vendor's invoice with these."""
    await accounts.get_account(session=session, account_id=user_id)
    rows = await ledger.usage_by_day(
        session=session, account_id=user_id, since=since, unbilled=True
    )
    return {"data": rows}


@router.get(
    "/users/{user_id}/keys",
    response_model=list[ApiKeyPublic],
    summary="An account's API keys",
    responses=errors(401, 403, 404, notes={**NOT_ADMIN, **NO_ACCOUNT}),
)
async def user_keys(
    user_id: UserId, admin: AdminDep, session: SessionDep, runtime: RuntimeDep
) -> Any:
    """The account's keys, newest first, without their secrets, with their limits and spend
    (as `GET /v1/keys` shows its owner)."""
    await accounts.get_account(session=session, account_id=user_id)
    return await keys.list_keys(
        session=session,
        account_id=user_id,
        clock_offset=runtime.settings.period_clock_offset_seconds,
    )


@router.patch(
    "/keys/{key_id}",
    response_model=ApiKeyPublic,
    summary="Change any API key's limits",
    responses=errors(
        401,
        403,
        404,
        413,
        422,
        notes={**NOT_ADMIN, 404: Failure("No such key (`not_found`)", "not_found", "no such key")},
    ),
)
async def update_any_key(
    key_id: Annotated[uuid.UUID, Path(description="The key's id")],
    data: ApiKeyUpdate,
    admin: AdminDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Any:
    """Change the spend limit, its period, and the per-minute limits of any account's key, as
    its owner can with `PATCH /v1/keys/{id}`. Only the fields sent change; null removes a
    limit. The next request on the key is admitted under the new limits."""
    return await keys.update_key(
        session=session,
        key_id=key_id,
        account_id=None,
        data=data,
        clock_offset=runtime.settings.period_clock_offset_seconds,
    )


@router.delete(
    "/users/{user_id}/keys/{key_id}",
    response_model=ApiKeyPublic,
    summary="Revoke an account's API key",
    responses=errors(
        401,
        403,
        404,
        notes={
            **NOT_ADMIN,
            404: Failure(
                "No such account, or no such key of that account (`not_found`)",
                "not_found",
                "no such key",
            ),
        },
    ),
)
async def revoke_user_key(
    user_id: UserId,
    key_id: Annotated[uuid.UUID, Path(description="The key's id")],
    admin: AdminDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Any:
    """Revoke a key of any account (a leaked key, a departed user); it stops working at once.
    Revoking twice is harmless."""
    revoked = await keys.revoke_key(session=session, key_id=key_id, account_id=user_id)
    # Other processes empty their caches on the NOTIFY; this one must not wait for it.
    runtime.keys.clear()
    return revoked


@router.get(
    "/models",
    response_model=list[ModelPublic],
    summary="The whole catalogue",
    responses=errors(401, 403, notes=NOT_ADMIN),
)
async def list_models(admin: AdminDep, session: SessionDep, runtime: RuntimeDep) -> Any:
    """Every model, enabled or not, with its current price and whether it can be served."""
    return [
        models.model_public(m, configured=runtime.router.serves(m))
        for m in await models.list_models(session=session)
    ]


@router.post(
    "/models",
    response_model=ModelPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Add a model",
    responses=errors(
        401,
        403,
        409,
        413,
        notes={
            **NOT_ADMIN,
            409: Failure(
                "A model with this name exists (`model_exists`)",
                "model_exists",
                "a model named gpt-4o-mini exists",
            ),
        },
    ),
)
async def create_model(
    data: ModelCreate, admin: AdminDep, session: SessionDep, runtime: RuntimeDep
) -> Any:
    """Add a model with its prices (credits per million tokens, input and output apart).
    A zero price is accepted only for a model marked `free`; negative prices never."""
    model = await models.create_model(session=session, data=data, actor_id=admin.account_id)
    runtime.catalogue.invalidate()
    return models.model_public(model, configured=runtime.router.serves(model))


@router.patch(
    "/models/{name:path}",
    response_model=ModelPublic,
    summary="Change a model or its price",
    responses=errors(
        401,
        403,
        404,
        413,
        notes={
            **NOT_ADMIN,
            404: Failure("No such model (`not_found`)", "not_found", "no such model"),
        },
    ),
)
async def update_model(
    name: ModelName, data: ModelUpdate, admin: AdminDep, session: SessionDep, runtime: RuntimeDep
) -> Any:
    """Change any field. A new price applies from now on; earlier generations keep the price
    they were charged at."""
    model = await models.update_model(
        session=session, name=name, data=data, actor_id=admin.account_id
    )
    runtime.catalogue.invalidate()
    return models.model_public(model, configured=runtime.router.serves(model))


@router.get(
    "/generations/{generation_id}",
    response_model=GenerationAdmin,
    summary="Any generation, with what a failed upstream said",
    responses=errors(
        401,
        403,
        404,
        notes={
            **NOT_ADMIN,
            404: Failure("No such generation (`not_found`)", "not_found", "no such generation"),
        },
    ),
)
async def get_generation(
    generation_id: Annotated[
        uuid.UUID, Path(description="The generation's id (also in X-Tollgate-Generation-Id)")
    ],
    admin: AdminDep,
    session: SessionDep,
) -> Any:
    """The generation as its owner sees it, plus its account and `error_detail`: the
    upstream's own words (keys redacted) when it failed, which the client was not shown."""
    return await generations.get_generation_for_admin(session=session, generation_id=generation_id)
