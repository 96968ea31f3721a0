"""What one generation costs PostgreSQL, measured alone (issue 23).

Admits and settles generations with the gateway's own statements (`services.ledger.admit` and
`settle`), from 16 connections over 16 accounts with an API key each, on a fresh database
migrated to head, and reports per generation: the CPU time of the PostgreSQL backends serving
that database, and the WAL written (`pg_current_wal_lsn()`). With `--waldump` (the server's WAL
directory, readable by this user) it also breaks the WAL down by record type with `pg_waldump`.

    uv run python bench/generation_writes.py                      # 4,000 generations
    uv run python bench/generation_writes.py --waldump /var/lib/postgresql/15/main/pg_wal

No HTTP and no gateway process: the figures are the database's share of a request alone, so they
move only with the SQL and the schema. `bench/run.py` measures the same through the server.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from run import DEFAULT_DATABASE_URL, bench_urls, cpu_seconds, drop_database, postgres_processes
from run import recreate_database as recreate
from tollgate_core import Usage
from tollgate_server.db.migrate import upgrade
from tollgate_server.services import ledger

try:
    from tollgate_server.db.ids import time_ordered_uuid
except ImportError:  # a revision before migration 0012, measured for comparison
    time_ordered_uuid = uuid.uuid4

CONNECTIONS = 16


async def _setup(conn: asyncpg.Connection) -> tuple[list[asyncpg.Record], asyncpg.Record]:
    model = await conn.fetchrow(
        "INSERT INTO models (name, provider, upstream_model, context_window, max_output_tokens, "
        "default_max_tokens) VALUES ('bench-model', 'openai', 'mock', 8192, 1024, 64) "
        "RETURNING id"
    )
    price = await conn.fetchrow(
        "INSERT INTO model_prices (model_id, input_per_million, output_per_million) "
        "VALUES ($1, 1500000, 6000000) RETURNING id, input_per_million, output_per_million",
        model["id"],
    )
    accounts = []
    for index in range(CONNECTIONS):
        account = await conn.fetchrow(
            "INSERT INTO accounts (email, password_hash, role, balance) "
            "VALUES ($1, 'x', 'client', 100000000000000) RETURNING id",
            f"bench{index}@example.com",
        )
        key = await conn.fetchrow(
            "INSERT INTO api_keys (account_id, name, prefix, key_hash) "
            "VALUES ($1, 'bench', $2, $3) RETURNING id",
            account["id"],
            f"tg_{index:08d}",
            uuid.uuid4().bytes,
        )
        accounts.append({"account": account["id"], "key": key["id"]})
    return accounts, {"model": model["id"], **dict(price)}


async def _generations(
    conns: Sequence[asyncpg.Connection],
    accounts: Sequence[dict[str, Any]],
    price: dict[str, Any],
    each: int,
) -> None:
    async def worker(index: int) -> None:
        conn = conns[index]
        for step in range(each):
            who = accounts[(index + step) % len(accounts)]  # requests rotate over the accounts
            admission = ledger.Admission(
                generation_id=time_ordered_uuid(),
                account_id=who["account"],
                api_key_id=who["key"],
                model_id=price["model"],
                model_name="bench-model",
                price_id=price["id"],
                input_price=price["input_per_million"],
                output_price=price["output_per_million"],
                hold=400,
                stream=False,
                max_tokens=64,
                prompt_tokens=12,
                deadline_seconds=720,
            )
            await ledger.admit(conn, admission, strict=False, max_running=100_000)
            outcome = ledger.Outcome(
                status="completed",
                usage=Usage(input_tokens=12, output_tokens=16),
                charge=114,
                first_token_ms=1,
                duration_ms=1,
            )
            assert await ledger.settle(conn, admission.generation_id, outcome)

    await asyncio.gather(*(worker(index) for index in range(len(conns))))


async def measure(dsn: str, database: str, count: int) -> dict[str, Any]:
    conns = [
        await asyncpg.connect(dsn, server_settings={"application_name": "tollgate"})
        for _ in range(CONNECTIONS)
    ]
    try:
        accounts, price = await _setup(conns[0])
        await _generations(conns, accounts, price, 50)  # warm-up: caches, plans
        backends = postgres_processes(database)
        each = count // CONNECTIONS
        start_lsn = await conns[0].fetchval("SELECT pg_current_wal_lsn()")
        cpu0, t0 = cpu_seconds(backends), time.perf_counter()
        await _generations(conns, accounts, price, each)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds(backends) - cpu0
        end_lsn = await conns[0].fetchval("SELECT pg_current_wal_lsn()")
        wal = await conns[0].fetchval("SELECT $1::pg_lsn - $2::pg_lsn", end_lsn, start_lsn)
    finally:
        for conn in conns:
            await conn.close()
    done = each * CONNECTIONS
    return {
        "generations": done,
        "per_second": done / elapsed,
        "db_cpu_ms": 1000 * cpu / done,
        "wal_bytes": float(wal) / done,
        "lsn": (_lsn(start_lsn), _lsn(end_lsn)),
    }


def _lsn(position: Any) -> str:
    """asyncpg reads a pg_lsn as an integer; pg_waldump wants it as PostgreSQL writes it."""
    value = int(position)
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def waldump(directory: str, lsn: tuple[str, str], count: int) -> list[str]:
    """The WAL between the two positions by record type, per generation."""
    tool = shutil.which("pg_waldump") or next(
        iter(sorted(__import__("glob").glob("/usr/lib/postgresql/*/bin/pg_waldump"))), None
    )
    if tool is None:
        return ["(pg_waldump not found)"]
    out = subprocess.run(
        [tool, "-p", directory, "--stats=record", "-s", lsn[0], "-e", lsn[1]],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    rows = []
    number = r"(\d+)\s+\(\s*[\d.]+\)"
    for line in out.splitlines():
        found = re.match(rf"(\S+)\s+{number}\s+{number}\s+{number}\s+{number}", line)
        if found:
            name, records, size, fpi, total = found.groups()
            rows.append((int(total), name, int(records), int(size), int(fpi)))
    lines = ["| record | per generation | bytes | of which full pages |", "|---|---|---|---|"]
    for total, name, records, _, fpi in sorted(rows, reverse=True)[:12]:
        lines.append(
            f"| {name} | {records / count:.2f} | {total / count:.0f} | {fpi / count:.0f} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--db-name", default="tollgate_bench_writes")
    parser.add_argument("--generations", type=int, default=4000)
    parser.add_argument("--waldump", help="the server's pg_wal directory, for pg_waldump")
    args = parser.parse_args(argv)
    url, dsn, maintenance = bench_urls(args.database_url, args.db_name)
    recreate(maintenance, args.db_name)
    try:
        upgrade(url)
        result = asyncio.run(measure(dsn, args.db_name, args.generations))
    finally:
        drop_database(maintenance, args.db_name)
    print(
        f"{result['generations']} generations, {result['per_second']:.0f}/s, "
        f"PostgreSQL CPU {result['db_cpu_ms']:.3f} ms and WAL {result['wal_bytes']:.0f} B "
        "per generation"
    )
    if args.waldump:
        print("\n".join(waldump(args.waldump, result["lsn"], result["generations"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
