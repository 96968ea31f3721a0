"""Releasing holds that outlived their generation.

A generation whose `deadline_at` (admission + the maximum generation time + a margin) has
passed while it is still unsettled can only belong to a process that died: a live one ends every
generation by its deadline. Nothing is written per chunk, so there is no record of what such a
generation produced; the sweeper releases its hold with no charge (status ``interrupted``), in
the same guarded statement every settlement uses, so it can never charge twice.
"""

from __future__ import annotations

import asyncio
import logging

from tollgate_server.db.raw import raw_connection
from tollgate_server.runtime import Runtime
from tollgate_server.services.ledger import Outcome, settle

logger = logging.getLogger("tollgate.sweeper")

EXPIRED_SQL = """
SELECT id FROM generations
WHERE settled_at IS NULL AND deadline_at < now()
ORDER BY deadline_at LIMIT 500
"""


async def sweep_once(runtime: Runtime) -> int:
    """Settle every expired generation; returns how many."""
    swept = 0
    async with raw_connection(runtime.engine) as conn:
        for row in await conn.fetch(EXPIRED_SQL):
            outcome = Outcome(status="interrupted", usage=None, charge=0, error_code="interrupted")
            if await settle(conn, row["id"], outcome):
                swept += 1
        # Per-minute request counters are useless once their minute is over.
        await conn.execute(
            "DELETE FROM rate_windows WHERE window_start < now() - interval '5 minutes'"
        )
    if swept:
        logger.warning("released %d holds left by generations that never ended", swept)
    return swept


async def run_sweeper(runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(runtime.settings.sweep_interval_seconds)
        try:
            await sweep_once(runtime)
        except Exception:  # a database outage must not end the loop
            logger.warning("sweep failed; will retry", exc_info=True)
