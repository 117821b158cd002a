"""event search: Kafka position of each archived event, search indexes

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Where the processor read each event: "where is my event?" answers with it for good, after
    # the dedupe marks (24 h) are gone. Rows archived before this migration have none.
    op.execute(
        "ALTER TABLE events ADD COLUMN kafka_partition integer, ADD COLUMN kafka_offset bigint"
    )
    # Newest first with keyset pagination on (timestamp, message_id), per project and per name.
    op.execute("DROP INDEX ix_events_project_time")
    op.execute(
        "CREATE INDEX ix_events_project_time "
        'ON events (project_id, "timestamp" DESC, message_id DESC)'
    )
    op.execute(
        'CREATE INDEX ix_events_project_event_time ON events (project_id, event, "timestamp" DESC)'
    )
    op.execute(
        "CREATE INDEX ix_events_project_user_time "
        'ON events (project_id, distinct_id, "timestamp" DESC)'
    )
    # Property equality as JSON containment: jsonb_path_ops is the smaller, faster GIN for @>.
    op.execute("CREATE INDEX ix_events_properties ON events USING gin (properties jsonb_path_ops)")


def downgrade() -> None:
    for index in ("ix_events_properties", "ix_events_project_user_time",
                  "ix_events_project_event_time", "ix_events_project_time"):  # fmt: skip
        op.execute(f"DROP INDEX {index}")
    op.execute('CREATE INDEX ix_events_project_time ON events (project_id, "timestamp")')
    op.execute("ALTER TABLE events DROP COLUMN kafka_partition, DROP COLUMN kafka_offset")
