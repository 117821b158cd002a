"""event archive partitioned by day

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The unique key must hold the partition key; `day` is filled by the api from the client's
    # own time, which a retry does not change, so a retried event conflicts with its first copy.
    op.execute(
        """
        CREATE TABLE events (
            project_id uuid NOT NULL,
            day date NOT NULL,
            message_id text NOT NULL,
            type text NOT NULL,
            event text NOT NULL,
            distinct_id text NOT NULL,
            user_id text,
            anonymous_id text,
            "timestamp" timestamptz NOT NULL,
            original_timestamp timestamptz,
            sent_at timestamptz,
            received_at timestamptz NOT NULL,
            name text,
            category text,
            group_id text,
            previous_id text,
            properties jsonb,
            traits jsonb,
            context jsonb,
            integrations jsonb,
            version smallint NOT NULL,
            CONSTRAINT pk_events PRIMARY KEY (project_id, message_id, day)
        ) PARTITION BY RANGE (day)
        """
    )
    # Days outside the pre-created range (clients with wrong clocks) still have a home.
    op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    op.execute('CREATE INDEX ix_events_project_time ON events (project_id, "timestamp")')


def downgrade() -> None:
    op.execute("DROP TABLE events")
