"""The model catalogue, cached in the server process.

Reads hit memory. Any change to `models` or `model_prices`, from this process, another worker or
the CLI, fires a PostgreSQL NOTIFY (a trigger in the schema); every server LISTENs and reloads
before its next request. If the listening connection drops, the cache is marked stale and
reloaded, so a missed notification can delay a change by one reload, never lose it (see
`tollgate_server.db.listener`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tollgate_core import Price

from tollgate_server.db.listener import Listener

logger = logging.getLogger("tollgate.catalogue")

CHANNEL = "tollgate_catalogue"
MODEL_KINDS = ("chat", "embedding")
"""What a model does: chat models serve the chat routes, embedding models `/v1/embeddings`."""
MAX_AGE_SECONDS = 60.0
"""Reload at least this often even when no notification came (belt and braces)."""

CATALOGUE_SQL = """
SELECT m.id, m.name, m.provider, m.upstream_model, m.enabled, m.free, m.context_window,
       m.max_output_tokens, m.default_max_tokens, m.created_at, m.fallbacks, m.kind,
       p.id AS price_id, p.input_per_million, p.output_per_million,
       p.cached_input_per_million, p.effective_from
FROM models m
LEFT JOIN LATERAL (
    SELECT id, input_per_million, output_per_million, cached_input_per_million, effective_from
    FROM model_prices
    WHERE model_id = m.id AND effective_from <= now()
    ORDER BY effective_from DESC, id DESC LIMIT 1
) p ON true
ORDER BY m.name
"""


@dataclass(frozen=True, slots=True)
class CatalogueModel:
    id: int
    name: str
    provider: str
    upstream_model: str
    enabled: bool
    free: bool
    context_window: int
    max_output_tokens: int
    default_max_tokens: int
    created_at: datetime
    price: Price | None
    price_effective_from: datetime | None
    fallbacks: tuple[str, ...] = ()
    """Models tried, in this order, when every deployment of this one failed (routing)."""
    kind: str = "chat"
    """``chat`` or ``embedding``: which routes serve it (`MODEL_KINDS`)."""

    @property
    def servable(self) -> bool:
        """Enabled and priced: a model without a price is never served."""
        return self.enabled and self.price is not None


def model_from_row(row: Any) -> CatalogueModel:
    price = None
    if row.price_id is not None:
        price = Price(
            input_per_million=row.input_per_million,
            output_per_million=row.output_per_million,
            id=row.price_id,
            cached_input_per_million=row.cached_input_per_million,
        )
    return CatalogueModel(
        id=row.id,
        name=row.name,
        provider=row.provider,
        upstream_model=row.upstream_model,
        enabled=row.enabled,
        free=row.free,
        context_window=row.context_window,
        max_output_tokens=row.max_output_tokens,
        default_max_tokens=row.default_max_tokens,
        created_at=row.created_at,
        price=price,
        price_effective_from=row.effective_from,
        fallbacks=tuple(row.fallbacks or ()),
        kind=row.kind,
    )


async def read_catalogue(conn: AsyncConnection) -> dict[str, CatalogueModel]:
    result = await conn.exec_driver_sql(CATALOGUE_SQL)
    return {row.name: model_from_row(row) for row in result}


class Catalogue:
    """Models by name, from memory, kept fresh by LISTEN/NOTIFY."""

    def __init__(self, engine: AsyncEngine, listener: Listener) -> None:
        self._engine = engine
        self._models: dict[str, CatalogueModel] = {}
        self._loaded_at = 0.0
        self._stale = True
        self._lock = asyncio.Lock()
        listener.subscribe(CHANNEL, self.invalidate)

    def invalidate(self) -> None:
        self._stale = True

    async def reload(self) -> None:
        async with self._engine.connect() as conn:
            models = await read_catalogue(conn)
        self._models = models
        self._loaded_at = time.monotonic()
        self._stale = False

    async def models(self) -> dict[str, CatalogueModel]:
        """The catalogue, reloaded first when a change was announced or the copy is old."""
        if self._stale or time.monotonic() - self._loaded_at > MAX_AGE_SECONDS:
            async with self._lock:
                if self._stale or time.monotonic() - self._loaded_at > MAX_AGE_SECONDS:
                    await self.reload()
        return self._models

    async def get(self, name: str) -> CatalogueModel | None:
        return (await self.models()).get(name)
