"""Prediction logging: a sample of a replica's inputs and outputs, bounded on disk.

A deployment created with a ``prediction_log`` option gets ``LEPTON_PREDICTION_LOG`` (JSON
of a :class:`PredictionLogConfig`) in its replicas' environment. Each replica then hands
a ``rate`` share of its answered requests to a bounded queue (never blocking a request: a
full queue drops the record and counts it) that one writer thread appends to JSON Lines
segments, ``<dir>/<pid>-<n>.jsonl``. A segment is closed at ``segment_rows`` rows; after
each close the writer prunes the folder (every replica's segments, oldest first) to
``max_bytes``, ``retention_rows`` and ``retention_days``. Fields named in ``exclude``
(PII) are dropped from inputs at any depth before a record is written.

:func:`read_predictions` reads the newest records back (the platform's
``GET /api/v1/deployments/{name}/predictions`` and its drift watch).

Example:
    >>> cfg = PredictionLogConfig(dir="/tmp/x", rate=1.0)
    >>> scrub({"name": "ada", "age": 3}, frozenset({"name"}))
    {'age': 3}
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import random
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ENV",
    "PredictionLog",
    "PredictionLogConfig",
    "PredictionLogSpec",
    "read_predictions",
    "scrub",
]

ENV = "LEPTON_PREDICTION_LOG"
log = logging.getLogger("lepton.serve")


class PredictionLogSpec(BaseModel):
    """What a deployment logs of its predictions (``prediction_log`` of a deployment)."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(0.1, ge=0.0, le=1.0, description="Share of requests logged, 0..1.")
    retention_rows: int = Field(100_000, ge=1, description="Rows kept at most (oldest go).")
    retention_days: float = Field(7.0, gt=0, description="Rows older than this are removed.")
    max_bytes: int = Field(
        64 * 2**20, ge=64 * 1024, le=2**36, description="Bytes on disk at most, all replicas."
    )
    exclude: list[str] = Field(
        default_factory=list, max_length=100, description="Input fields never written (PII)."
    )
    segment_rows: int = Field(1000, ge=1, le=1_000_000, description="Rows per segment file.")


class PredictionLogConfig(PredictionLogSpec):
    """A :class:`PredictionLogSpec` and the folder it writes to (set by the platform)."""

    dir: str


def scrub(value: Any, exclude: frozenset[str]) -> Any:
    """``value`` without the dict keys named in ``exclude``, at any depth."""
    if not exclude:
        return value
    if isinstance(value, dict):
        return {k: scrub(v, exclude) for k, v in value.items() if k not in exclude}
    if isinstance(value, list):
        return [scrub(v, exclude) for v in value]
    return value


def _segments(folder: Path) -> list[tuple[float, Path]]:
    found = []
    for path in folder.glob("*.jsonl"):
        with contextlib.suppress(OSError):
            found.append((path.stat().st_mtime, path))
    return sorted(found)


class PredictionLog:
    """The writer of one replica (see the module docstring).

    Args:
        config: What to log and where.
        queue_size: Records waiting for the writer at most; more are dropped.
    """

    def __init__(self, config: PredictionLogConfig, queue_size: int = 10_000) -> None:
        self.config = config
        self.folder = Path(config.dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.exclude = frozenset(config.exclude)
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(queue_size)
        self._rng = random.Random()
        self._segment = 0
        self._rows = 0
        self._handle: Any = None
        self._thread = threading.Thread(target=self._run, name="lepton-predlog", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls) -> PredictionLog | None:
        """The writer ``LEPTON_PREDICTION_LOG`` asks for, or ``None`` (unset, or invalid:
        logged, never a reason for a replica not to serve)."""
        raw = os.environ.get(ENV)
        if not raw:
            return None
        try:
            return cls(PredictionLogConfig.model_validate_json(raw))
        except Exception as exc:
            log.error("prediction log disabled: %s=%r is not usable (%s)", ENV, raw[:200], exc)
            return None

    def offer(self, route: str, body: bytes, answer: bytes) -> None:
        """Maybe log one answered request (sampled at ``rate``); never blocks."""
        if self.config.rate <= 0 or self._rng.random() >= self.config.rate:
            return
        try:
            self._queue.put_nowait({"t": time.time(), "route": route, "in": body, "out": answer})
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until what is queued now is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._queue.all_tasks_done.wait(left)

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    self._close_segment()
                    return
                self._write(item)
            except Exception:  # a full disk must not stop the replica: skip the record
                log.exception("prediction log: writing a record failed")
            finally:
                self._queue.task_done()

    def _write(self, item: dict[str, Any]) -> None:
        try:
            inputs = scrub(json.loads(item["in"]), self.exclude) if item["in"] else None
        except ValueError:
            inputs = None  # an image or a multipart upload: not logged as such
        try:
            outputs = json.loads(item["out"])
        except ValueError:
            outputs = None
        record = {"t": item["t"], "route": item["route"], "inputs": inputs, "outputs": outputs}
        if self._handle is None:
            self._segment += 1
            path = self.folder / f"{os.getpid()}-{int(time.time() * 1000)}-{self._segment}.jsonl"
            self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._handle.flush()
        self._rows += 1
        self.written += 1
        if self._rows >= self.config.segment_rows:
            self._close_segment()
            self.prune()

    def _close_segment(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle, self._rows = None, 0

    def prune(self) -> None:
        """Remove the oldest closed segments past the byte, row and age bounds."""
        cfg = self.config
        cutoff = time.time() - cfg.retention_days * 86400
        segments = _segments(self.folder)
        sizes = {p: p.stat().st_size for _, p in segments if p.exists()}
        total = sum(sizes.values())
        rows = len(segments) * cfg.segment_rows
        open_path = Path(self._handle.name) if self._handle is not None else None
        for mtime, path in segments:
            over = total > cfg.max_bytes or rows > cfg.retention_rows or mtime < cutoff
            if not over:
                break
            if path == open_path:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
            total -= sizes.get(path, 0)
            rows -= cfg.segment_rows


def read_predictions(folder: Path, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` records of a prediction log folder, newest first."""
    out: list[dict[str, Any]] = []
    for _, path in reversed(_segments(folder)):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue  # pruned meanwhile
        for line in reversed(lines):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
            if len(out) >= limit:
                return sorted(out, key=lambda r: -float(r.get("t", 0)))
    return sorted(out, key=lambda r: -float(r.get("t", 0)))
