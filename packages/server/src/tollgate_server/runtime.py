"""What the app holds while it runs: engine, HTTP client, providers, caches.

Built by the lifespan in `app.py`, stored on ``app.state.runtime``, disposed of on shutdown.
Nothing here exists at import time.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tollgate_core import PluginReport, Provider

from tollgate_server.services.spool import SettlementSpool, spool_directory
from tollgate_server.services.tracker import GenerationTracker
from tollgate_server.settings import Settings

if TYPE_CHECKING:
    from tollgate_server.db.listener import Listener
    from tollgate_server.security.tokens import VerifiedAccessTokens
    from tollgate_server.services.account_states import AccountStates
    from tollgate_server.services.catalogue import Catalogue
    from tollgate_server.services.keys import KeyCache
    from tollgate_server.services.routing import Router


@dataclass(eq=False)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    """For sessions (accounts, admin, reads): pre-pinged connections."""
    hot_pool: asyncpg.Pool
    """For the generation path's statements: bare asyncpg (see `tollgate_server.db.raw`)."""
    sessions: async_sessionmaker[AsyncSession]
    http: aiohttp.ClientSession
    plugins: PluginReport
    providers: dict[str, Provider]
    """Configured upstreams by name (a model's `provider` field)."""
    jwt_secret: str
    listener: Listener
    catalogue: Catalogue
    keys: KeyCache
    access_tokens: VerifiedAccessTokens
    accounts: AccountStates
    """Whether an account may act now (exists, not disabled), for every authenticated route."""
    router: Router
    """Each model's deployments and their health in this process (`services/routing.py`)."""
    instance_id: uuid.UUID = field(default_factory=uuid.uuid4)
    """This process, as registered in `instances` for the sweeper."""
    draining: bool = False
    """Set on SIGTERM: /readyz answers 503 and new generations are refused."""
    generations: GenerationTracker = field(default_factory=GenerationTracker)
    """Generations admitted and not yet finished in this process."""
    background: list[asyncio.Task[None]] = field(default_factory=list)
    pending_settlements: set[asyncio.Task[None]] = field(default_factory=set)
    """Settlements waiting for the database to come back (see the gateway)."""
    spool: SettlementSpool = field(init=False)
    """This process's file of settlements that are waiting, on disk (`services/spool.py`)."""
    late_charges: int = 0
    """Late charges made by this process (a counter for metrics)."""

    def __post_init__(self) -> None:
        self.spool = SettlementSpool(spool_directory(self.settings.data_dir), self.instance_id)
