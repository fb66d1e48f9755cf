"""The server lease: one server manages a database's jobs and deployments at a time.

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
        "server_lease",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("instance", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("process", sa.String(100), nullable=False),
        sa.Column("url", sa.String(300), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("heartbeat", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_lease")
