"""the settlement as a function: the key's spend is touched only when there is a key (issue 23)

The settlement was one statement of four data-modifying parts (the generation, the account, the
key's spend, the ledger entry). PostgreSQL opens every part's table and indexes each time the
plan runs, and the key's part ran for every generation, keyed or not. `tollgate_settle` takes
the same steps in the same order, in one statement and one transaction still: the generation's
UPDATE guarded by ``settled_at IS NULL`` (its row lock serialises two settlements of one
generation; the second finds nothing and returns NULL), then the account, then the key's spend
in the period the generation was admitted in, then the ledger entry, whose unique index on the
generation stays the database's last word against a second charge.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SETTLE = """
CREATE FUNCTION tollgate_settle(
    p_generation uuid, p_status text, p_input integer, p_output integer, p_cached integer,
    p_reasoning integer, p_estimated boolean, p_cost bigint, p_error_code text,
    p_first_token_ms integer, p_duration_ms integer, p_usage_replaced text,
    p_unbilled_input bigint, p_unbilled_output bigint, p_error_detail text,
    p_served_model text, p_deployment bigint, p_price bigint, p_input_price bigint,
    p_output_price bigint
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    gen record;
    new_balance bigint;
    new_held bigint;
BEGIN
    UPDATE generations
    SET status = p_status, input_tokens = p_input, output_tokens = p_output,
        cached_input_tokens = p_cached, reasoning_tokens = p_reasoning,
        usage_estimated = p_estimated, cost = p_cost, error_code = p_error_code,
        first_token_ms = p_first_token_ms, duration_ms = p_duration_ms,
        usage_replaced = p_usage_replaced, unbilled_input_tokens = p_unbilled_input,
        unbilled_output_tokens = p_unbilled_output, error_detail = p_error_detail,
        served_model = p_served_model, deployment_id = p_deployment,
        price_id = coalesce(p_price, price_id), input_price = coalesce(p_input_price, input_price),
        output_price = coalesce(p_output_price, output_price), settled_at = now()
    WHERE id = p_generation AND settled_at IS NULL
    RETURNING account_id, hold, api_key_id, key_period_start INTO gen;
    IF NOT FOUND THEN
        RETURN NULL;  -- settled before (or unknown): nothing moves
    END IF;
    UPDATE accounts a
    SET balance = a.balance - p_cost, held = a.held - gen.hold, running = a.running - 1
    WHERE a.id = gen.account_id
    RETURNING a.balance, a.held INTO new_balance, new_held;
    IF NOT FOUND THEN
        RETURN NULL;  -- as the statement before: no account, no entry
    END IF;
    IF gen.api_key_id IS NOT NULL THEN
        -- The key's spend, in the period the generation was admitted in (not the current
        -- one): a generation that straddles a boundary counts once.
        UPDATE key_spend s SET held = s.held - gen.hold, charged = s.charged + p_cost
        WHERE s.api_key_id = gen.api_key_id AND s.period_start = gen.key_period_start;
    END IF;
    INSERT INTO ledger_entries (
        account_id, kind, amount, held_delta, balance_after, held_after, generation_id
    ) VALUES (
        gen.account_id, CASE WHEN p_cost > 0 THEN 'charge' ELSE 'release' END, -p_cost,
        -gen.hold, new_balance, new_held, p_generation
    );
    RETURN new_balance;
END
$$
"""


def upgrade() -> None:
    op.execute(SETTLE)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION tollgate_settle(uuid, text, integer, integer, integer, integer, boolean, "
        "bigint, text, integer, integer, text, bigint, bigint, text, text, bigint, bigint, "
        "bigint, bigint)"
    )
