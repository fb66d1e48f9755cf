"""The AIOps loop's state (anomalies, their counts, drift reports), so that a server
restart keeps what the deployment pages show.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aiops_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deployment", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_aiops_state_deployment", "aiops_state", ["deployment"])


def downgrade() -> None:
    op.drop_index("ix_aiops_state_deployment", table_name="aiops_state")
    op.drop_table("aiops_state")
