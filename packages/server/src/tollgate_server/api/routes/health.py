"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from tollgate_server.api.deps import RuntimeDep
from tollgate_server.api.json_body import StrictJsonRoute
from tollgate_server.api.responses import errors
from tollgate_server.db.revision import SCHEMA_HEAD
from tollgate_server.errors import Unavailable
from tollgate_server.services.spool import count_spooled

router = APIRouter(tags=["health"], route_class=StrictJsonRoute)


class HealthPublic(BaseModel):
    """The process is up."""

    status: Literal["ok"] = Field(description="Always `ok`", examples=["ok"])


class ReadyPublic(BaseModel):
    """The process can serve: its database answers and its schema is current."""

    status: Literal["ready"] = Field(description="Always `ready`", examples=["ready"])
    schema_revision: str = Field(
        description="The database schema's migration, the newest this code knows",
        examples=["0002"],
    )
    settlements_waiting: int = Field(
        description="Settlements of this process waiting for the database (after an outage)",
        examples=[0],
    )
    settlements_spooled: int = Field(
        description="Settlements kept on disk in the data directory until they reach the "
        "database, by this process or by processes that are gone",
        examples=[0],
    )


@router.get("/healthz", summary="The process is up", response_model=HealthPublic)
async def healthz() -> HealthPublic:
    """Answers 200 while the process runs, whatever the database does."""
    return HealthPublic(status="ok")


@router.get(
    "/readyz",
    summary="Ready to serve",
    response_model=ReadyPublic,
    responses=errors(
        503,
        notes={
            503: "Shutting down, the database is unreachable, or its schema is not at this "
            "code's newest migration (`service_unavailable`)"
        },
    ),
)
async def readyz(runtime: RuntimeDep) -> ReadyPublic:
    """200 when the database answers and its schema is at this code's newest migration.

    Both answers say how many settlements wait, in memory and on disk."""
    waiting = len(runtime.pending_settlements)
    spooled = await count_spooled(runtime.spool.directory)
    pending = f"; settlements waiting: {waiting}, spooled: {spooled}"
    if runtime.draining:
        raise Unavailable("service_unavailable", "shutting down" + pending, retry_after=1)
    try:
        async with runtime.engine.connect() as conn:
            current = (
                await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
            ).scalar()
    except Exception as exc:
        raise Unavailable(
            "service_unavailable",
            "the database is unavailable" + pending,
            retry_after=2,
        ) from exc
    if current != SCHEMA_HEAD:
        raise Unavailable("service_unavailable", f"schema at {current}, code expects {SCHEMA_HEAD}")
    return ReadyPublic(
        status="ready",
        schema_revision=SCHEMA_HEAD,
        settlements_waiting=waiting,
        settlements_spooled=spooled,
    )
