"""The metadata schema: runs and their metrics, registered models and their versions, and
the platform's users, tokens, audit log, jobs and deployments.

Changing a table here needs a new migration in ``migrations/versions`` (the schema a
database has is the one its migrations built, never ``create_all``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AIOpsStateRow",
    "ApiTokenRow",
    "AuditRow",
    "Base",
    "DatasetUseRow",
    "DatasetVersionRow",
    "DeploymentRow",
    "JobRow",
    "MetricRow",
    "ModelAliasRow",
    "ModelVersionRow",
    "PrivacyBudgetRow",
    "PrivacyChargeRow",
    "RegisteredModelRow",
    "RunArtifactRow",
    "RunRow",
    "ServerLeaseRow",
    "UserRow",
]


class Base(DeclarativeBase):
    """Declarative base of every Lepton table."""


class RunRow(Base):
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
    # a tuning trial's run points at its study's run
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL", name="fk_runs_parent_id"), index=True
    )


class MetricRow(Base):
    """One value of one metric at one step of a run."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_key_step", "run_id", "key", "step"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    timestamp: Mapped[float] = mapped_column(Float)


class RunArtifactRow(Base):
    """An artifact a run logged (its bytes live in the artifact store)."""

    __tablename__ = "run_artifacts"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)


class RegisteredModelRow(Base):
    """A named model; its versions are immutable."""

    __tablename__ = "registered_models"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    description: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[float] = mapped_column(Float)


class ModelVersionRow(Base):
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
    # The process writing a pending version, so a crash leaves no version pending forever.
    owner_host: Mapped[str | None] = mapped_column(String(255))
    owner_pid: Mapped[int | None] = mapped_column(Integer)


class ModelAliasRow(Base):
    """A movable name (``@production``, ``@champion``) for one version of a model."""

    __tablename__ = "model_aliases"
    model_name: Mapped[str] = mapped_column(
        ForeignKey("registered_models.name", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class UserRow(Base):
    """A person or service account of the platform server (role admin, editor or viewer)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[float] = mapped_column(Float)


class ApiTokenRow(Base):
    """An API token: only its SHA-256 is kept; the secret is shown once, at creation.

    ``kind`` is ``api`` (bearer tokens), ``login`` (a one-time dashboard link) or
    ``session`` (a dashboard cookie).
    """

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16), default="api")
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class AuditRow(Base):
    """One change made through the platform: who, what, when, and how it ended."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(500))
    status: Mapped[int] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class JobRow(Base):
    """A unit of work the scheduler runs: a typed spec, never a shell string.

    States: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled`` |
    ``lost``; ``running`` -> ``cancelling`` -> ``cancelled``; a retry puts it back to
    ``queued`` with ``attempts`` counted.
    """

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    cpus: Mapped[float] = mapped_column(Float, default=1.0)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb: Mapped[int] = mapped_column(Integer, default=1024)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=2)
    not_before: Mapped[float | None] = mapped_column(Float)
    executor: Mapped[str] = mapped_column(String(32), default="local")
    handle: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(String(4000))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)


class DeploymentRow(Base):
    """A model version the server keeps served (``desired`` running or stopped)."""

    __tablename__ = "deployments"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_ref: Mapped[str] = mapped_column(String(300))
    model_name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    port: Mapped[int] = mapped_column(Integer, unique=True)
    desired: Mapped[str] = mapped_column(String(16), default="running")
    state: Mapped[str] = mapped_column(String(16), default="starting")
    pid: Mapped[int | None] = mapped_column(Integer)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(4000))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ServerLeaseRow(Base):
    """Which server manages this database's jobs and deployments (one row, ``id`` 1).

    ``instance`` is random per server start; ``process`` is the holder's
    ``lepton.platform._procs.fingerprint``; ``heartbeat`` is renewed while it runs.
    """

    __tablename__ = "server_lease"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    process: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(300))
    acquired_at: Mapped[float] = mapped_column(Float)
    heartbeat: Mapped[float] = mapped_column(Float)


class PrivacyBudgetRow(Base):
    """A dataset's differential-privacy budget ``(epsilon, delta)`` and its declared,
    public columns (bounds, bins, categories); its charges are ``privacy_charges``.

    ``dataset`` is the ledger's key: a catalog name, or a dataset's fingerprint.
    """

    __tablename__ = "privacy_budgets"
    dataset: Mapped[str] = mapped_column(String(300), primary_key=True)
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    columns: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(64))


class PrivacyChargeRow(Base):
    """One release charged to a dataset's budget, written before the release is made:
    who, what, the mechanism's ``DpEvent`` as JSON, and the composed epsilon after it."""

    __tablename__ = "privacy_charges"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset: Mapped[str] = mapped_column(
        ForeignKey("privacy_budgets.dataset", ondelete="CASCADE"), index=True
    )
    at: Mapped[float] = mapped_column(Float)
    who: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    what: Mapped[str] = mapped_column(String(500))
    event: Mapped[dict[str, Any]] = mapped_column(JSON)
    # the composed epsilon of every charge so far, at the budget's delta then
    epsilon_after: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    accountant: Mapped[str] = mapped_column(String(16))


class DatasetVersionRow(Base):
    """One immutable version of a named dataset (``lp.data.register``): its content is the
    artifact ``artifact`` (npz or parquet); ``fingerprint`` is the content's key, so the
    same content is one version of a name."""

    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_dataset_version"),
        UniqueConstraint("name", "fingerprint", name="uq_dataset_fingerprint"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(80), index=True)
    format: Mapped[str] = mapped_column(String(16))
    artifact: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    schema: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    derived_from: Mapped[str | None] = mapped_column(String(200))
    steps: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(64))


class DatasetUseRow(Base):
    """A run or a model version that used a dataset's content, known by its fingerprint
    (recorded by ``Run.log_dataset`` and ``lp.register``), whether or not that content is a
    registered version yet."""

    __tablename__ = "dataset_uses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(80), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    model: Mapped[str | None] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(32))
    at: Mapped[float] = mapped_column(Float)


class AIOpsStateRow(Base):
    """What the AIOps loop learned of a deployment, kept across server restarts: one
    anomaly (``kind`` ``anomaly``), one drift report (``drift``), or the anomaly counts by
    series (``counts``, one row per deployment). The newest rows of each kind are kept
    (``platform/deployments/_aiops_state.py`` prunes the rest)."""

    __tablename__ = "aiops_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[float] = mapped_column(Float)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
