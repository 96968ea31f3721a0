"""Server time of every web console page with 100,000 generations in the database (issue 18).

Creates a scratch database (dropped at the end unless --keep-db), migrates it, and fills it with
one SQL statement per table (generate_series): `--generations` settled generations over the last
90 days on five models, `--heavy-share` of them on one client account (the worst case for the
client's pages, whose aggregates cover one account) and the rest spread over 200 other accounts,
each with its hold and charge in the ledger. It then serves the app with uvicorn on loopback,
signs in through the console's own form (the client, then the admin), and requests each page
`--repeat` times after two warm-up requests.

"Server time" is measured by an ASGI wrapper around the app: from the moment uvicorn hands the
request over to the last byte of the response body, so it includes the database round trips
and the rendering, and leaves out the client and the socket.

Usage::

    uv run python bench/console_pages.py            # 100,000 generations, 20 requests a page
    uv run python bench/console_pages.py --generations 10000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn
from tollgate_server.app import create_app
from tollgate_server.db.migrate import upgrade
from tollgate_server.security.passwords import HASHER
from tollgate_server.settings import Settings

PASSWORD = "bench-password-123"
ADMIN_EMAIL = "admin@bench.example"
HEAVY_EMAIL = "heavy@bench.example"
MODELS = ["bench-alpha", "bench-beta", "bench-gamma", "bench-delta", "bench-epsilon"]

FILL = """
WITH heavy AS (SELECT id FROM accounts WHERE email = $2),
others AS (SELECT array_agg(id ORDER BY email) AS ids FROM accounts WHERE email LIKE 'other-%'),
catalogue AS (SELECT array_agg(id ORDER BY name) AS ids, array_agg(name ORDER BY name) AS names
              FROM models WHERE name LIKE 'bench-%')
INSERT INTO generations (id, account_id, model_id, model_name, input_price, output_price, hold,
    stream, max_tokens, prompt_tokens_estimate, status, input_tokens, output_tokens,
    usage_estimated, cost, first_token_ms, duration_ms, created_at, deadline_at, settled_at)
SELECT gen_random_uuid(),
       CASE WHEN random() < $3 THEN (SELECT id FROM heavy)
            ELSE (SELECT ids[1 + (i % 200)] FROM others) END,
       (SELECT ids[1 + (i % 5)] FROM catalogue), (SELECT names[1 + (i % 5)] FROM catalogue),
       1000000, 2000000, 5000, i % 3 <> 0, 1000, 200,
       CASE WHEN i % 50 = 0 THEN 'client_disconnected' ELSE 'completed' END,
       100 + i % 400, 50 + i % 900, i % 7 = 0, 200 + i % 400 + 2 * (50 + i % 900),
       100 + i % 300, 500 + i % 3000, t, t + interval '10 minutes', t + interval '2 seconds'
FROM generate_series(1, $1) AS i,
     -- Spread evenly over 90 days (7,776,000 s); it refers to i, so it is computed per row.
     LATERAL (SELECT now() - ((i::bigint * 7919) % 7776000) * interval '1 second' AS t) AS stamp
"""

LEDGER = """
INSERT INTO ledger_entries (account_id, kind, amount, held_delta, balance_after, held_after,
    generation_id, created_at)
SELECT g.account_id, k.kind, CASE k.kind WHEN 'hold' THEN 0 ELSE -g.cost END,
       CASE k.kind WHEN 'hold' THEN g.hold ELSE -g.hold END, 0, 0, g.id,
       CASE k.kind WHEN 'hold' THEN g.created_at ELSE g.settled_at END
FROM generations g CROSS JOIN (VALUES ('hold'), ('charge')) AS k(kind)
ORDER BY 8
"""


class Timed:
    """ASGI wrapper: the server time of each request, by path."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.times: dict[str, list[float]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            key = scope["path"] + (
                "?" + scope["query_string"].decode() if scope["query_string"] else ""
            )
            self.times.setdefault(key, []).append((time.perf_counter() - started) * 1000)


async def prepare(dsn: str, name: str) -> None:
    maintenance = await asyncpg.connect(dsn)
    try:
        await maintenance.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await maintenance.execute(f'CREATE DATABASE "{name}"')
    finally:
        await maintenance.close()


async def fill(dsn: str, generations: int, heavy_share: float) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        digest = HASHER.hash(PASSWORD)
        await conn.execute(
            "INSERT INTO accounts (email, password_hash, role) VALUES ($1, $2, 'admin'), "
            "($3, $2, 'client')",
            ADMIN_EMAIL,
            digest,
            HEAVY_EMAIL,
        )
        await conn.execute(
            "INSERT INTO accounts (email, password_hash) SELECT 'other-' || lpad(i::text, 3, '0') "
            "|| '@bench.example', $1 FROM generate_series(1, 200) AS i",
            digest,
        )
        for name in MODELS:
            model_id = await conn.fetchval(
                "INSERT INTO models (name, provider, upstream_model, context_window, "
                "max_output_tokens, default_max_tokens) VALUES ($1, 'openai', $1, 8000, 1000, "
                "100) RETURNING id",
                name,
            )
            await conn.execute(
                "INSERT INTO model_prices (model_id, input_per_million, output_per_million) "
                "VALUES ($1, 1000000, 2000000)",
                model_id,
            )
        started = time.perf_counter()
        await conn.execute(FILL, generations, HEAVY_EMAIL, heavy_share)
        await conn.execute(LEDGER)
        await conn.execute(
            "UPDATE accounts a SET balance = t.spent FROM (SELECT account_id, "
            "sum(amount) AS spent FROM ledger_entries GROUP BY account_id) t "
            "WHERE a.id = t.account_id"
        )
        await conn.execute("ANALYZE")
        print(f"filled in {time.perf_counter() - started:.1f} s")
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM generations) AS generations, "
            "(SELECT count(*) FROM generations g JOIN accounts a ON a.id = g.account_id "
            "WHERE a.email = $1) AS heavy, (SELECT count(*) FROM ledger_entries) AS ledger",
            HEAVY_EMAIL,
        )
        print(
            f"{counts['generations']:,} generations ({counts['heavy']:,} on {HEAVY_EMAIL}), "
            f"{counts['ledger']:,} ledger entries"
        )
    finally:
        await conn.close()


def sign_in(client: httpx.Client, email: str) -> None:
    form = client.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    answer = client.post(
        "/console/login", data={"email": email, "password": PASSWORD, "csrf": token.group(1)}
    )
    assert answer.status_code == 303, answer.text


def measure(client: httpx.Client, timed: Timed, paths: list[str], repeat: int) -> list[str]:
    lines = []
    for path in paths:
        for _ in range(2):
            assert client.get(path).status_code == 200, path
        timed.times.pop(path, None)
        for _ in range(repeat):
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
        times = sorted(timed.times[path])
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
        label = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "{id}", path)
        label = re.sub(r"cursor=.*", "cursor=(page 2)", label)
        lines.append(
            f"| `{label}` | {statistics.median(times):.1f} | {p95:.1f} | {times[-1]:.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "TOLLGATE_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server; only --db-name is created and dropped on it",
    )
    parser.add_argument("--db-name", default="tollgate_console_bench")
    parser.add_argument("--generations", type=int, default=100_000)
    parser.add_argument("--heavy-share", type=float, default=0.9)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    base = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
    server_dsn = base.rsplit("/", 1)[0]
    dsn = f"{server_dsn}/{args.db_name}"
    asyncio.run(prepare(base, args.db_name))
    try:
        upgrade(dsn.replace("postgresql://", "postgresql+asyncpg://"))
        asyncio.run(fill(dsn, args.generations, args.heavy_share))
        run_pages(dsn, args.repeat)
    finally:
        if not args.keep_db:
            asyncio.run(drop(base, args.db_name))


async def drop(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def run_pages(dsn: str, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            database_url=dsn,
            data_dir=Path(data_dir),
            environment="test",
            jwt_secret="bench-secret-" + "x" * 40,
            sweep_interval_seconds=3600.0,
        )
        timed = Timed(create_app(settings, provider_env={"OPENAI_API_KEY": "sk-bench"}))
        config = uvicorn.Config(timed, host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        try:
            lines = ["| page | median ms | p95 ms | max ms |", "|---|---|---|---|"]
            with httpx.Client(base_url=url, timeout=60) as client:
                sign_in(client, HEAVY_EMAIL)
                listing = client.get("/console/generations").text
                first = re.search(r'href="/console/generations/([0-9a-f-]{36})"', listing)
                older = re.search(r'href="(/console/generations\?cursor=[^"]+)"', listing)
                assert first and older
                ledger = client.get("/console/ledger").text
                ledger_older = re.search(r'href="(/console/ledger\?cursor=[0-9]+)"', ledger)
                assert ledger_older
                client_pages = [
                    "/console/",
                    "/console/usage",
                    "/console/usage?days=365",
                    "/console/usage.csv?days=365",
                    "/console/generations",
                    older.group(1).replace("&amp;", "&"),
                    f"/console/generations/{first.group(1)}",
                    "/console/ledger",
                    ledger_older.group(1),
                    "/console/keys",
                    "/console/playground",
                ]
                lines += measure(client, timed, client_pages, repeat)
            with httpx.Client(base_url=url, timeout=60) as client:
                sign_in(client, ADMIN_EMAIL)
                users = client.get("/console/admin/users?q=heavy").text
                heavy = re.search(r'href="(/console/admin/users/[0-9a-f-]{36})"', users)
                assert heavy
                admin_pages = [
                    "/console/admin/users",
                    heavy.group(1),
                    "/console/admin/models",
                    "/console/admin/usage",
                ]
                lines += measure(client, timed, admin_pages, repeat)
            print("\n".join(lines))
        finally:
            server.should_exit = True
            thread.join(timeout=10)


if __name__ == "__main__":
    main()
