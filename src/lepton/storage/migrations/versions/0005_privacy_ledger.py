"""The privacy-budget ledger: each dataset's budget and every release charged to it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_budgets",
        sa.Column("dataset", sa.String(300), primary_key=True),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "privacy_charges",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "dataset",
            sa.String(300),
            sa.ForeignKey("privacy_budgets.dataset", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("who", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("what", sa.String(500), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("epsilon_after", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("accountant", sa.String(16), nullable=False),
    )
    op.create_index("ix_privacy_charges_dataset", "privacy_charges", ["dataset"])


def downgrade() -> None:
    op.drop_index("ix_privacy_charges_dataset", table_name="privacy_charges")
    op.drop_table("privacy_charges")
    op.drop_table("privacy_budgets")
