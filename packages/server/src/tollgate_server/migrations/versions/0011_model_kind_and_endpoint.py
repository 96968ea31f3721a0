"""model kind and generation endpoint

A model is a chat model or an embedding model (issue 15): one catalogue, and each route serves
only its own kind. A generation names the endpoint that made it (``chat.completions``,
``embeddings``, ``messages``), so `/v1/generations` tells them apart.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "models", sa.Column("kind", sa.Text(), nullable=False, server_default=sa.text("'chat'"))
    )
    op.create_check_constraint(op.f("ck_models_kind"), "models", "kind IN ('chat', 'embedding')")
    op.add_column(
        "generations",
        sa.Column(
            "endpoint",
            sa.Text(),
            nullable=False,
            server_default=sa.text("'chat.completions'"),
        ),
    )


def downgrade() -> None:
    op.drop_column("generations", "endpoint")
    op.drop_constraint(op.f("ck_models_kind"), "models", type_="check")
    op.drop_column("models", "kind")
