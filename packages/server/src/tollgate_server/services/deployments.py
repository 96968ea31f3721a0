"""Deployments in the database: the upstreams that serve each model (admin side).

A change fires the catalogue's NOTIFY (a trigger), so every server reloads its routes before
its next request. Keys are encrypted (`services.credentials`) and shown by their last four
characters only. Without any deployment, a model is served by the zero-configuration default
upstream of its provider, from the environment as before (not stored: nothing to migrate).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from tollgate_server.deployment_schemas import DeploymentCreate, DeploymentUpdate
from tollgate_server.errors import InvalidParameters, not_found
from tollgate_server.services.accounts import record_audit
from tollgate_server.services.credentials import CredentialBox, last_four

COLUMNS = (
    "id, model_name, provider, base_url, upstream_model, api_key_encrypted, api_key_last4, "
    "weight, priority, requests_per_minute, tokens_per_minute, first_token_timeout, enabled, "
    "disabled_reason, created_at"
)


@dataclass(frozen=True, slots=True)
class DeploymentRow:
    id: int
    model: str
    provider: str
    base_url: str | None
    upstream_model: str | None
    api_key_encrypted: bytes | None
    api_key_last4: str | None
    weight: int
    priority: int
    requests_per_minute: int | None
    tokens_per_minute: int | None
    first_token_timeout: float | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime

    def __repr__(self) -> str:
        return f"DeploymentRow(id={self.id}, model={self.model!r}, provider={self.provider!r})"


def _row(record: Any) -> DeploymentRow:
    return DeploymentRow(
        id=record.id,
        model=record.model_name,
        provider=record.provider,
        base_url=record.base_url,
        upstream_model=record.upstream_model,
        api_key_encrypted=bytes(record.api_key_encrypted) if record.api_key_encrypted else None,
        api_key_last4=record.api_key_last4,
        weight=record.weight,
        priority=record.priority,
        requests_per_minute=record.requests_per_minute,
        tokens_per_minute=record.tokens_per_minute,
        first_token_timeout=record.first_token_timeout,
        enabled=record.enabled,
        disabled_reason=record.disabled_reason,
        created_at=record.created_at,
    )


def deployment_public(row: DeploymentRow, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deployment as the admin API shows it: never the key, only whether one is set."""
    shown = None
    if row.api_key_encrypted is not None:
        shown = f"…{row.api_key_last4}" if row.api_key_last4 else "set"
    return {
        "id": row.id,
        "model": row.model,
        "provider": row.provider,
        "base_url": row.base_url,
        "api_key": shown,
        "upstream_model": row.upstream_model,
        "weight": row.weight,
        "priority": row.priority,
        "requests_per_minute": row.requests_per_minute,
        "tokens_per_minute": row.tokens_per_minute,
        "first_token_timeout": row.first_token_timeout,
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "created_at": row.created_at,
        **(stats or {}),
    }


async def read_deployments(conn: AsyncConnection) -> list[DeploymentRow]:
    result = await conn.execute(text(f"SELECT {COLUMNS} FROM deployments ORDER BY id"))
    return [_row(r) for r in result]


async def list_deployments(*, session: AsyncSession) -> list[DeploymentRow]:
    return await read_deployments(await session.connection())


async def get_deployment(*, session: AsyncSession, deployment_id: int) -> DeploymentRow:
    result = await session.execute(
        text(f"SELECT {COLUMNS} FROM deployments WHERE id = :id"), {"id": deployment_id}
    )
    record = result.first()
    if record is None:
        raise not_found("deployment")
    return _row(record)


async def create_deployment(
    *,
    session: AsyncSession,
    data: DeploymentCreate,
    box: CredentialBox,
    known_providers: set[str] | None,
    actor_id: uuid.UUID | None,
) -> DeploymentRow:
    """Add a deployment; its key is encrypted with the row's id as associated data."""
    if known_providers is not None and data.provider not in known_providers:
        raise InvalidParameters(
            "unknown_provider", f"no installed provider is named {data.provider}"
        )
    exists = await session.execute(
        text("SELECT 1 FROM models WHERE name = :name"), {"name": data.model}
    )
    if exists.first() is None:
        raise not_found("model")
    values = data.model_dump(exclude={"model", "api_key"})
    result = await session.execute(
        text(
            "INSERT INTO deployments (model_name, provider, base_url, upstream_model, weight, "
            "priority, requests_per_minute, tokens_per_minute, first_token_timeout, enabled) "
            "VALUES (:model, :provider, :base_url, :upstream_model, :weight, :priority, "
            ":requests_per_minute, :tokens_per_minute, :first_token_timeout, :enabled) "
            "RETURNING id"
        ),
        {"model": data.model, **values},
    )
    deployment_id = result.scalar_one()
    if data.api_key is not None:
        await _store_key(session, box, deployment_id, data.api_key)
    await record_audit(
        session=session,
        actor_id=actor_id,
        action="deployment.create",
        detail={"deployment": deployment_id, "model": data.model, "provider": data.provider},
    )
    row = await get_deployment(session=session, deployment_id=deployment_id)
    await session.commit()
    return row


async def update_deployment(
    *,
    session: AsyncSession,
    deployment_id: int,
    data: DeploymentUpdate,
    box: CredentialBox,
    actor_id: uuid.UUID | None,
) -> DeploymentRow:
    """Change the fields sent. Enabling a deployment clears why the gateway had disabled it."""
    await get_deployment(session=session, deployment_id=deployment_id)
    values = data.model_dump(exclude_unset=True, exclude={"api_key"})
    if values:
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        if values.get("enabled"):
            assignments += ", disabled_reason = NULL"
        await session.execute(
            text(f"UPDATE deployments SET {assignments}, updated_at = now() WHERE id = :id"),
            {**values, "id": deployment_id},
        )
    if data.api_key is not None:
        await _store_key(session, box, deployment_id, data.api_key)
    await record_audit(
        session=session,
        actor_id=actor_id,
        action="deployment.update",
        detail={"deployment": deployment_id, "fields": sorted(data.model_fields_set)},
    )
    row = await get_deployment(session=session, deployment_id=deployment_id)
    await session.commit()
    return row


async def delete_deployment(
    *, session: AsyncSession, deployment_id: int, actor_id: uuid.UUID | None
) -> None:
    result = await session.execute(
        text("DELETE FROM deployments WHERE id = :id RETURNING id"), {"id": deployment_id}
    )
    if result.first() is None:
        raise not_found("deployment")
    await record_audit(
        session=session,
        actor_id=actor_id,
        action="deployment.delete",
        detail={"deployment": deployment_id},
    )
    await session.commit()


async def _store_key(
    session: AsyncSession, box: CredentialBox, deployment_id: int, api_key: str
) -> None:
    try:
        await session.execute(
            text(
                "UPDATE deployments SET api_key_encrypted = :blob, api_key_last4 = :last4, "
                "updated_at = now() WHERE id = :id"
            ),
            {
                "blob": box.encrypt(api_key, deployment_id=deployment_id),
                "last4": last_four(api_key),
                "id": deployment_id,
            },
        )
    except IntegrityError:  # pragma: no cover - the row was just read under this transaction
        raise not_found("deployment") from None


DISABLE_SQL = text(
    "UPDATE deployments SET enabled = false, disabled_reason = :reason, updated_at = now() "
    "WHERE id = :id AND enabled"
)
"""The gateway's own disabling of a deployment whose key an upstream refused."""
