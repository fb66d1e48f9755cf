"""The metadata schema: runs and their metrics, registered models and their versions.

Changing a table here needs a new migration in ``migrations/versions`` (the schema a
database has is the one its migrations built, never ``create_all``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Metric", "ModelAlias", "ModelVersion", "RegisteredModel", "Run", "RunArtifact"]


class Base(DeclarativeBase):
    """Declarative base of every Lepton table."""


class Run(Base):
    """One tracked run (``with lp.start_run(...)``)."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="running", index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    system: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    git_sha: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)


class Metric(Base):
    """One value of one metric at one step of a run."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_key_step", "run_id", "key", "step"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    timestamp: Mapped[float] = mapped_column(Float)


class RunArtifact(Base):
    """An artifact a run logged (its bytes live in the artifact store)."""

    __tablename__ = "run_artifacts"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)


class RegisteredModel(Base):
    """A named model; its versions are immutable."""

    __tablename__ = "registered_models"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    description: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[float] = mapped_column(Float)


class ModelVersion(Base):
    """One immutable version of a registered model (pending -> ready | failed)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_name", "version", name="uq_model_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(
        ForeignKey("registered_models.name", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    stage: Mapped[str | None] = mapped_column(String(16))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    created_at: Mapped[float] = mapped_column(Float)


class ModelAlias(Base):
    """A movable name (``@production``, ``@champion``) for one version of a model."""

    __tablename__ = "model_aliases"
    model_name: Mapped[str] = mapped_column(
        ForeignKey("registered_models.name", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
