"""late charges

A settlement that arrives after the sweeper released its generation's hold (a process that came
back late, or a spool file replayed by the next start) is charged as a ledger entry of kind
``late_charge``; a unique index allows one per generation, so a replayed settlement charges once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "'grant', 'topup', 'adjustment', 'hold', 'charge', 'release'"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_ledger_entries_kind"), "ledger_entries", type_="check")
    op.create_check_constraint(
        op.f("ck_ledger_entries_kind"), "ledger_entries", f"kind IN ({KINDS}, 'late_charge')"
    )
    op.create_index(
        "uq_ledger_generation_late_charge",
        "ledger_entries",
        ["generation_id"],
        unique=True,
        postgresql_where="kind = 'late_charge'",
    )


def downgrade() -> None:
    op.drop_index("uq_ledger_generation_late_charge", table_name="ledger_entries")
    op.drop_constraint(op.f("ck_ledger_entries_kind"), "ledger_entries", type_="check")
    op.create_check_constraint(
        op.f("ck_ledger_entries_kind"), "ledger_entries", f"kind IN ({KINDS})"
    )
