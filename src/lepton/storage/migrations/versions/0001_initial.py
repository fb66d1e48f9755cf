"""Initial schema: runs, metrics, run artifacts, registered models, versions, aliases.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("system", sa.JSON(), nullable=False),
        sa.Column("git_sha", sa.String(64)),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float()),
    )
    op.create_index("ix_runs_state", "runs", ["state"])
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("timestamp", sa.Float(), nullable=False),
    )
    op.create_index("ix_metrics_run_key_step", "metrics", ["run_id", "key", "step"])
    op.create_table(
        "run_artifacts",
        sa.Column(
            "run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
    )
    op.create_table(
        "registered_models",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("description", sa.String(2000), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "model_name",
            sa.String(200),
            sa.ForeignKey("registered_models.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(16)),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="SET NULL")),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("model_name", "version", name="uq_model_version"),
    )
    op.create_index("ix_model_versions_model_name", "model_versions", ["model_name"])
    op.create_table(
        "model_aliases",
        sa.Column(
            "model_name",
            sa.String(200),
            sa.ForeignKey("registered_models.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    for table in ("model_aliases", "model_versions", "registered_models", "run_artifacts"):
        op.drop_table(table)
    op.drop_index("ix_metrics_run_key_step", table_name="metrics")
    op.drop_table("metrics")
    op.drop_index("ix_runs_state", table_name="runs")
    op.drop_table("runs")
