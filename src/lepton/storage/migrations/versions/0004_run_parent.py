"""Child runs: a tuning study's trials are runs under the study's run.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("parent_id", sa.Integer()))
        batch.create_foreign_key(
            "fk_runs_parent_id", "runs", ["parent_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_runs_parent_id", ["parent_id"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_parent_id")
        batch.drop_constraint("fk_runs_parent_id", type_="foreignkey")
        batch.drop_column("parent_id")
