"""Admin: deployments, the upstreams that serve each model (routing)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, status

from tollgate_server.api.deps import AdminDep, RuntimeDep, SessionDep
from tollgate_server.api.json_body import StrictJsonRoute
from tollgate_server.api.responses import Failure, errors
from tollgate_server.deployment_schemas import (
    DeploymentCreate,
    DeploymentPublic,
    DeploymentUpdate,
)
from tollgate_server.runtime import Runtime
from tollgate_server.services import deployments
from tollgate_server.services.deployments import DeploymentRow

router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=StrictJsonRoute)

DeploymentId = Annotated[int, Path(description="The deployment's id", ge=1, le=2**62)]

NOT_ADMIN: dict[int, str | Failure] = {
    403: Failure(
        "Not an admin, or an API key instead of an access token (`forbidden`)",
        "forbidden",
        "this needs the admin role",
    )
}
NO_DEPLOYMENT = {
    404: Failure("No such deployment or model (`not_found`)", "not_found", "no such deployment")
}


def _public(runtime: Runtime, row: DeploymentRow) -> dict[str, Any]:
    return deployments.deployment_public(row, runtime.router.stats(row.id))


@router.get(
    "/deployments",
    response_model=list[DeploymentPublic],
    summary="Every deployment, with its health in this server process",
    responses=errors(401, 403, notes=NOT_ADMIN),
)
async def list_deployments(admin: AdminDep, session: SessionDep, runtime: RuntimeDep) -> Any:
    """Each deployment with its in-flight calls, recent error rate, time to first token and
    cooldown, as this process has seen them (each server process keeps its own)."""
    return [_public(runtime, row) for row in await deployments.list_deployments(session=session)]


@router.post(
    "/deployments",
    response_model=DeploymentPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Add a deployment",
    responses=errors(
        401,
        403,
        404,
        413,
        notes={
            **NOT_ADMIN,
            **NO_DEPLOYMENT,
        },
    ),
)
async def create_deployment(
    data: DeploymentCreate, admin: AdminDep, session: SessionDep, runtime: RuntimeDep
) -> Any:
    """Serve `model` from one more upstream. `api_key` is stored encrypted and never shown
    again (the answer shows its last four characters). The first deployment of a model takes
    over from its provider's default upstream (the environment's)."""
    row = await deployments.create_deployment(
        session=session,
        data=data,
        box=runtime.router.box,
        known_providers=set(runtime.plugins.providers),
        actor_id=admin.account_id,
    )
    runtime.router.invalidate()
    return _public(runtime, row)


@router.get(
    "/deployments/{deployment_id}",
    response_model=DeploymentPublic,
    summary="One deployment",
    responses=errors(401, 403, 404, notes={**NOT_ADMIN, **NO_DEPLOYMENT}),
)
async def get_deployment(
    deployment_id: DeploymentId, admin: AdminDep, session: SessionDep, runtime: RuntimeDep
) -> Any:
    """The deployment, with its health as this server process has seen it."""
    row = await deployments.get_deployment(session=session, deployment_id=deployment_id)
    return _public(runtime, row)


@router.patch(
    "/deployments/{deployment_id}",
    response_model=DeploymentPublic,
    summary="Change a deployment, or enable it again",
    responses=errors(401, 403, 404, 413, notes={**NOT_ADMIN, **NO_DEPLOYMENT}),
)
async def update_deployment(
    deployment_id: DeploymentId,
    data: DeploymentUpdate,
    admin: AdminDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Any:
    """Change the fields sent. Enabling a deployment the gateway disabled (its upstream
    refused the key) clears `disabled_reason`."""
    row = await deployments.update_deployment(
        session=session,
        deployment_id=deployment_id,
        data=data,
        box=runtime.router.box,
        actor_id=admin.account_id,
    )
    runtime.router.invalidate()
    return _public(runtime, row)


@router.delete(
    "/deployments/{deployment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a deployment",
    responses=errors(401, 403, 404, notes={**NOT_ADMIN, **NO_DEPLOYMENT}),
)
async def delete_deployment(
    deployment_id: DeploymentId, admin: AdminDep, session: SessionDep, runtime: RuntimeDep
) -> None:
    """Remove it at once; a model left without deployments is served by its provider's
    default upstream again. Generations it served keep its id."""
    await deployments.delete_deployment(
        session=session, deployment_id=deployment_id, actor_id=admin.account_id
    )
    runtime.router.invalidate()
