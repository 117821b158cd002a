"""write keys

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "write_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            ondelete="CASCADE",
            name="fk_write_keys_project_id_projects",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_write_keys"),
        sa.UniqueConstraint("key_hash", name="uq_write_keys_key_hash"),
    )
    op.create_index("ix_write_keys_project_id", "write_keys", ["project_id"])


def downgrade() -> None:
    op.drop_index("ix_write_keys_project_id", table_name="write_keys")
    op.drop_table("write_keys")
