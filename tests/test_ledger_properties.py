"""Random sequences of top-ups, deductions, admissions and settlements, run against the real
database and against a plain model of the balances built from `tollgate_core.billing`: the two
must agree after every step, and the ledger's invariants must hold."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine
from tollgate_core import Price, Usage, admits, format_credits, settlement_charge
from tollgate_server.db.engine import make_sessionmaker
from tollgate_server.db.raw import create_hot_pool, raw_connection
from tollgate_server.errors import Refused
from tollgate_server.services import ledger
from tollgate_server.services.catalogue import read_catalogue

pytestmark = pytest.mark.postgres

MAX_RUNNING = 3

operations = st.lists(
    st.one_of(
        st.tuples(st.just("topup"), st.integers(1, 5_000_000)),
        st.tuples(st.just("deduct"), st.integers(1, 5_000_000)),
        st.tuples(st.just("admit"), st.integers(1, 3_000_000), st.booleans()),
        st.tuples(st.just("settle"), st.integers(0, 10), st.integers(0, 3_000_000)),
    ),
    min_size=1,
    max_size=25,
)


@dataclass
class Model:
    balance: int = 0
    held: int = 0
    pending: dict[uuid.UUID, int] = field(default_factory=dict)


async def _run(url: str, steps: list[tuple[object, ...]]) -> None:
    engine = create_async_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    pool = await create_hot_pool(url, size=2)
    try:
        async with engine.connect() as conn:
            gpt4 = (await read_catalogue(conn))["gpt-4"]
        assert gpt4.price is not None
        account = uuid.uuid4()
        async with raw_connection(pool) as conn:
            await conn.execute(
                "INSERT INTO accounts (id, email, password_hash) VALUES ($1, $2, 'x')",
                account,
                f"prop-{account.hex}@example.com",
            )
        model = Model()
        for step in steps:
            kind = step[0]
            if kind in ("topup", "deduct"):
                amount = int(step[1])  # type: ignore[call-overload]
                signed = amount if kind == "topup" else -amount
                ok = kind == "topup" or model.balance - amount - model.held >= 0
                async with sessions() as session:
                    try:
                        await ledger.post_credits(
                            session=session,
                            account_id=account,
                            amount=format_credits(signed),
                            reason="property test",
                            actor_id=None,
                            idempotency_key=None,
                        )
                        assert ok, "a deduction beyond the available balance was accepted"
                        model.balance += signed
                    except Refused as exc:
                        assert not ok and exc.code == "insufficient_balance"
            elif kind == "admit":
                hold, strict = int(step[1]), bool(step[2])  # type: ignore[call-overload]
                expected = (
                    admits(balance=model.balance, held=model.held, hold=hold, strict=strict)
                    and len(model.pending) < MAX_RUNNING
                )
                generation = uuid.uuid4()
                admission = ledger.Admission(
                    generation_id=generation,
                    account_id=account,
                    api_key_id=None,
                    model_id=gpt4.id,
                    model_name=gpt4.name,
                    price_id=gpt4.price.id,
                    input_price=gpt4.price.input_per_million,
                    output_price=gpt4.price.output_per_million,
                    hold=hold,
                    stream=False,
                    max_tokens=10,
                    prompt_tokens=10,
                    deadline_seconds=600,
                )
                async with raw_connection(pool) as conn:
                    try:
                        await ledger.admit(conn, admission, strict=strict, max_running=MAX_RUNNING)
                        admitted = True
                    except Refused as exc:
                        assert exc.code in ("insufficient_balance", "too_many_concurrent_requests")
                        admitted = False
                assert admitted == expected
                if admitted:
                    model.held += hold
                    model.pending[generation] = hold
            elif kind == "settle" and model.pending:
                index, tokens = int(step[1]), int(step[2])  # type: ignore[call-overload]
                generation = list(model.pending)[index % len(model.pending)]
                hold = model.pending.pop(generation)
                usage = Usage(input_tokens=tokens // 3, output_tokens=tokens // 5)
                charge = settlement_charge(usage=usage, price=Price(1_000, 2_000), hold=hold).charge
                outcome = ledger.Outcome(status="completed", usage=usage, charge=charge)
                async with raw_connection(pool) as conn:
                    assert await ledger.settle(conn, generation, outcome)
                    # A second settlement of the same generation changes nothing.
                    assert not await ledger.settle(conn, generation, outcome)
                model.balance -= charge
                model.held -= hold
            async with raw_connection(pool) as conn:
                row = await conn.fetchrow(
                    "SELECT balance, held, running FROM accounts WHERE id = $1", account
                )
            assert (row["balance"], row["held"], row["running"]) == (
                model.balance,
                model.held,
                len(model.pending),
            )
        # Leave nothing held for the suite's invariant check.
        async with raw_connection(pool) as conn:
            for generation in model.pending:
                await ledger.settle(
                    conn, generation, ledger.Outcome(status="cancelled", usage=None, charge=0)
                )
    finally:
        await pool.close()
        await engine.dispose()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=operations)
def test_ledger_matches_the_model(
    database_url: str, server: object, steps: list[tuple[object, ...]]
) -> None:
    # `server` has seeded the default catalogue, whose gpt-4 the admissions name.
    asyncio.run(_run(database_url, steps))
