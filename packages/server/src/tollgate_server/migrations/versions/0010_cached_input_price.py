"""cached input price

A model's price may name what an input token read from the vendor's prompt cache costs
(issue 14). NULL, the default, prices cached tokens as input tokens, as before.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "model_prices", sa.Column("cached_input_per_million", sa.BigInteger(), nullable=True)
    )
    op.create_check_constraint(
        "cached_not_negative", "model_prices", "cached_input_per_million >= 0"
    )


def downgrade() -> None:
    op.drop_constraint("cached_not_negative", "model_prices", type_="check")
    op.drop_column("model_prices", "cached_input_per_million")
