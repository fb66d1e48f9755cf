"""Canary releases: a new version serves a share of a deployment's traffic first, is
judged on its own figures, then promoted, or stopped without a client seeing a restart.

A canary of deployment ``NAME`` is an ordinary deployment, ``NAME-canary``, serving the
new version on its own port: the monitor supervises it (health, restarts, recovery after
a server restart), the scraper and the proxy keep its figures apart from the main
version's, and every alert rule that names ``NAME`` is also evaluated on ``NAME-canary``
(:class:`~._aiops.AIOps`). So a canary at 10% of the traffic is judged on its own 10%,
not diluted in the total. Its record, ``home/deployments/NAME/canary.json`` (version,
share, start, when to promote), survives a server restart like the rest.

* :meth:`Canaries.pick` (each proxied request): the canary's name for a ``share`` of the
  requests (a random draw) while it is ready, else ``None`` (the main version);
* a ``rollback`` rule firing on the canary stops it (:meth:`Canaries.abort`); the main
  version never stopped;
* ``promote_after_s`` after its start with no alert firing on it, it is promoted
  (:meth:`Canaries.promote`): the main deployment is released to the new version while
  the canary takes all the traffic, and once the main one is ready again the canary is
  deleted. A canary that fails, or whose main deployment stops, is aborted.

Example:
    >>> manager.canaries.start("iris", "iris-mlp:2", share=0.1, promote_after_s=600,
    ...                        user="ada")  # doctest: +SKIP
    Canary(deployment='iris', canary='iris-canary', ref='iris-mlp:2', share=0.1, ...)
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from lepton._fs import atomic_write_bytes
from lepton.errors import ConflictError, DeploymentError, NotFoundError
from lepton.platform.deployments._aiops_metrics import figures
from lepton.platform.deployments._healing import audit
from lepton.platform.deployments._specs import NAME, DeploymentRequest, DeploymentView

if TYPE_CHECKING:
    from lepton.platform.deployments._manager import DeploymentManager
    from lepton.platform.deployments._runtime import Runtime

__all__ = ["CANARY_FILE", "Canaries", "Canary", "CanaryRequest", "ReleaseRequest"]

log = logging.getLogger("lepton.platform.deployments")

CANARY_FILE = "canary.json"  # in the main deployment's folder
SUFFIX = "-canary"
WATCHED = ("rps", "error_rate", "latency_ms_p95", "proxy_error_rate", "timeouts")


class ReleaseRequest(BaseModel):
    """What releasing a new version takes (``POST /api/v1/deployments/{name}/release``).

    Example:
        >>> ReleaseRequest(model="3").model
        '3'
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1, max_length=300,
        description="The version to serve: 3, name:3 or name@staging (the same model).",
    )  # fmt: skip


class CanaryRequest(ReleaseRequest):
    """What starting a canary takes (``POST /api/v1/deployments/{name}/canary``).

    Example:
        >>> CanaryRequest(model="3", share=0.1).promote_after_s
        600.0
    """

    share: float = Field(
        gt=0, lt=1, description="The share of the traffic (0-1) the new version takes."
    )
    promote_after_s: float = Field(
        600.0, ge=0, le=7 * 86400,
        description="A canary with no alert firing on it this long after its start is "
        "promoted (serves all the traffic).",
    )  # fmt: skip


class Canary(BaseModel):
    """A canary release as the API shows it: which version takes which share, when it is
    promoted, and the watched figures of both versions side by side (last 60 s)."""

    deployment: str = Field(description="The main deployment.")
    canary: str = Field(description="The canary's own deployment (NAME-canary).")
    ref: str = Field(description="The version the canary serves (name:3).")
    version: int
    share: float
    started_at: float = Field(description="Epoch seconds.")
    promote_after_s: float
    promote_at: float = Field(description="Epoch seconds; it waits while an alert fires.")
    state: str = Field(description="The canary deployment's state (ready, starting, ...).")
    promoting: bool = Field(description="Being promoted: the main version is restarting.")
    figures: dict[str, dict[str, float | None]] = Field(
        default_factory=dict, description="main and canary: rps, error_rate, p95, ..."
    )


class Canaries:
    """The canary releases of a :class:`DeploymentManager` (see the module docstring).

    Records live in the main deployments' folders and are read once, at construction;
    :meth:`pick` is called for each proxied request and reads only memory.
    """

    def __init__(self, manager: DeploymentManager) -> None:
        self.manager = manager
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        root = manager.home / "deployments"
        for path in sorted(root.glob(f"*/{CANARY_FILE}")) if root.is_dir() else []:
            try:
                record = json.loads(path.read_text())
                self._records[path.parent.name] = {
                    "canary": str(record["canary"]), "version": int(record["version"]),
                    "ref": str(record["ref"]), "share": float(record["share"]),
                    "started_at": float(record["started_at"]),
                    "promote_after_s": float(record["promote_after_s"]),
                    "promoting": bool(record.get("promoting", False)),
                }  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("ignoring the unreadable canary record %s", path)

    # -- reading ---------------------------------------------------------------------------

    def of(self, name: str) -> Canary | None:
        """Deployment ``name``'s canary, if it has one."""
        with self._lock:
            record = dict(self._records.get(name) or {})
        if not record:  # none, or one being started
            return None
        try:
            state = self.manager.get(record["canary"]).state
        except NotFoundError:
            state = "deleted"
        shown = {
            label: {k: v for k, v in figures(self.manager.metrics(n)).items() if k in WATCHED}
            for label, n in (("main", name), ("canary", record["canary"]))
            if state != "deleted" or label == "main"
        }
        return Canary(
            deployment=name, state=state, figures=shown,
            promote_at=record["started_at"] + record["promote_after_s"], **record,
        )  # fmt: skip

    def get(self, name: str) -> Canary:
        """Deployment ``name``'s canary.

        Raises:
            NotFoundError: No deployment has that name, or it has no canary.
        """
        self.manager.get(name)
        found = self.of(name)
        if found is None:
            raise NotFoundError(
                f"deployment {name!r} has no canary; start one with POST /api/v1/deployments/"
                f'{name}/canary {{"model": "<version>", "share": 0.1}}'
            )
        return found

    def parent_of(self, name: str) -> str | None:
        """The main deployment of canary deployment ``name``; ``None`` if it is none."""
        with self._lock:
            for parent, record in self._records.items():
                if record.get("canary") == name:
                    return parent
        return None

    def canary_of(self, name: str) -> str | None:
        """The canary deployment of main deployment ``name``, if it has one."""
        with self._lock:
            record = self._records.get(name)
            return record["canary"] if record else None

    def pick(self, name: str) -> Runtime | None:
        """Where one request to ``name`` goes: its canary's runtime for a ``share`` of them
        (all of them while it is promoted) when the canary is ready, else ``None``."""
        record = self._records.get(name)  # one dict read: atomic, no lock per request
        if not record:  # none, or one being started
            return None
        rt = self.manager.runtime(record["canary"])
        if rt is None or rt.state != "ready" or rt.desired != "running":
            return None
        chosen = record["promoting"] or random.random() < record["share"]
        return rt if chosen else None

    # -- changes ---------------------------------------------------------------------------

    def start(
        self, name: str, ref: str, *, share: float, promote_after_s: float, user: str
    ) -> Canary:
        """Serve version ``ref`` (``3``, ``name:3``, ``name@staging``) of deployment
        ``name``'s model as a canary taking ``share`` of its traffic.

        Raises:
            NotFoundError: No deployment has that name.
            ConflictError: It has a canary already, or ``NAME-canary`` is taken.
            DeploymentError: ``share`` is not in (0, 1), the version is not ready or is
                another model's, the deployment is stopped, or it is itself a canary.
        """
        if not 0 < share < 1:
            raise DeploymentError(f"a canary's share must be between 0 and 1, got {share}")
        main = self.manager.get(name)
        if self.parent_of(name) is not None:
            raise DeploymentError(f"{name!r} is a canary itself; release on its main deployment")
        if main.desired != "running":
            raise DeploymentError(f"deployment {name!r} is stopped; start it before a canary")
        version = self.manager.healer.version_for(main, ref)
        if version.version == main.version:
            raise DeploymentError(f"deployment {name!r} already serves {version.ref}")
        canary = f"{name}{SUFFIX}"
        if not NAME.fullmatch(canary):
            raise DeploymentError(
                f"deployment name {name!r} is too long for a canary ({canary!r} must be at "
                f"most 63 characters); release without a canary"
            )
        with self._lock:
            if name in self._records:
                raise ConflictError(
                    f"deployment {name!r} has a canary already ({self._records[name]['ref']}); "
                    f"promote or abort it first"
                )
            self._records[name] = {}  # reserved while the canary starts
        try:
            self.manager.create(
                DeploymentRequest(name=canary, model=version.ref, replicas=1, port=None), user
            )
        except BaseException:
            with self._lock:
                self._records.pop(name, None)
            raise
        record = {"canary": canary, "version": version.version, "ref": version.ref,
                  "share": share, "started_at": time.time(),
                  "promote_after_s": promote_after_s, "promoting": False}  # fmt: skip
        self._save(name, record)
        log.info("%s starts canary %s of %s (%.0f%% of its traffic)", user, version.ref, name,
                 100 * share)  # fmt: skip
        return self.get(name)

    def abort(self, name: str, user: str, reason: str = "aborted") -> Canary:
        """Stop and delete deployment ``name``'s canary; the main version serves all the
        traffic (it never stopped). Answers the canary's last record.

        Raises:
            NotFoundError: No deployment has that name, or it has no canary.
        """
        last = self.get(name)
        log.info("%s aborts the canary %s of %s: %s", user, last.ref, name, reason)
        self._drop(name)  # no request is sent to it from now on
        with contextlib.suppress(NotFoundError):  # deleted already
            self.manager.delete(last.canary, user)
        return last

    def promote(self, name: str, user: str) -> DeploymentView:
        """Serve the canary's version on the main deployment: it is released to it (its
        replicas restart) while the canary takes all the traffic; the canary is deleted
        once the main one is ready again (:meth:`tick`).

        Raises:
            NotFoundError: No deployment has that name, or it has no canary.
        """
        canary = self.get(name)
        if canary.promoting:  # the main deployment is being released already
            return self.manager.get(name)
        with self._lock:
            record = dict(self._records[name], promoting=True)
        self._save(name, record)
        log.info("%s promotes the canary %s of %s", user, canary.ref, name)
        return self.manager.healer.release(name, str(canary.version), user)

    def discard(self, name: str, user: str) -> None:
        """Abort deployment ``name``'s canary, if it has one (``name`` is being deleted)."""
        if self.canary_of(name) is not None:
            self.abort(name, user, f"deployment {name} is deleted")

    def tick(self, firing: set[str]) -> None:
        """Promote the canaries due (``firing``: deployments with an alert firing wait),
        finish the promotions whose main deployment is ready, and abort those whose main
        deployment stopped or whose canary failed. Each automatic change is audited."""
        with self._lock:
            records = {n: dict(r) for n, r in self._records.items() if r}
        for name, record in records.items():
            try:
                self._check(name, record, firing)
            except Exception:
                log.exception("checking the canary of deployment %s failed", name)

    def _check(self, name: str, record: dict[str, Any], firing: set[str]) -> None:
        db = self.manager.database
        try:
            main = self.manager.get(name)
        except NotFoundError:
            main = None
        try:
            state = self.manager.get(record["canary"]).state
        except NotFoundError:
            self._drop(name)  # its deployment was deleted by hand
            return
        detail = {"canary": record["canary"], "version": record["version"]}
        if main is None or main.desired != "running" or state == "failed":
            why = "its canary failed" if state == "failed" else f"deployment {name} stopped"
            self.abort(name, "aiops", why)
            audit(db, "aiops", "deployment.canary_abort", name, 200, {**detail, "reason": why})
            return
        if record["promoting"]:
            if main.version == record["version"] and main.state == "ready":
                self._drop(name)
                self.manager.delete(record["canary"], "aiops")
                audit(db, "aiops", "deployment.canary_promoted", name, 200, detail)
            return
        due = time.time() >= record["started_at"] + record["promote_after_s"]
        if due and state == "ready" and record["canary"] not in firing:
            self.promote(name, "aiops")
            audit(db, "aiops", "deployment.canary_promote", name, 200, detail)

    # -- records ---------------------------------------------------------------------------

    def _save(self, name: str, record: dict[str, Any]) -> None:
        atomic_write_bytes(self.manager.folder(name) / CANARY_FILE, json.dumps(record).encode())
        with self._lock:
            self._records[name] = record

    def _drop(self, name: str) -> None:
        with self._lock:
            self._records.pop(name, None)
        (self.manager.folder(name) / CANARY_FILE).unlink(missing_ok=True)
