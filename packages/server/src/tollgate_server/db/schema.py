"""Tables. Amounts are BIGINT micro-credits; see `tollgate_core.money`.

Read together with `tollgate_core.billing`: accounts carry `balance` and `held` so that one
guarded UPDATE admits a generation, and the ledger is append-only (a trigger refuses UPDATE and
DELETE on it).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("role IN ('client', 'admin')", name="role"),
        CheckConstraint("held >= 0", name="held_not_negative"),
        CheckConstraint("running >= 0", name="running_not_negative"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False, server_default="client")
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    balance: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    held: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    """Sum of the holds of generations still running."""
    running: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    """Generations still running, capped per account by the admission statement."""
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class RefreshToken(Base):
    """One issued refresh token. Single use: `used_at` is set when it is exchanged."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = _uuid_pk()
    family_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False, index=True)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()


class ApiKey(Base):
    """A key for programs. Only the SHA-256 of the secret is kept: keys are 256-bit random."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = _uuid_pk()
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    prefix: Mapped[str] = mapped_column(String(32), nullable=False)
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False, unique=True)
    models: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    """Model names the key may use; NULL means every model."""
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    spend_limit: Mapped[int | None] = mapped_column(BigInteger)
    """Micro-credits the key may spend (held + charged) per `spend_period`; NULL for no limit."""
    spend_period: Mapped[str | None] = mapped_column(String(8))
    """day, week or month (calendar periods in UTC); NULL for the key's lifetime."""
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    """Tokens per minute, counted at admission as the prompt's estimate plus max_tokens."""


class KeySpend(Base):
    """A key's spend in one period: admission adds the hold to `held`; settlement takes it off
    and adds the charge to `charged` (migration 0009). The lifetime's row starts at -infinity."""

    __tablename__ = "key_spend"
    __table_args__ = (CheckConstraint("held >= 0 AND charged >= 0", name="not_negative"),)

    api_key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    held: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    charged: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    alerted: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    """The highest budget alert (80, 100 per cent) raised in this period: each fires once."""
    alert_now: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    """The alert the last admission raised (0: none): how the admission statement, which
    cannot see the row's previous version, knows it crossed."""


class KeyWindow(Base):
    """A key's admitted requests and tokens in one minute (migration 0009)."""

    __tablename__ = "key_windows"

    api_key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")


class Model(Base):
    """A model in the catalogue, by the public name clients send."""

    __tablename__ = "models"
    __table_args__ = (
        CheckConstraint("context_window > 0", name="context_window_positive"),
        CheckConstraint("max_output_tokens > 0", name="max_output_positive"),
        CheckConstraint(
            "default_max_tokens > 0 AND default_max_tokens <= max_output_tokens",
            name="default_max_tokens_in_range",
        ),
        CheckConstraint("kind IN ('chat', 'embedding')", name="kind"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    provider: Mapped[str] = mapped_column(String(100), nullable=False)
    upstream_model: Mapped[str] = mapped_column(String(200), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    free: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    """A price of zero is accepted only for a model marked free."""
    context_window: Mapped[int] = mapped_column(Integer, nullable=False)
    max_output_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    default_max_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False, server_default="chat")
    """``chat`` (served by the chat routes) or ``embedding`` (by `/v1/embeddings`)."""
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class ModelPrice(Base):
    """A model's price from `effective_from` on. Rows are never changed: a new price is a row."""

    __tablename__ = "model_prices"
    __table_args__ = (
        CheckConstraint("input_per_million >= 0 AND output_per_million >= 0", name="not_negative"),
        CheckConstraint("cached_input_per_million >= 0", name="cached_not_negative"),
        Index("ix_model_prices_model_effective", "model_id", "effective_from"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), nullable=False
    )
    input_per_million: Mapped[int] = mapped_column(BigInteger, nullable=False)
    """Micro-credits per million input tokens."""
    output_per_million: Mapped[int] = mapped_column(BigInteger, nullable=False)
    cached_input_per_million: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Micro-credits per million input tokens read from the prompt cache; NULL: the input
    price."""
    effective_from: Mapped[datetime] = _now()
    created_at: Mapped[datetime] = _now()


class Generation(Base):
    """One generation, from admission to settlement. `settled_at` NULL means it still runs.

    Written twice: inserted by the admission, updated once by the settlement. Migration 0012
    keeps that update HOT (no index names a column it changes, and the table is created with
    fillfactor 85), and checks the ids below against their tables on a DELETE of the row named
    (`tollgate_history_guard`) rather than with foreign keys on every insert."""

    __tablename__ = "generations"
    __table_args__ = (
        Index("ix_generations_account_created", "account_id", "created_at"),
        # The console's windows of days (migration 0007, which also adds extended statistics
        # on the UTC day and model) and the sweeper's look at recent generations: BRIN, which
        # an insert into the newest range does not write to (migration 0012).
        Index(
            "ix_generations_created",
            "created_at",
            postgresql_using="brin",
            postgresql_with={"autosummarize": "on"},
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    key_period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """The `key_spend` row its hold went to: settlement moves it there, so a generation that
    straddles a period boundary counts once, in the period it was admitted in."""
    model_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    model_name: Mapped[str] = mapped_column(String(200), nullable=False)
    price_id: Mapped[int | None] = mapped_column(BigInteger)
    input_price: Mapped[int] = mapped_column(BigInteger, nullable=False)
    output_price: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hold: Mapped[int] = mapped_column(BigInteger, nullable=False)
    stream: Mapped[bool] = mapped_column(Boolean, nullable=False)
    max_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    prompt_tokens_estimate: Mapped[int] = mapped_column(Integer, nullable=False)
    endpoint: Mapped[str] = mapped_column(Text, nullable=False, server_default="chat.completions")
    """The API that made it: ``chat.completions``, ``embeddings`` or ``messages``."""
    status: Mapped[str] = mapped_column(String(32), nullable=False, server_default="running")
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_input_tokens: Mapped[int | None] = mapped_column(Integer)
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    usage_estimated: Mapped[bool | None] = mapped_column(Boolean)
    cost: Mapped[int | None] = mapped_column(BigInteger)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    """What the upstream said when it failed, redacted: shown to admins only (clients get a
    fixed message per `error_code`)."""
    first_token_ms: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    usage_replaced: Mapped[str | None] = mapped_column(Text)
    """Comma-separated names of the upstream's counts that were out of range and replaced by
    the gateway's (see `tollgate_core.metering`); NULL when every count was believed."""
    unbilled_input_tokens: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default="0"
    )
    """Tokens the upstream may bill the operator for that the client was not charged (a client
    pays for what it received): for reconciling with the vendor's invoice."""
    unbilled_output_tokens: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default="0"
    )
    created_at: Mapped[datetime] = _now()
    instance_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    """The server process running it (see `Instance`); not a foreign key, so a dead instance's
    row can be deleted while its generations remain."""
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    """After this a still-running generation can only belong to a dead process: the sweeper
    settles it."""
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Instance(Base):
    """A running server process, alive while its heartbeat is fresh.

    A generation names the instance that runs it; when that instance's heartbeat goes stale
    (the process died), any other instance's sweeper releases the generation's hold.
    """

    __tablename__ = "instances"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    started_at: Mapped[datetime] = _now()
    heartbeat_at: Mapped[datetime] = _now()


class Allowance(Base):
    """An account's recurring grant (migration 0009): `amount` every period (mode ``grant``),
    or a top-up of the available balance to `amount` (mode ``floor``)."""

    __tablename__ = "allowances"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("period IN ('day', 'week', 'month')", name="period"),
        CheckConstraint("mode IN ('grant', 'floor')", name="mode"),
    )

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    period: Mapped[str] = mapped_column(String(8), nullable=False)
    mode: Mapped[str] = mapped_column(String(8), nullable=False)
    starts_at: Mapped[datetime] = _now()
    """The first period granted is the one this falls in."""
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    updated_at: Mapped[datetime] = _now()


class AllowanceGrant(Base):
    """One period's grant of an allowance: its primary key is what makes a grant happen once,
    whichever process gets there first."""

    __tablename__ = "allowance_grants"

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    ledger_entry_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()


class WebhookEndpoint(Base):
    """Where alerts are sent (one row), and the secret that signs them (needed to sign, so
    stored; never shown back)."""

    __tablename__ = "webhook_endpoint"
    __table_args__ = (CheckConstraint("id = 1", name="single"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default="1")
    url: Mapped[str] = mapped_column(Text, nullable=False)
    secret: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = _now()


class BalanceAlert(Base):
    """An account's low-balance threshold; `alerted` until a top-up lifts it back above."""

    __tablename__ = "balance_alerts"

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    threshold: Mapped[int] = mapped_column(BigInteger, nullable=False)
    alerted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))


class WebhookEvent(Base):
    """The outbox: written by the statement that caused the event, delivered afterwards."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index(
            "ix_webhook_events_due",
            "next_attempt_at",
            postgresql_where=text("delivered_at IS NULL AND gave_up_at IS NULL"),
        ),
        Index("ix_webhook_events_created", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    account_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    data: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _now()
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    gave_up_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)


class LedgerEntry(Base):
    """One movement of credits. Append-only: corrections are new entries.

    `amount` is the change to the balance, so ``balance == sum(amount)`` for every account;
    `held_delta` the change to the held sum that the entry made. A hold is not a movement of
    credits: since migration 0012 admission writes no entry (the generation's `hold` is the
    record, and ``held`` is the sum of the holds of running generations), and a settlement's
    entry releases the hold (``held_delta`` = -hold) as it charges. `balance_after` and
    `held_after` are the account's figures just after the entry.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('grant', 'topup', 'adjustment', 'hold', 'charge', 'release', 'late_charge')",
            name="kind",
        ),
        Index(
            "uq_ledger_entries_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # One hold and one settlement (charge or release) per generation, enforced by the
        # database so a second settlement attempt fails instead of charging twice.
        Index(
            "uq_ledger_generation_hold",
            "generation_id",
            unique=True,
            postgresql_where=text("kind = 'hold'"),
        ),
        Index(
            "uq_ledger_generation_settlement",
            "generation_id",
            unique=True,
            postgresql_where=text("kind IN ('charge', 'release')"),
        ),
        # A settlement that arrives after its hold was released is charged once, late
        # (`tollgate_server.services.late_charges`).
        Index(
            "uq_ledger_generation_late_charge",
            "generation_id",
            unique=True,
            postgresql_where=text("kind = 'late_charge'"),
        ),
    )

    # The primary key is (account_id, id) since migration 0015: every read names the account,
    # and one index per entry is one B-tree insert fewer. `id` comes from its sequence.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    held_delta: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    balance_after: Mapped[int] = mapped_column(BigInteger, nullable=False)
    held_after: Mapped[int] = mapped_column(BigInteger, nullable=False)
    generation_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    """The admin who made a grant or adjustment; NULL for the gateway's own entries."""
    reason: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    """Fingerprint of the request behind an idempotent entry: the same key with another body
    is a conflict, not a replay."""
    created_at: Mapped[datetime] = _now()


class AuthFailure(Base):
    """A failed login, kept to lock out guessing per account and per client address."""

    __tablename__ = "auth_failures"
    __table_args__ = (Index("ix_auth_failures_scope_at", "scope", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(400), nullable=False)
    at: Mapped[datetime] = _now()


class RateWindow(Base):
    """Per-minute request counters shared by every server process."""

    __tablename__ = "rate_windows"

    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")


class AuditDetail(Base):
    """Free-form record of admin actions on accounts and models (who, what, when)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    detail: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _now()
