"""spend controls: key limits and periodic allowances

Per API key: a spend limit (lifetime or per calendar period in UTC), requests and tokens per
minute. Every guard runs inside the one admission statement:

* `api_keys` gains `spend_limit` (micro-credits), `spend_period` (day, week, month; NULL for the
  key's lifetime), `rpm` and `tpm`;
* `key_spend` holds one counter row per key and period start: `held` (holds of generations
  admitted in that period and still running) plus `charged` (their charges) is the key's spend.
  Admission adds the hold, settlement takes it off and adds the charge, in the same statements
  that change the account; a generation remembers its period (`generations.key_period_start`),
  so one that straddles a boundary counts once, in the period it was admitted in;
* `key_windows` counts a key's admitted requests and tokens per minute (one row per key and
  minute, shared by every server process);
* `tollgate_period_start(period, at)` is the period arithmetic, in SQL: a period resets by
  arithmetic on its start, with no job to miss.

Per account, a periodic allowance (`allowances`: a grant of `amount` every period, or a top-up
to a floor of `amount`), issued by the server processes themselves: `allowance_grants` has one
row per account and period start, inserted with ON CONFLICT DO NOTHING in the transaction that
writes the ledger entry, so several processes, or a restart, never grant a period twice.

Alerts go out as webhooks through an outbox: `webhook_events` rows are written by the statement
that causes them (the admission statement, for a key's budget and an account's low balance), so
none is lost and none is sent for a change that rolled back; `webhook_endpoint` is the admin's
URL and signing secret; `balance_alerts` each account's threshold; `key_spend.alerted` the
highest budget alert (80, 100) already raised in that period.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERIOD_START = """
CREATE FUNCTION tollgate_period_start(period text, at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN period IN ('day', 'week', 'month')
            THEN date_trunc(period, at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        ELSE '-infinity'::timestamptz
    END
$$
"""

CREDITS = """
CREATE FUNCTION tollgate_credits(micro bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT trim_scale(micro::numeric / 1000000)::text
$$
"""
"""Micro-credits as the API writes credits (a decimal string), for webhook payloads."""


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("spend_limit", sa.BigInteger(), nullable=True))
    op.add_column("api_keys", sa.Column("spend_period", sa.String(length=8), nullable=True))
    op.add_column("api_keys", sa.Column("rpm", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("tpm", sa.Integer(), nullable=True))
    op.create_check_constraint("ck_api_keys_spend_limit_positive", "api_keys", "spend_limit > 0")
    op.create_check_constraint(
        "ck_api_keys_spend_period_known", "api_keys", "spend_period IN ('day', 'week', 'month')"
    )
    op.create_check_constraint("ck_api_keys_rpm_positive", "api_keys", "rpm > 0")
    op.create_check_constraint("ck_api_keys_tpm_positive", "api_keys", "tpm > 0")
    op.create_table(
        "key_spend",
        sa.Column("api_key_id", sa.UUID(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("held", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("charged", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_key_spend_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.Column("alerted", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("alert_now", sa.SmallInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("api_key_id", "period_start", name=op.f("pk_key_spend")),
        sa.CheckConstraint("held >= 0 AND charged >= 0", name=op.f("ck_key_spend_not_negative")),
    )
    op.create_table(
        "key_windows",
        sa.Column("api_key_id", sa.UUID(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.Integer(), server_default="0", nullable=False),
        sa.Column("tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_key_windows_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("api_key_id", "window_start", name=op.f("pk_key_windows")),
    )
    op.add_column(
        "generations", sa.Column("key_period_start", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(PERIOD_START)
    op.execute(CREDITS)
    op.create_table(
        "allowances",
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column(
            "starts_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_allowances_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_allowances")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_allowances_amount_positive")),
        sa.CheckConstraint("period IN ('day', 'week', 'month')", name=op.f("ck_allowances_period")),
        sa.CheckConstraint("mode IN ('grant', 'floor')", name=op.f("ck_allowances_mode")),
    )
    op.create_table(
        "allowance_grants",
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("ledger_entry_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_allowance_grants_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "period_start", name=op.f("pk_allowance_grants")),
    )
    op.create_table(
        "webhook_endpoint",
        sa.Column("id", sa.SmallInteger(), server_default="1", nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoint")),
        sa.CheckConstraint("id = 1", name=op.f("ck_webhook_endpoint_single")),
    )
    op.create_table(
        "balance_alerts",
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=False),
        sa.Column("alerted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_balance_alerts_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_balance_alerts")),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=True),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gave_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
    )
    op.create_index(
        "ix_webhook_events_due",
        "webhook_events",
        ["next_attempt_at"],
        postgresql_where=sa.text("delivered_at IS NULL AND gave_up_at IS NULL"),
    )
    op.create_index("ix_webhook_events_created", "webhook_events", ["created_at"])


def downgrade() -> None:
    op.drop_table("webhook_events")
    op.drop_table("balance_alerts")
    op.drop_table("webhook_endpoint")
    op.drop_table("allowance_grants")
    op.drop_table("allowances")
    op.execute("DROP FUNCTION tollgate_credits(bigint)")
    op.execute("DROP FUNCTION tollgate_period_start(text, timestamptz)")
    op.drop_column("generations", "key_period_start")
    op.drop_table("key_windows")
    op.drop_table("key_spend")
    op.drop_constraint("ck_api_keys_tpm_positive", "api_keys")
    op.drop_constraint("ck_api_keys_rpm_positive", "api_keys")
    op.drop_constraint("ck_api_keys_spend_period_known", "api_keys")
    op.drop_constraint("ck_api_keys_spend_limit_positive", "api_keys")
    for column in ("tpm", "rpm", "spend_period", "spend_limit"):
        op.drop_column("api_keys", column)
