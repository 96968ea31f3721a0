"""console aggregates

The web console draws credits per day and model over a window of days, for one account or for
all of them. Without help PostgreSQL scans every generation for the admin's views and, misjudging
how many (day, model) groups there are, sorts tens of thousands of rows instead of hashing them:

* an index on `created_at`, so a window of days reads only its rows however long the history;
* extended statistics on (UTC day, model), so the planner knows the groups are few and hashes;
* a partial index on `api_key_id` (only rows with a key), for each key's spend and the
  foreign key.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_generations_created", "generations", ["created_at"])
    op.create_index(
        "ix_generations_api_key",
        "generations",
        ["api_key_id"],
        postgresql_where="api_key_id IS NOT NULL",
    )
    op.execute(
        "CREATE STATISTICS st_generations_day_model "
        "ON ((created_at AT TIME ZONE 'UTC')::date), model_name FROM generations"
    )
    op.execute("ANALYZE generations")


def downgrade() -> None:
    op.execute("DROP STATISTICS IF EXISTS st_generations_day_model")
    op.drop_index("ix_generations_api_key", table_name="generations")
    op.drop_index("ix_generations_created", table_name="generations")
