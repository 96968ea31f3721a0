"""notify key changes

Every server caches API keys in memory; revoking, re-scoping or deleting a key announces it on
the `tollgate_keys` channel so every cache empties before its next request. Writes of
`last_used_at` alone do not fire it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION notify_keys_changed() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('tollgate_keys', '');
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER api_keys_notify AFTER UPDATE OF revoked_at, models, expires_at, "
        "key_hash, account_id OR DELETE ON api_keys "
        "FOR EACH STATEMENT EXECUTE FUNCTION notify_keys_changed()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS api_keys_notify ON api_keys")
    op.execute("DROP FUNCTION IF EXISTS notify_keys_changed()")
