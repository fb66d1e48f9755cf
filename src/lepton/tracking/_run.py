"""Runs: a live ``Run`` you log to, and the frozen ``RunRecord`` you read back."""

from __future__ import annotations

import contextvars
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import select

from lepton._context import ActiveRun, reset_active_run, set_active_run
from lepton._context import active_run as _active_run
from lepton._version import __version__
from lepton.errors import LeptonError, RunNotFoundError, TrackingError
from lepton.storage import (
    ArtifactStore,
    Database,
    artifact_store,
    open_database,
    record_dataset_use,
)
from lepton.storage.schema import MetricRow, RunArtifactRow, RunRow
from lepton.tracking._reconcile import reconcile

__all__ = ["Run", "RunRecord", "active_run", "resume_run", "start_run"]

STATES = ("running", "finished", "failed", "killed")


@dataclass(frozen=True)
class RunRecord:
    """A run as stored: read it with :func:`get_run` / :func:`list_runs`."""

    id: int
    name: str
    state: str
    params: dict[str, Any]
    tags: dict[str, Any]
    system: dict[str, Any]
    git_sha: str | None
    created_at: float
    ended_at: float | None
    metrics: dict[str, float] = field(default_factory=dict)  # last value of each metric
    parent_id: int | None = None  # the study's run, for a tuning trial

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return dict(self.__dict__)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _system() -> dict[str, Any]:
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "lepton": __version__,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "argv": sys.argv[:8],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


class Run:
    """A live run. Use :func:`start_run` to make one, as a context manager.

    Leaving the ``with`` block normally marks the run ``finished``; an exception marks
    it ``failed`` (``KeyboardInterrupt``: ``killed``), and a process that dies without
    leaving the block is marked ``failed`` the next time runs are read.
    """

    def __init__(
        self, db: Database, row_id: int, name: str, store: ArtifactStore | None = None
    ) -> None:
        self._db = db
        self._store = store
        self.id = row_id
        self.name = name
        self._steps: dict[str, int] = {}
        self._token: contextvars.Token[ActiveRun | None] | None = None
        self.state = "running"

    def __repr__(self) -> str:
        return f"Run(id={self.id}, name={self.name!r}, state={self.state!r})"

    def _update(self, **values: Any) -> None:
        with self._db.session() as s:
            row = s.get(RunRow, self.id)
            assert row is not None
            for key, value in values.items():
                if key in ("params", "tags"):
                    value = {**getattr(row, key), **value}
                setattr(row, key, value)

    def _check_open(self) -> None:
        if self.state != "running":
            raise TrackingError(f"run {self.id} is {self.state}; start a new run to log more")

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record hyper-parameters (JSON values; other objects are stored as text)."""
        self._check_open()
        self._update(params=_jsonable(dict(params)))

    def log_param(self, key: str, value: Any) -> None:
        """Record one hyper-parameter."""
        self.log_params({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Attach free-form labels."""
        self._check_open()
        self._update(tags=_jsonable(dict(tags)))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record metric values at ``step`` (default: each metric's next step)."""
        self._check_open()
        now = time.time()
        rows = []
        for key, value in metrics.items():
            at = self._steps.get(key, -1) + 1 if step is None else step
            self._steps[key] = at
            rows.append(
                MetricRow(run_id=self.id, key=key, step=at, value=float(value), timestamp=now)
            )
        with self._db.session() as s:
            s.add_all(rows)

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Record one metric value."""
        self.log_metrics({key: value}, step=step)

    def log_dataset(self, dataset: Any, role: str = "train") -> None:
        """Record a dataset's name, size and content fingerprint (lineage; every version
        of that content lists this run among its uses)."""
        fingerprint = dataset.fingerprint()
        self.log_params(
            {f"dataset.{role}": {"name": dataset.name, "rows": len(dataset),
                                 "fingerprint": fingerprint}}
        )  # fmt: skip
        record_dataset_use(self._db, fingerprint, run_id=self.id, role=role)

    def log_artifact(self, source: str | os.PathLike[str] | bytes, name: str | None = None) -> str:
        """Store a file (or bytes) with the run; returns its artifact key."""
        self._check_open()
        if isinstance(source, bytes):
            if name is None:
                raise TrackingError("log_artifact(bytes) needs name=, e.g. name='report.json'")
            data = source
        else:
            data = Path(source).read_bytes()
            name = name or Path(source).name
        key = f"runs/{self.id}/{name}"
        info = (self._store or artifact_store()).put(key, data)
        with self._db.session() as s:
            s.merge(RunArtifactRow(run_id=self.id, key=key, sha256=info.sha256, size=info.size))
        return key

    def end(self, state: str = "finished") -> None:
        """Close the run with a final state (``finished``, ``failed`` or ``killed``)."""
        if state not in STATES[1:]:
            raise TrackingError(f"a run ends as finished, failed or killed, not {state!r}")
        if self.state == "running":
            self._update(state=state, ended_at=time.time())
            self.state = state
        if self._token is not None:
            reset_active_run(self._token)
            self._token = None

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.end("finished")
        elif issubclass(kind, KeyboardInterrupt):
            self.end("killed")
        else:
            if exc is not None and self.state == "running":
                message = exc.message if isinstance(exc, LeptonError) else repr(exc)
                self._update(tags={"lepton.error": message[:2000]})
            self.end("failed")


def start_run(
    name: str | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    parent: Run | int | None = None,
    database: Database | None = None,
    store: ArtifactStore | None = None,
) -> Run:
    """Start a run and make it the active one (``lp.fit`` logs to it by itself).

    Args:
        name: Shown in lists (default: ``run-YYYYmmdd-HHMMSS``).
        params: Hyper-parameters to record at once.
        tags: Free-form labels.
        parent: The run this one belongs to (a tuning trial's study run), or its id.
        database: The metadata database (default: ``LEPTON_DATABASE_URL``'s).
        store: Where :meth:`Run.log_artifact` writes (default:
            :func:`lepton.storage.artifact_store`).

    Example:
        >>> with lp.start_run("mnist-baseline", params={"lr": 1e-3}) as run:  # doctest: +SKIP
        ...     lp.fit(model, train, epochs=3)  # per-epoch metrics go to the run
    """
    db = database or open_database()
    reconcile(db)
    with db.session() as s:
        row = RunRow(
            name=name or f"run-{time.strftime('%Y%m%d-%H%M%S')}",
            state="running",
            params=_jsonable(dict(params or {})),
            tags=_jsonable(dict(tags or {})),
            system=_system(),
            git_sha=_git_sha(),
            host=socket.gethostname(),
            pid=os.getpid(),
            created_at=time.time(),
            parent_id=parent.id if isinstance(parent, Run) else parent,
        )
        s.add(row)
        s.flush()
        run = Run(db, row.id, row.name, store)
    run._token = set_active_run(run)
    return run


def resume_run(run_id: int, *, database: Database | None = None) -> Run:
    """Reopen an ended run (e.g. a tuning study's run, resumed after a crash) as the
    active one, owned by this process; its params, metrics and artifacts are kept.

    Raises:
        RunNotFoundError: No run has that id.
    """
    db = database or open_database()
    with db.session() as s:
        row = s.get(RunRow, run_id)
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id}; see `lepton runs list`")
        row.state, row.ended_at = "running", None
        row.host, row.pid = socket.gethostname(), os.getpid()
        run = Run(db, row.id, row.name)
    run._token = set_active_run(run)
    return run


def active_run() -> Run | None:
    """The innermost run started with :func:`start_run` and not yet ended, if any."""
    run = _active_run()
    return run if isinstance(run, Run) else None


def rows_to_record(row: RunRow, metrics: dict[str, float]) -> RunRecord:
    """Freeze a database row."""
    return RunRecord(
        id=row.id, name=row.name, state=row.state, params=row.params, tags=row.tags,
        system=row.system, git_sha=row.git_sha, created_at=row.created_at,
        ended_at=row.ended_at, metrics=metrics, parent_id=row.parent_id,
    )  # fmt: skip


def last_metrics(db: Database, run_id: int) -> dict[str, float]:
    """The last logged value of each metric of a run."""
    with db.session() as s:
        rows = s.execute(
            select(MetricRow.key, MetricRow.value)
            .where(MetricRow.run_id == run_id)
            .order_by(MetricRow.step, MetricRow.id)
        ).all()
    return {key: value for key, value in rows}
