"""Releasing holds that outlived their generation, and the heartbeats that tell.

Every server process registers an `instances` row and refreshes its heartbeat. A generation still
unsettled whose process has stopped beating (it died: a clean shutdown settles everything and
removes its row first), or whose `deadline_at` (admission + the maximum generation time + a
margin) has passed, belongs to nobody. Nothing is written per chunk, so there is no record of
what such a generation produced: the sweeper releases its hold with no charge (status
``interrupted``), through the same guarded statement every settlement uses, so it can never
charge twice. Should the owner turn out alive after all (a heartbeat held up longer than the
stale limit), its own settlement then finds the generation settled and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging

from tollgate_server.db.raw import raw_connection
from tollgate_server.observability.metrics import get_metrics
from tollgate_server.runtime import Runtime
from tollgate_server.services.ledger import Outcome, settle

logger = logging.getLogger("tollgate.sweeper")

ORPHANS_SQL = """
SELECT g.id FROM generations g
LEFT JOIN instances i ON i.id = g.instance_id
WHERE g.settled_at IS NULL
  AND (g.deadline_at < now() OR i.id IS NULL
       OR i.heartbeat_at < now() - make_interval(secs => $1))
ORDER BY g.deadline_at LIMIT 500
"""

REGISTER_SQL = """
INSERT INTO instances (id) VALUES ($1)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
"""


async def sweep_once(runtime: Runtime) -> int:
    """Settle every expired generation; returns how many."""
    swept = 0
    async with raw_connection(runtime.hot_pool) as conn:
        stale = runtime.settings.instance_stale_seconds
        for row in await conn.fetch(ORPHANS_SQL, stale):
            outcome = Outcome(status="interrupted", usage=None, charge=0, error_code="interrupted")
            if await settle(conn, row["id"], outcome):
                swept += 1
        # Per-minute request counters are useless once their minute is over.
        await conn.execute(
            "DELETE FROM rate_windows WHERE window_start < now() - interval '5 minutes'"
        )
        await conn.execute(
            "DELETE FROM instances WHERE heartbeat_at < now() - make_interval(secs => $1) "
            "AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.instance_id = instances.id "
            "AND g.settled_at IS NULL)",
            stale,
        )
    if swept:
        get_metrics().sweeper_released.inc(swept)  # observability
        logger.warning("released %d holds left by generations that never ended", swept)
    return swept


async def register_instance(runtime: Runtime) -> None:
    async with raw_connection(runtime.hot_pool) as conn:
        await conn.execute(REGISTER_SQL, runtime.instance_id)


async def unregister_instance(runtime: Runtime) -> None:
    """After a clean drain nothing of ours runs: remove the row so nobody waits for it."""
    async with raw_connection(runtime.hot_pool) as conn:
        await conn.execute("DELETE FROM instances WHERE id = $1", runtime.instance_id)


async def run_heartbeat(runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(runtime.settings.heartbeat_seconds)
        try:
            await register_instance(runtime)
        except Exception:  # a database outage must not end the loop
            logger.warning("heartbeat failed; will retry", exc_info=True)


async def run_sweeper(runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(runtime.settings.sweep_interval_seconds)
        try:
            await sweep_once(runtime)
        except Exception:  # a database outage must not end the loop
            logger.warning("sweep failed; will retry", exc_info=True)
