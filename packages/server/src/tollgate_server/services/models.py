"""The catalogue's admin side: adding models, changing them, setting prices.

Prices are rows in `model_prices` with `effective_from`; setting a price adds a row, so every
generation keeps naming the price it was charged at.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from tollgate_core import format_credits, parse_credits

from tollgate_server.errors import Conflict, InvalidParameters, not_found
from tollgate_server.schemas import ModelCreate, ModelUpdate
from tollgate_server.services.accounts import record_audit
from tollgate_server.services.catalogue import CatalogueModel, read_catalogue
from tollgate_server.services.seed import DEFAULT_CATALOGUE

SEED_LOCK = 7305112028


def model_public(model: CatalogueModel, *, configured: bool) -> dict[str, Any]:
    price = model.price
    return {
        "name": model.name,
        "provider": model.provider,
        "kind": model.kind,
        "upstream_model": model.upstream_model,
        "enabled": model.enabled,
        "free": model.free,
        "available": model.servable and configured,
        "context_window": model.context_window,
        "max_output_tokens": model.max_output_tokens,
        "default_max_tokens": model.default_max_tokens,
        "input_price": format_credits(price.input_per_million) if price else None,
        "output_price": format_credits(price.output_per_million) if price else None,
        "cached_input_price": (
            format_credits(price.cached_input_per_million)
            if price and price.cached_input_per_million is not None
            else None
        ),
        "price_effective_from": model.price_effective_from,
        "fallbacks": list(model.fallbacks),
    }


def _prices(
    input_price: str, output_price: str, *, free: bool, kind: str = "chat"
) -> tuple[int, int]:
    micro_in, micro_out = parse_credits(input_price), parse_credits(output_price)
    if micro_in < 0 or micro_out < 0:
        raise InvalidParameters("validation_error", "prices cannot be negative")
    # An embedding produces no output tokens: its output price may be zero.
    if not free and (micro_in == 0 or (micro_out == 0 and kind == "chat")):
        raise InvalidParameters(
            "validation_error", "a price of zero needs the model to be marked free"
        )
    return micro_in, micro_out


async def get_model(*, session: AsyncSession, name: str) -> CatalogueModel:
    models = await read_catalogue(await session.connection())
    if name not in models:
        raise not_found("model")
    return models[name]


async def list_models(*, session: AsyncSession) -> list[CatalogueModel]:
    return list((await read_catalogue(await session.connection())).values())


async def create_model(
    *, session: AsyncSession, data: ModelCreate, actor_id: uuid.UUID | None
) -> CatalogueModel:
    default_max = data.default_max_tokens or min(data.max_output_tokens, 1024)
    if default_max > data.max_output_tokens:
        raise InvalidParameters("validation_error", "default_max_tokens exceeds max_output_tokens")
    micro_in, micro_out = _prices(
        data.input_price, data.output_price, free=data.free, kind=data.kind
    )
    micro_cached = _cached_price(data.cached_input_price)
    try:
        model_id = await session.scalar(
            text(
                "INSERT INTO models (name, provider, upstream_model, enabled, free, "
                "context_window, max_output_tokens, default_max_tokens, kind) VALUES (:name, "
                ":provider, :upstream, :enabled, :free, :ctx, :max_out, :default_max, :kind) "
                "RETURNING id"
            ),
            {
                "name": data.name,
                "provider": data.provider,
                "upstream": data.upstream_model,
                "enabled": data.enabled,
                "free": data.free,
                "ctx": data.context_window,
                "max_out": data.max_output_tokens,
                "default_max": default_max,
                "kind": data.kind,
            },
        )
    except IntegrityError as exc:
        await session.rollback()
        if "uq_models_name" not in str(exc.orig):
            raise
        raise Conflict("model_exists", f"a model named {data.name} exists") from None
    await _add_price(session, model_id, micro_in, micro_out, micro_cached)
    await record_audit(
        session=session, actor_id=actor_id, action="model.create", detail=data.model_dump()
    )
    await session.commit()
    return await get_model(session=session, name=data.name)


def _cached_price(value: str | None) -> int | None:
    if value is None:
        return None
    micro = parse_credits(value)
    if micro < 0:
        raise InvalidParameters("validation_error", "prices cannot be negative")
    return micro


async def _add_price(
    session: AsyncSession,
    model_id: int | None,
    micro_in: int,
    micro_out: int,
    micro_cached: int | None = None,
) -> None:
    # clock_timestamp(), not now(): a price set twice in one transaction must order.
    await session.execute(
        text(
            "INSERT INTO model_prices (model_id, input_per_million, output_per_million, "
            "cached_input_per_million, effective_from) "
            "VALUES (:model, :input, :output, :cached, clock_timestamp())"
        ),
        {"model": model_id, "input": micro_in, "output": micro_out, "cached": micro_cached},
    )


async def update_model(
    *, session: AsyncSession, name: str, data: ModelUpdate, actor_id: uuid.UUID | None
) -> CatalogueModel:
    current = await get_model(session=session, name=name)
    free = current.free if data.free is None else data.free
    kind = data.kind or current.kind
    max_out = data.max_output_tokens or current.max_output_tokens
    default_max = data.default_max_tokens or min(current.default_max_tokens, max_out)
    if default_max > max_out:
        raise InvalidParameters("validation_error", "default_max_tokens exceeds max_output_tokens")
    await session.execute(
        text(
            "UPDATE models SET provider = coalesce(:provider, provider), "
            "upstream_model = coalesce(:upstream, upstream_model), "
            "enabled = coalesce(:enabled, enabled), free = :free, kind = :kind, "
            "context_window = coalesce(:ctx, context_window), max_output_tokens = :max_out, "
            "default_max_tokens = :default_max, updated_at = now() WHERE id = :id"
        ),
        {
            "provider": data.provider,
            "upstream": data.upstream_model,
            "enabled": data.enabled,
            "free": free,
            "kind": kind,
            "ctx": data.context_window,
            "max_out": max_out,
            "default_max": default_max,
            "id": current.id,
        },
    )
    if (
        data.input_price is not None
        or data.output_price is not None
        or "cached_input_price" in data.model_fields_set
    ):
        price = current.price
        input_price = data.input_price or (
            format_credits(price.input_per_million) if price else None
        )
        output_price = data.output_price or (
            format_credits(price.output_per_million) if price else None
        )
        if input_price is None or output_price is None:
            raise InvalidParameters("validation_error", "set both prices for an unpriced model")
        micro_in, micro_out = _prices(input_price, output_price, free=free, kind=kind)
        # Sent (a price, or null to drop it) it changes; unsent it carries over.
        micro_cached = (
            _cached_price(data.cached_input_price)
            if "cached_input_price" in data.model_fields_set
            else (price.cached_input_per_million if price else None)
        )
        await _add_price(session, current.id, micro_in, micro_out, micro_cached)
    elif (
        not free
        and current.price is not None
        and (
            current.price.input_per_million == 0
            or (current.price.output_per_million == 0 and kind == "chat")
        )
    ):
        raise InvalidParameters("validation_error", "a model priced at zero must stay free")
    if data.fallbacks is not None:
        await _set_fallbacks(session, current, data.fallbacks)
    await record_audit(
        session=session,
        actor_id=actor_id,
        action="model.update",
        detail={"name": name, **data.model_dump(exclude_none=True)},
    )
    await session.commit()
    return await get_model(session=session, name=name)


async def _set_fallbacks(session: AsyncSession, model: CatalogueModel, names: list[str]) -> None:
    if model.name in names or len(set(names)) != len(names):
        raise InvalidParameters(
            "validation_error", "fallbacks: each a different model, not the model itself"
        )
    known = set(
        (
            await session.execute(
                text("SELECT name FROM models WHERE name = ANY(:names)"), {"names": names}
            )
        ).scalars()
    )
    missing = [name for name in names if name not in known]
    if missing:
        raise InvalidParameters("validation_error", f"fallbacks: no model named {missing[0]}")
    await session.execute(
        text("UPDATE models SET fallbacks = :names WHERE id = :id"),
        {"names": names, "id": model.id},
    )


async def seed_default_catalogue(*, session: AsyncSession) -> None:
    """Write the default catalogue once, when no model was ever added."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEED_LOCK})
    if await session.scalar(text("SELECT 1 FROM models LIMIT 1")):
        await session.commit()
        return
    for seed in DEFAULT_CATALOGUE:
        await create_model(
            session=session,
            data=ModelCreate(
                name=seed.name,
                provider=seed.provider,
                upstream_model=seed.upstream_model,
                context_window=seed.context_window,
                max_output_tokens=seed.max_output_tokens,
                default_max_tokens=seed.default_max_tokens,
                input_price=seed.input_price,
                output_price=seed.output_price,
                kind=seed.kind,
            ),
            actor_id=None,
        )
