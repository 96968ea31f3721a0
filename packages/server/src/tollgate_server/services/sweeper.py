"""Releasing holds that outlived their generation, and the heartbeats that tell.

Every server process registers an `instances` row and refreshes its heartbeat. A generation still
unsettled whose process has stopped beating (it died: a clean shutdown settles everything and
removes its row first), or whose `deadline_at` (admission + the maximum generation time + a
margin) has passed, belongs to nobody. Nothing is written per chunk, so there is no record of
what such a generation produced: the sweeper releases its hold with no charge (status
``interrupted``), through the same guarded statement every settlement uses, so it can never
charge twice. Should the owner turn out alive after all (a heartbeat held up longer than the
stale limit), its own settlement then finds the hold released and charges what it delivered as a
late charge (`tollgate_server.services.late_charges`).

Settlements spooled to disk during a database outage come first: before each sweep (and at start,
before the first), the spool files of processes that are gone are replayed, and no hold named in
any spool file of this data directory is released (`tollgate_server.services.spool`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from tollgate_server.db.raw import raw_connection
from tollgate_server.errors import database_unavailable
from tollgate_server.observability.metrics import get_metrics
from tollgate_server.runtime import Runtime
from tollgate_server.services import spool
from tollgate_server.services.late_charges import deliver_settlement
from tollgate_server.services.ledger import DEADLINE_MARGIN_SECONDS, Outcome, settle

logger = logging.getLogger("tollgate.sweeper")

ORPHANS_SQL = """
SELECT g.id FROM generations g
LEFT JOIN instances i ON i.id = g.instance_id
WHERE g.settled_at IS NULL AND g.id <> ALL($2::uuid[])
  AND g.created_at > now() - make_interval(secs => $3)
  AND (g.deadline_at < now() OR i.id IS NULL
       OR i.heartbeat_at < now() - make_interval(secs => $1))
ORDER BY g.deadline_at LIMIT $4
"""
"""Generations nobody will settle, among those admitted in the last $3 seconds. No index names
`settled_at` (so that the settlement's update is HOT, migration 0012): the look back is a range
of `ix_generations_created`, and only the first sweep of each process looks at all of them."""

LOOK_BACK_SECONDS = 600.0
"""How far back a routine sweep looks beyond the longest deadline and the time since the last
round that succeeded: every generation admitted before that had its deadline pass while that
round looked at it. A margin, not a day: the scan reads every generation in the window (a day
of them took 161 ms at 10 requests a second, 22 minutes 3 ms)."""

EVERYTHING = 1e9
"""A look back (about 31 years) that covers every generation."""

ORPHANS_BATCH = 500
"""Generations released per statement. A round repeats until a batch comes back short: a
generation left for a later round could age out of that round's look back and keep its hold."""

REGISTER_SQL = """
INSERT INTO instances (id) VALUES ($1)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
"""


async def replay_spools(runtime: Runtime) -> int:
    """Settle what the spool files of processes that are gone still hold; returns how many.

    A settlement whose generation this database does not know stays in its file (reported by
    `tollgate db check`), rather than be dropped.
    """
    directory = spool.spool_directory(runtime.settings.data_dir)
    claimed = await asyncio.to_thread(spool.claim_abandoned, directory)
    replayed = 0
    try:
        for abandoned in claimed:
            for generation_id, outcome in list(abandoned.pending.items()):
                async with raw_connection(runtime.hot_pool) as conn:
                    delivery = await deliver_settlement(conn, generation_id, outcome)
                if delivery == "unknown_generation":
                    logger.error(
                        "spool file %s names generation %s, unknown to this database; kept",
                        abandoned.path.name,
                        generation_id,
                    )
                    continue
                if delivery == "late_charge":
                    runtime.late_charges += 1
                abandoned.mark_done(generation_id)
                replayed += 1
    finally:
        for abandoned in claimed:
            abandoned.release()
    if replayed:
        logger.warning("settled %d settlements spooled by processes that are gone", replayed)
    return replayed


def look_back(runtime: Runtime, since_last_round: float = 0.0) -> float:
    """A routine sweep's window: the time since the last round that succeeded, the longest
    deadline, and `LOOK_BACK_SECONDS` more."""
    settings = runtime.settings
    deadline = settings.max_generation_seconds + DEADLINE_MARGIN_SECONDS
    return since_last_round + deadline + LOOK_BACK_SECONDS


async def sweep_once(runtime: Runtime, *, within: float | None = None) -> int:
    """Replay abandoned spool files, then settle every expired generation admitted in the last
    `within` seconds (default `look_back`); returns how many were swept."""
    window = look_back(runtime) if within is None else within
    await replay_spools(runtime)
    spooled = await asyncio.to_thread(
        spool.summarize, spool.spool_directory(runtime.settings.data_dir)
    )
    keep: list[uuid.UUID] = sorted(spooled.generation_ids)
    swept = 0
    async with raw_connection(runtime.hot_pool) as conn:
        stale = runtime.settings.instance_stale_seconds
        outcome = Outcome(status="interrupted", usage=None, charge=0, error_code="interrupted")
        while True:
            # Each row comes back settled (here, or by its own process meanwhile), so no
            # generation is returned twice and the loop ends.
            rows = await conn.fetch(ORPHANS_SQL, stale, keep, window, ORPHANS_BATCH)
            for row in rows:
                if await settle(conn, row["id"], outcome):
                    swept += 1
            if len(rows) < ORPHANS_BATCH:
                break
        # Per-minute request counters are useless once their minute is over.
        await conn.execute(
            "DELETE FROM rate_windows WHERE window_start < now() - interval '5 minutes'"
        )
        await conn.execute(
            "DELETE FROM key_windows WHERE window_start < now() - interval '5 minutes'"
        )
        await conn.execute(
            "DELETE FROM instances WHERE heartbeat_at < now() - make_interval(secs => $1) "
            "AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.instance_id = instances.id "
            "AND g.settled_at IS NULL AND g.created_at > now() - make_interval(secs => $2))",
            stale,
            window,
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
        except Exception as exc:  # a database outage must not end the loop
            _retry_later("heartbeat", exc)


async def run_sweeper(runtime: Runtime) -> None:
    # The first round looks at every generation (a slow scan on a long history, so not in the
    # sweep that runs before the process serves); each round after looks back to the last one
    # that succeeded, plus `look_back`, so rounds lost to a database outage leave no gap.
    loop = asyncio.get_running_loop()
    last_round: float | None = None
    while True:
        await asyncio.sleep(runtime.settings.sweep_interval_seconds)
        began = loop.time()
        within = EVERYTHING if last_round is None else look_back(runtime, began - last_round)
        try:
            await sweep_once(runtime, within=within)
            last_round = began
        except Exception as exc:  # a database outage must not end the loop
            _retry_later("sweep", exc)


def _retry_later(task: str, exc: Exception) -> None:
    """Log a failed round of a background loop: one line for a database outage (expected, and
    said once more by whoever notices it first), a traceback for anything else (a bug)."""
    if database_unavailable(exc):
        logger.warning("%s failed: the database is unavailable (%s); will retry", task, exc)
    else:
        logger.warning("%s failed; will retry", task, exc_info=True)
