"""background jobs: Procrastinate's queue, exports, alert rules and their delivery log

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op
from procrastinate.schema import SchemaManager

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Procrastinate's own tables and functions at the pinned version (pyproject: <3.11): a later
# version's `sql/migrations/*.sql` go into a migration of ours, so Alembic stays the one history.
DROP_PROCRASTINATE = """
DO $$
DECLARE routine record;
BEGIN
    FOR routine IN SELECT oid::regprocedure AS signature FROM pg_proc
                   WHERE proname LIKE 'procrastinate%' LOOP
        EXECUTE 'DROP FUNCTION IF EXISTS ' || routine.signature || ' CASCADE';
    END LOOP;
END $$;
DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs,
    procrastinate_workers CASCADE;
DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_event_type,
    procrastinate_job_status CASCADE;
"""


def upgrade() -> None:
    op.execute(SchemaManager.get_schema())
    op.execute(
        """
        CREATE TABLE exports (
            id uuid PRIMARY KEY,
            project_id uuid NOT NULL
                CONSTRAINT fk_exports_project_id_projects
                REFERENCES projects (id) ON DELETE CASCADE,
            created_by uuid
                CONSTRAINT fk_exports_created_by_users REFERENCES users (id) ON DELETE SET NULL,
            format varchar(16) NOT NULL
                CONSTRAINT ck_exports_format CHECK (format IN ('csv', 'ndjson', 'parquet')),
            inputs jsonb NOT NULL,
            inputs_digest varchar(64) NOT NULL,
            job_id bigint,
            state varchar(16) NOT NULL DEFAULT 'queued' CONSTRAINT ck_exports_state
                CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'expired')),
            attempts integer NOT NULL DEFAULT 0,
            rows_written bigint NOT NULL DEFAULT 0,
            rows_estimated bigint,
            size_bytes bigint,
            error text,
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX ix_exports_project_created ON exports (project_id, created_at DESC)")
    # A double submission finds the live export of the same inputs; a failed or expired one
    # does not stand in the way of asking again.
    op.execute(
        "CREATE UNIQUE INDEX uq_exports_project_inputs ON exports (project_id, inputs_digest) "
        "WHERE state IN ('queued', 'running', 'succeeded')"
    )
    op.execute(
        """
        CREATE TABLE alert_rules (
            id uuid PRIMARY KEY,
            project_id uuid NOT NULL
                CONSTRAINT fk_alert_rules_project_id_projects
                REFERENCES projects (id) ON DELETE CASCADE,
            name varchar(200) NOT NULL,
            event varchar(200),
            comparison varchar(16) NOT NULL CONSTRAINT ck_alert_rules_comparison
                CHECK (comparison IN ('above', 'at_least', 'below', 'at_most')),
            threshold bigint NOT NULL,
            window_minutes integer NOT NULL,
            webhook_url text NOT NULL,
            webhook_secret varchar(100) NOT NULL,
            enabled boolean NOT NULL DEFAULT true,
            disabled_reason text,
            failures_in_a_row integer NOT NULL DEFAULT 0,
            state varchar(16) NOT NULL DEFAULT 'ok'
                CONSTRAINT ck_alert_rules_state CHECK (state IN ('ok', 'firing')),
            last_value bigint,
            last_evaluated_at timestamptz,
            last_fired_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ix_alert_rules_project_id ON alert_rules (project_id)")
    op.execute(
        """
        CREATE TABLE webhook_deliveries (
            id bigserial PRIMARY KEY,
            rule_id uuid NOT NULL
                CONSTRAINT fk_webhook_deliveries_rule_id_alert_rules
                REFERENCES alert_rules (id) ON DELETE CASCADE,
            message_id varchar(64) NOT NULL,
            event_type varchar(64) NOT NULL,
            attempt integer NOT NULL,
            status integer,
            latency_ms double precision NOT NULL,
            error text,
            response_excerpt text NOT NULL DEFAULT '',
            outcome varchar(16) NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ix_webhook_deliveries_rule ON webhook_deliveries (rule_id, id DESC)")
    # Procrastinate keeps a failed job but not why it failed: the worker writes that here.
    op.execute(
        """
        CREATE TABLE job_errors (
            id bigserial PRIMARY KEY,
            job_id bigint NOT NULL,
            attempt integer NOT NULL,
            error text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ix_job_errors_job ON job_errors (job_id, id)")


def downgrade() -> None:
    for table in ("job_errors", "webhook_deliveries", "alert_rules", "exports"):
        op.execute(f"DROP TABLE {table}")
    op.execute(DROP_PROCRASTINATE)
