"""fewer row locks per generation: the hold is a guarded UPDATE, the key's spend an UPDATE
first, and the ledger's primary key serves the account's pages (issue 23)

`pg_waldump` over 4,000 admissions and settlements after migration 0014: 1,550 B of WAL per
generation, of which 2.4 row-lock records (130 B) and five B-tree inserts (366 B).

* The admission locked its account row with ``SELECT ... FOR UPDATE`` and then updated it: the
  lock is a WAL record of its own. Now one guarded ``UPDATE`` takes the hold when the account's
  guards pass (its row lock serialises concurrent admissions just as well); only a refusal, or a
  missing row, reads the locked row to say which guard refused. A refusal that comes later (the
  per-minute limit, the key's limits) gives the hold back in the same transaction. The guards,
  their order and their answers are those of migration 0013.
* The key's spend was an upsert, whose ``DO UPDATE`` writes a row-lock record before the update.
  The period's row exists after its first request, so a plain ``UPDATE`` comes first; the upsert
  remains for the first request of a period and to find a spent budget.
* `ledger_entries` had a primary key on ``id`` and an index on ``(account_id, id DESC)``: two
  B-tree inserts per entry. Every read of the ledger names the account, so the primary key is
  now ``(account_id, id)`` (read backwards for the newest first) and the second index is gone.
  ``id`` still comes from its sequence, unique on its own.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADMIT = """CREATE OR REPLACE FUNCTION tollgate_admit(
    p_account uuid, p_hold bigint, p_strict boolean, p_generation uuid, p_key uuid,
    p_model bigint, p_model_name text, p_price bigint, p_input_price bigint,
    p_output_price bigint, p_stream boolean, p_max_tokens integer, p_prompt_tokens bigint,
    p_deadline_seconds double precision, p_max_running integer, p_rate_subject text,
    p_rpm integer, p_instance uuid, p_clock_offset double precision, p_endpoint text
) RETURNS TABLE (o_refusal text, o_balance bigint, o_held bigint, o_window_left integer)
LANGUAGE plpgsql AS $$
DECLARE
    cur record;
    taken boolean;
    k record;
    requests_now integer;
    window_tokens bigint := p_max_tokens::bigint + p_prompt_tokens;
    refusal text;
    period timestamptz;
    alert smallint := 0;
    spend bigint;
    new_balance bigint;
    new_held bigint;
    full_period timestamptz;
    full_spend bigint;
    threshold bigint;
BEGIN
    o_window_left := 60 - extract(second FROM now())::int;
    -- The hold, taken by one guarded UPDATE when the account's own guards pass (the common
    -- case): its row lock serialises concurrent admissions of the account, and no separate
    -- SELECT ... FOR UPDATE writes a lock record first. A guard refused by the key or the
    -- per-minute limit below gives the hold back in the same transaction.
    UPDATE accounts a SET held = a.held + p_hold, running = a.running + 1
    WHERE a.id = p_account AND NOT a.disabled AND a.running < p_max_running
      AND CASE WHEN p_strict THEN a.balance - a.held >= p_hold ELSE a.balance - a.held > 0 END
    RETURNING a.balance, a.held INTO new_balance, new_held;
    taken := FOUND;
    IF taken THEN
        o_balance := new_balance;
        o_held := new_held - p_hold;
    ELSE
        -- Refused, or the row is missing: the locked row says which guard (every guard reads
        -- this one version). If a settlement let the row pass meanwhile, take the hold now.
        SELECT a.balance, a.held, a.running, a.disabled INTO cur
        FROM accounts a WHERE a.id = p_account FOR UPDATE;
        IF NOT FOUND THEN
            o_refusal := 'account_disabled';  -- a missing account reads as disabled
            RETURN NEXT;
            RETURN;
        END IF;
        o_balance := cur.balance;
        o_held := cur.held;
        refusal := CASE
            WHEN cur.disabled THEN 'account_disabled'
            WHEN cur.running >= p_max_running THEN 'too_many_concurrent_requests'
            WHEN NOT CASE WHEN p_strict THEN cur.balance - cur.held >= p_hold
                          ELSE cur.balance - cur.held > 0 END THEN 'insufficient_balance'
        END;
        IF refusal IS NULL THEN
            UPDATE accounts a SET held = a.held + p_hold, running = a.running + 1
            WHERE a.id = p_account
            RETURNING a.balance, a.held INTO new_balance, new_held;
            taken := true;
        END IF;
    END IF;
    -- Requests per minute per account (across its keys): a fixed one-minute window shared by
    -- every server process, counting refused requests too; off when p_rpm = 0. It ranks after
    -- a disabled account and before every other guard.
    IF p_rpm > 0 THEN
        INSERT INTO rate_windows AS w (subject, window_start, count)
        VALUES (p_rate_subject, date_trunc('minute', now()), 1)
        ON CONFLICT (subject, window_start) DO UPDATE SET count = w.count + 1
        RETURNING w.count INTO requests_now;
        IF requests_now > p_rpm AND refusal IS DISTINCT FROM 'account_disabled' THEN
            refusal := 'rate_limited';
        END IF;
    END IF;
    IF refusal IS NULL AND p_key IS NOT NULL THEN
        -- The key's limits, read here rather than cached, so a change applies to the next
        -- request. p_clock_offset shifts the clock for the period only (tests; 0 otherwise).
        SELECT ak.id, ak.spend_limit, ak.rpm, ak.tpm,
               tollgate_period_start(ak.spend_period, now() + make_interval(secs => p_clock_offset))
                   AS period
        INTO k FROM api_keys ak WHERE ak.id = p_key;
        IF FOUND THEN
            -- The key's requests and tokens this minute: an upsert whose DO UPDATE happens only
            -- when the guard passes, on the newest version of its row.
            IF k.rpm IS NOT NULL OR k.tpm IS NOT NULL THEN
                IF k.tpm IS NOT NULL AND window_tokens > k.tpm THEN
                    refusal := 'key_rate_limited';
                ELSE
                    INSERT INTO key_windows AS w (api_key_id, window_start, requests, tokens)
                    VALUES (k.id, date_trunc('minute', now()), 1, window_tokens)
                    ON CONFLICT (api_key_id, window_start) DO UPDATE
                    SET requests = w.requests + 1, tokens = w.tokens + EXCLUDED.tokens
                    WHERE (k.rpm IS NULL OR w.requests < k.rpm)
                      AND (k.tpm IS NULL OR w.tokens + EXCLUDED.tokens <= k.tpm)
                    RETURNING w.requests INTO requests_now;
                    IF NOT FOUND THEN
                        refusal := 'key_rate_limited';
                    END IF;
                END IF;
            END IF;
            -- The key's spend in its period (held + charged): the hold is added only if it
            -- fits. `alert_now` is the budget alert (80 or 100 per cent) this admission raised,
            -- once a period.
            IF refusal IS NULL THEN
                IF k.spend_limit IS NOT NULL AND p_hold > k.spend_limit THEN
                    refusal := 'key_budget_exceeded';
                ELSE
                    -- The period's row exists after its first request: a plain UPDATE
                    -- (an upsert's DO UPDATE writes a row lock record first). The upsert
                    -- below makes the row, or finds the budget spent.
                    UPDATE key_spend s
                    SET held = s.held + p_hold,
                        alerted = greatest(s.alerted, CASE
                            WHEN s.held + s.charged + p_hold >= k.spend_limit THEN 100
                            WHEN (s.held + s.charged + p_hold) * 5 >= k.spend_limit * 4 THEN 80
                            ELSE 0 END),
                        alert_now = CASE
                            WHEN s.alerted < 100
                                 AND s.held + s.charged + p_hold >= k.spend_limit THEN 100
                            WHEN s.alerted < 80
                                 AND (s.held + s.charged + p_hold) * 5 >= k.spend_limit * 4
                                THEN 80
                            ELSE 0 END
                    WHERE s.api_key_id = k.id AND s.period_start = k.period
                      AND (k.spend_limit IS NULL OR s.held + s.charged + p_hold <= k.spend_limit)
                    RETURNING s.period_start, s.alert_now, s.held + s.charged
                    INTO period, alert, spend;
                    IF NOT FOUND THEN
                        INSERT INTO key_spend AS s (
                            api_key_id, period_start, held, alerted, alert_now
                        )
                        SELECT k.id, k.period, p_hold, lvl.level, lvl.level
                        FROM (SELECT CASE WHEN p_hold >= k.spend_limit THEN 100
                                          WHEN p_hold * 5 >= k.spend_limit * 4 THEN 80
                                          ELSE 0 END::smallint AS level) lvl
                        ON CONFLICT (api_key_id, period_start) DO UPDATE
                        SET held = s.held + EXCLUDED.held,
                            alerted = greatest(s.alerted, CASE
                                WHEN s.held + s.charged + EXCLUDED.held >= k.spend_limit THEN 100
                                WHEN (s.held + s.charged + EXCLUDED.held) * 5
                                     >= k.spend_limit * 4 THEN 80
                                ELSE 0 END),
                            alert_now = CASE
                                WHEN s.alerted < 100
                                     AND s.held + s.charged + EXCLUDED.held >= k.spend_limit
                                    THEN 100
                                WHEN s.alerted < 80
                                     AND (s.held + s.charged + EXCLUDED.held) * 5
                                         >= k.spend_limit * 4 THEN 80
                                ELSE 0 END
                        WHERE k.spend_limit IS NULL
                           OR s.held + s.charged + EXCLUDED.held <= k.spend_limit
                        RETURNING s.period_start, s.alert_now, s.held + s.charged
                        INTO period, alert, spend;
                    END IF;
                    IF NOT FOUND THEN
                        refusal := 'key_budget_exceeded';
                    END IF;
                END IF;
                IF refusal = 'key_budget_exceeded' THEN
                    -- Refused by the key's budget: the 100 per cent alert, unless this period
                    -- raised it.
                    UPDATE key_spend s SET alerted = 100
                    WHERE s.api_key_id = k.id AND s.period_start = k.period AND s.alerted < 100
                    RETURNING s.period_start, s.held + s.charged INTO full_period, full_spend;
                END IF;
            END IF;
        END IF;
    END IF;
    IF refusal IS NOT NULL AND taken THEN
        -- Refused after the hold was taken: give it back.
        UPDATE accounts a SET held = a.held - p_hold, running = a.running - 1
        WHERE a.id = p_account;
    END IF;
    IF refusal IS NULL THEN
        INSERT INTO generations (
            id, account_id, api_key_id, model_id, model_name, price_id, input_price,
            output_price, hold, stream, max_tokens, prompt_tokens_estimate, status, deadline_at,
            instance_id, key_period_start, endpoint
        ) VALUES (
            p_generation, p_account, p_key, p_model, p_model_name, p_price, p_input_price,
            p_output_price, p_hold, p_stream, p_max_tokens, p_prompt_tokens, 'running',
            now() + make_interval(secs => p_deadline_seconds), p_instance, period, p_endpoint
        );
        -- The available balance fell below the account's threshold (once, until a top-up).
        UPDATE balance_alerts b SET alerted = true
        WHERE b.account_id = p_account AND NOT b.alerted
          AND new_balance - new_held < b.threshold
        RETURNING b.threshold INTO threshold;
    END IF;
    -- The outbox: alerts commit (or roll back) with the admission that raised them.
    IF (alert > 0 OR full_period IS NOT NULL OR threshold IS NOT NULL)
       AND EXISTS (SELECT 1 FROM webhook_endpoint) THEN
        IF alert > 0 THEN
            INSERT INTO webhook_events (type, account_id, data)
            VALUES ('key.budget_' || alert, p_account, jsonb_build_object(
                'account_id', p_account, 'key_id', p_key, 'period_start', period,
                'spend', tollgate_credits(spend), 'spend_limit', tollgate_credits(k.spend_limit),
                'percent', alert));
        END IF;
        IF full_period IS NOT NULL THEN
            INSERT INTO webhook_events (type, account_id, data)
            VALUES ('key.budget_100', p_account, jsonb_build_object(
                'account_id', p_account, 'key_id', p_key, 'period_start', full_period,
                'spend', tollgate_credits(full_spend),
                'spend_limit', tollgate_credits(k.spend_limit), 'percent', 100));
        END IF;
        IF threshold IS NOT NULL THEN
            INSERT INTO webhook_events (type, account_id, data)
            VALUES ('balance.low', p_account, jsonb_build_object(
                'account_id', p_account, 'available', tollgate_credits(new_balance - new_held),
                'threshold', tollgate_credits(threshold)));
        END IF;
    END IF;
    o_refusal := refusal;
    RETURN NEXT;
END
$$
"""


def upgrade() -> None:
    op.execute(ADMIT)
    op.execute("ALTER TABLE ledger_entries DROP CONSTRAINT pk_ledger_entries")
    op.execute(
        "ALTER TABLE ledger_entries ADD CONSTRAINT pk_ledger_entries PRIMARY KEY (account_id, id)"
    )
    op.execute("DROP INDEX ix_ledger_entries_account_id_desc")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX ix_ledger_entries_account_id_desc ON ledger_entries (account_id, id DESC)"
    )
    op.execute("ALTER TABLE ledger_entries DROP CONSTRAINT pk_ledger_entries")
    op.execute("ALTER TABLE ledger_entries ADD CONSTRAINT pk_ledger_entries PRIMARY KEY (id)")
    # Migration 0013's function, read from its own file rather than written twice.
    path = Path(__file__).with_name("0013_admission_function.py")
    spec = importlib.util.spec_from_file_location("admission_0013", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    op.execute(module.ADMIT.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
