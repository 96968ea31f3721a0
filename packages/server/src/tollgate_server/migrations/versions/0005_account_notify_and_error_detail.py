"""account notify and error detail

Every server remembers which accounts are disabled (an access token is verified without the
database); disabling, enabling or deleting an account announces it on the `tollgate_accounts`
channel so every server forgets what it remembered before its next request. Settlements, which
update balances, do not fire it.

`generations.error_detail` keeps what the upstream said when a generation failed (redacted): the
client is told only a fixed message per error class, an admin reads the rest.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION notify_accounts_changed() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('tollgate_accounts', '');
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER accounts_notify AFTER UPDATE OF disabled OR DELETE ON accounts "
        "FOR EACH STATEMENT EXECUTE FUNCTION notify_accounts_changed()"
    )
    op.add_column("generations", sa.Column("error_detail", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("generations", "error_detail")
    op.execute("DROP TRIGGER IF EXISTS accounts_notify ON accounts")
    op.execute("DROP FUNCTION IF EXISTS notify_accounts_changed()")
