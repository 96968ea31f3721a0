"""deployments, fallbacks and attempts (routing)

* `deployments`: the upstreams that serve a model (provider, base URL, upstream model, the
  key encrypted with AES-GCM, weight, priority, per-minute limits, timeouts, enabled). Changes
  are announced on the catalogue's channel, so every server reloads its routes.
* `models.fallbacks`: model names tried, in order, when all of a model's deployments fail.
* `generations.served_model`, `generations.deployment_id`: who served a generation (the
  deployment is NULL for the zero-configuration default upstream of a provider).
* `generation_attempts`: each upstream call of a generation, with its outcome and latency.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE deployments (
            id bigserial CONSTRAINT pk_deployments PRIMARY KEY,
            model_name text NOT NULL
                CONSTRAINT fk_deployments_model REFERENCES models (name)
                ON UPDATE CASCADE ON DELETE CASCADE,
            provider text NOT NULL,
            base_url text,
            upstream_model text,
            api_key_encrypted bytea,
            api_key_last4 text,
            weight integer NOT NULL DEFAULT 1 CONSTRAINT ck_deployments_weight
                CHECK (weight BETWEEN 0 AND 1000000),
            priority integer NOT NULL DEFAULT 0,
            requests_per_minute integer CHECK (requests_per_minute > 0),
            tokens_per_minute integer CHECK (tokens_per_minute > 0),
            first_token_timeout double precision CHECK (first_token_timeout > 0),
            enabled boolean NOT NULL DEFAULT true,
            disabled_reason text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ix_deployments_model ON deployments (model_name)")
    op.execute(
        "CREATE TRIGGER deployments_notify AFTER INSERT OR UPDATE OR DELETE ON deployments "
        "FOR EACH STATEMENT EXECUTE FUNCTION notify_catalogue_changed()"
    )
    op.execute("ALTER TABLE models ADD COLUMN fallbacks text[] NOT NULL DEFAULT '{}'")
    op.execute("ALTER TABLE generations ADD COLUMN served_model text")
    op.execute("ALTER TABLE generations ADD COLUMN deployment_id bigint")
    op.execute(
        """
        CREATE TABLE generation_attempts (
            generation_id uuid NOT NULL
                CONSTRAINT fk_generation_attempts_generation REFERENCES generations (id)
                ON DELETE CASCADE,
            attempt smallint NOT NULL,
            model_name text NOT NULL,
            deployment_id bigint,
            outcome text NOT NULL,
            error_code text,
            upstream_status integer,
            latency_ms integer NOT NULL,
            CONSTRAINT pk_generation_attempts PRIMARY KEY (generation_id, attempt)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE generation_attempts")
    op.execute("ALTER TABLE generations DROP COLUMN deployment_id")
    op.execute("ALTER TABLE generations DROP COLUMN served_model")
    op.execute("ALTER TABLE models DROP COLUMN fallbacks")
    op.execute("DROP TABLE deployments")
