"""usage checks and unbilled usage

A generation records which of the upstream's counts were out of range and replaced by the
gateway's own (`usage_replaced`), and what the upstream may bill the operator for beyond what
the client was charged (`unbilled_input_tokens`, `unbilled_output_tokens`): a client pays for
what it received, and the operator reconciles the rest.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("usage_replaced", sa.Text(), nullable=True))
    op.add_column(
        "generations",
        sa.Column("unbilled_input_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.add_column(
        "generations",
        sa.Column("unbilled_output_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("generations", "unbilled_output_tokens")
    op.drop_column("generations", "unbilled_input_tokens")
    op.drop_column("generations", "usage_replaced")
