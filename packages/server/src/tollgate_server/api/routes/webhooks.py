"""Admin: where alerts are sent (a signed webhook), accounts' low-balance thresholds, and the
history of deliveries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from tollgate_server.api.deps import AdminDep, SessionDep
from tollgate_server.api.json_body import StrictJsonRoute
from tollgate_server.api.pagination import Limit
from tollgate_server.api.responses import Failure, errors
from tollgate_server.api.routes.admin import NO_ACCOUNT, NOT_ADMIN, UserId
from tollgate_server.schemas import (
    BalanceAlertPublic,
    BalanceAlertSet,
    WebhookDeliveryPage,
    WebhookEndpointPublic,
    WebhookEndpointSet,
)
from tollgate_server.services import webhooks

router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=StrictJsonRoute)

NO_ENDPOINT = {
    404: Failure(
        "No webhook endpoint is set (`not_found`)", "not_found", "no such webhook endpoint"
    )
}


@router.put(
    "/webhooks",
    response_model=WebhookEndpointPublic,
    summary="Set the webhook endpoint",
    responses=errors(401, 403, 413, notes=NOT_ADMIN),
)
async def set_endpoint(data: WebhookEndpointSet, admin: AdminDep, session: SessionDep) -> Any:
    """Where alerts are POSTed: `balance.low`, `key.budget_80`, `key.budget_100`. The body is
    `{"id", "type", "created_at", "data"}`, signed in the `Tollgate-Signature` header as
    `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>`; the event's id is
    also in `Tollgate-Event-Id` (drop repeats by it). A failed delivery (no answer, or not 2xx)
    is retried with a doubling back-off for more than a day. The secret is never shown back."""
    return await webhooks.set_endpoint(session=session, url=data.url, secret=data.secret)


@router.get(
    "/webhooks",
    response_model=WebhookEndpointPublic,
    summary="The webhook endpoint",
    responses=errors(401, 403, 404, notes={**NOT_ADMIN, **NO_ENDPOINT}),
)
async def get_endpoint(admin: AdminDep, session: SessionDep) -> Any:
    """The URL alerts go to (never the secret)."""
    return await webhooks.get_endpoint(session=session)


@router.delete(
    "/webhooks",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove the webhook endpoint",
    responses=errors(401, 403, notes=NOT_ADMIN),
)
async def delete_endpoint(admin: AdminDep, session: SessionDep) -> None:
    """No alert is recorded while no endpoint is set; those recorded before wait for one."""
    await webhooks.delete_endpoint(session=session)


@router.get(
    "/webhooks/deliveries",
    response_model=WebhookDeliveryPage,
    summary="Webhook deliveries",
    responses=errors(401, 403, notes=NOT_ADMIN),
)
async def list_deliveries(
    admin: AdminDep,
    session: SessionDep,
    limit: Limit = 50,
    pending: Annotated[bool, Query(description="Only those not yet delivered")] = False,
) -> Any:
    """Alert events newest first, with their delivery: `pending`, `delivered` or `given_up`,
    the attempts made, the receiver's last status."""
    return {"data": await webhooks.list_deliveries(session=session, limit=limit, pending=pending)}


@router.put(
    "/users/{user_id}/balance-alert",
    response_model=BalanceAlertPublic,
    summary="Set an account's low-balance threshold",
    responses=errors(401, 403, 404, 413, notes={**NOT_ADMIN, **NO_ACCOUNT}),
)
async def set_balance_alert(
    user_id: UserId, data: BalanceAlertSet, admin: AdminDep, session: SessionDep
) -> Any:
    """A `balance.low` event when the account's available balance falls below `threshold`:
    once, until a top-up or grant lifts it back above."""
    return await webhooks.set_balance_alert(
        session=session, account_id=user_id, threshold=data.threshold
    )


@router.delete(
    "/users/{user_id}/balance-alert",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove an account's low-balance threshold",
    responses=errors(
        401,
        403,
        404,
        notes={
            **NOT_ADMIN,
            404: Failure(
                "No such account, or it has no threshold (`not_found`)",
                "not_found",
                "no such balance alert",
            ),
        },
    ),
)
async def delete_balance_alert(user_id: UserId, admin: AdminDep, session: SessionDep) -> None:
    """No more low-balance alerts for the account."""
    await webhooks.delete_balance_alert(session=session, account_id=user_id)
