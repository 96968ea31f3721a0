"""Soak: a few thousand generations with random disconnects and upstream faults.

Not a test: a benchmark that shows the books stay right under a mix of failures. It starts the
fake upstream (which can fail on request), a Tollgate server (`tollgate serve`, one or more
workers) on a fresh database, funds a pool of accounts, and runs generations at a fixed
concurrency. Each request picks, at random, a provider, streaming or not, and one of: a normal
answer, an upstream error status (429/500/503), a reset or an error mid-stream, a stall, or a
client that hangs up after a few chunks. At the end it prints the requests served, the outcomes
by HTTP status and error code, and the ledger invariant check, which must be clean.

    uv run python bench/soak.py --requests 3000 --concurrency 32 --workers 2

By default it uses the PostgreSQL on 127.0.0.1:5432 (creating and dropping a database
`tollgate_soak`); pass --database-url for another server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_server.db.migrate import upgrade
from tollgate_server.services.invariants import find_violations, pending_generations

ADMIN = ("soak-admin@example.com", "soak-admin-password")
MODELS = {"openai": "soak-openai", "gemini": "soak-gemini", "anthropic": "soak-anthropic"}
SCENARIOS = [
    ("ok", 50, ""),
    ("ok-long", 10, "[[fake:chunks=20,delay_ms=5]]"),
    ("upstream-429", 5, "[[fake:status=429,retry_after=1]]"),
    ("upstream-500", 5, "[[fake:status=500]]"),
    ("upstream-503", 3, "[[fake:status=503]]"),
    ("reset-mid-stream", 5, "[[fake:chunks=10,reset_after=3]]"),
    ("error-mid-stream", 5, "[[fake:chunks=10,error_after=2]]"),
    ("no-usage", 5, "[[fake:no_usage]]"),
    ("client-hangs-up", 12, "[[fake:chunks=50,delay_ms=10]]"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _recreate(url: str) -> None:
    base = make_url(url)
    admin = base.set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{base.database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{base.database}"')
    finally:
        await conn.close()


async def _check(url: str) -> tuple[dict[str, list[tuple[object, ...]]], int]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            for _ in range(200):
                if await pending_generations(conn) == 0:
                    break
                await asyncio.sleep(0.05)
                await conn.rollback()
            return await find_violations(conn), await pending_generations(conn)
    finally:
        await engine.dispose()


async def _setup(client: httpx.AsyncClient, accounts: int) -> list[str]:
    token = (
        await client.post("/v1/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]})
    ).json()
    admin = {"Authorization": f"Bearer {token['access_token']}"}
    for provider, name in MODELS.items():
        await client.post(
            "/v1/admin/models",
            headers=admin,
            json={
                "name": name,
                "provider": provider,
                "upstream_model": f"{provider}-soak",
                "context_window": 8000,
                "max_output_tokens": 200,
                "default_max_tokens": 60,
                "input_price": "10",
                "output_price": "30",
            },
        )
    keys = []
    for i in range(accounts):
        email = f"soak-{i}-{uuid.uuid4().hex[:6]}@example.com"
        created = (
            await client.post(
                "/v1/auth/register", json={"email": email, "password": "password-123"}
            )
        ).json()
        # Some accounts are kept short of credits, so 402s are part of the mix.
        amount = "0.02" if i % 5 == 0 else "1000"
        await client.post(
            f"/v1/admin/users/{created['id']}/credits",
            headers={**admin, "Idempotency-Key": uuid.uuid4().hex},
            json={"amount": amount, "reason": "soak"},
        )
        login = (
            await client.post("/v1/auth/login", json={"email": email, "password": "password-123"})
        ).json()
        user = {"Authorization": f"Bearer {login['access_token']}"}
        key = (await client.post("/v1/keys", headers=user, json={"name": "soak"})).json()
        keys.append(key["key"])
    return keys


async def _one(
    client: httpx.AsyncClient, key: str, rng: random.Random, outcomes: Counter[str]
) -> None:
    name, _, directive = rng.choices(SCENARIOS, weights=[w for _, w, _ in SCENARIOS])[0]
    provider = rng.choice(list(MODELS))
    stream = rng.random() < 0.6 or name == "client-hangs-up"
    body = {
        "model": MODELS[provider],
        "stream": stream,
        "messages": [{"role": "user", "content": f"soak request {directive}"}],
    }
    headers = {"Authorization": f"Bearer {key}"}
    try:
        if name == "client-hangs-up":
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=headers
            ) as response:
                lines = 0
                async for _ in response.aiter_lines():
                    lines += 1
                    if lines > rng.randint(1, 10):
                        break
                outcomes[f"{response.status_code} hung-up"] += 1
            return
        response = await client.post("/v1/chat/completions", json=body, headers=headers)
        if response.status_code == 200 and stream:
            tail = response.text.rstrip().rsplit("\n", 1)[-1]
            code = "done" if tail == "data: [DONE]" else "stream-error-event"
            outcomes[f"200 {code}"] += 1
        elif response.status_code == 200:
            outcomes["200"] += 1
        else:
            outcomes[f"{response.status_code} {response.json()['error']['code']}"] += 1
    except httpx.HTTPError as exc:
        outcomes[f"client error {type(exc).__name__}"] += 1


async def _soak(
    url: str, requests: int, concurrency: int, keys: list[str], seed: int
) -> tuple[Counter[str], float]:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=httpx.Limits(max_connections=concurrency)
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                await _one(client, rng.choice(keys), rng, outcomes)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return outcomes, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/tollgate_soak"
    )
    args = parser.parse_args()

    asyncio.run(_recreate(args.database_url))
    upgrade(args.database_url)
    port = _free_port()
    with FakeUpstream.in_thread(default_chunks=8) as upstream:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        env.update(
            {
                "TOLLGATE_DATABASE_URL": args.database_url,
                "TOLLGATE_DATA_DIR": str(Path("/tmp") / f"tollgate-soak-{port}"),
                "TOLLGATE_JWT_SECRET": "soak-secret-" + "s" * 40,
                "TOLLGATE_ADMIN_EMAIL": ADMIN[0],
                "TOLLGATE_ADMIN_PASSWORD": ADMIN[1],
                "TOLLGATE_REQUESTS_PER_MINUTE": "0",
                "TOLLGATE_MAX_CONCURRENT_GENERATIONS": "64",
                "OPENAI_BASE_URL": upstream.openai_base_url,
                "OPENAI_API_KEY": "sk-soak",
                "GEMINI_BASE_URL": upstream.url,
                "GEMINI_API_KEY": "AIza-soak",
                "ANTHROPIC_BASE_URL": upstream.url,
                "ANTHROPIC_API_KEY": "sk-ant-soak",
            }
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from tollgate_cli.main import app; app()",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--log-level",
                "warning",
            ],
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)

            async def run() -> tuple[Counter[str], float]:
                async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                    keys = await _setup(client, args.accounts)
                return await _soak(url, args.requests, args.concurrency, keys, args.seed)

            outcomes, seconds = asyncio.run(run())
        finally:
            server.terminate()
            server.wait(timeout=60)
    violations, pending = asyncio.run(_check(args.database_url))
    served = sum(outcomes.values())
    print(
        f"\nsoak: {served} requests in {seconds:.1f} s ({served / seconds:.0f}/s), "
        f"concurrency {args.concurrency}, workers {args.workers}, seed {args.seed}"
    )
    print(f"{'outcome':<40} {'count':>7}")
    for outcome, count in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        print(f"{outcome:<40} {count:>7}")
    print(
        f"\nledger invariants: {'clean' if not violations else 'BROKEN'}; "
        f"holds pending: {pending}; server exit status {server.returncode}"
    )
    for rule, rows in violations.items():
        print(f"  {rule}: {rows}")
    return 0 if not violations and pending == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
