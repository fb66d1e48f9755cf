"""Remediation of a deployment: replace its processes, or roll it back a version.

:class:`Healer` does what the AIOps rules' ``restart`` and ``rollback`` actions ask (and
what an operator may call through the manager); ``scale`` is the manager's own
:meth:`~._manager.DeploymentManager.scale`. Each takes the deployment's lock, like every
change.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lepton._fs import atomic_write_bytes, private_dir
from lepton.errors import DeploymentError
from lepton.platform.deployments._monitor import Monitor
from lepton.platform.deployments._process import ProcessControl
from lepton.platform.deployments._runtime import Runtimes
from lepton.platform.deployments._scraper import MetricsScraper
from lepton.platform.deployments._specs import DeploymentView
from lepton.platform.deployments._store import DeploymentStore
from lepton.storage import Database
from lepton.storage.schema import AuditRow

if TYPE_CHECKING:
    from lepton.registry import ModelVersion

__all__ = ["Healer", "audit"]

log = logging.getLogger("lepton.platform.deployments")
RELEASE_FILE = "release.json"  # in the deployment's folder: when its version last changed


def audit(
    db: Database, actor: str, action: str, name: str, status: int, detail: dict[str, Any]
) -> None:
    """Write one automatic change of deployment ``name`` to the audit log (``actor``:
    ``aiops``, ``autoscaler``; ``status``: 200 done, 500 failed)."""
    with db.session() as s:
        s.add(AuditRow(at=time.time(), actor=actor, action=action,
                       target=f"deployment/{name}", status=status, detail=detail))  # fmt: skip


class Healer:
    """Restarts and rollbacks (see the module docstring).

    Args:
        resolve: A reference (``name:3``) to its ready version, or a
            :class:`DeploymentError`.
    """

    def __init__(
        self,
        store: DeploymentStore,
        processes: ProcessControl,
        runtimes: Runtimes,
        monitor: Monitor,
        scraper: MetricsScraper,
        resolve: Callable[[str], ModelVersion],
    ) -> None:
        self.store, self.processes, self.runtimes = store, processes, runtimes
        self.monitor, self.scraper, self.resolve = monitor, scraper, resolve

    def restart(self, name: str, user: str) -> DeploymentView:
        """Replace a running deployment's supervisor and replicas by new ones (a stopped
        one is left as it is).

        Raises:
            NotFoundError: No deployment has that name.
        """
        with self.runtimes.lock(name):
            row = self.store.require(name)
            rt = self.runtimes.of(row)
            if row.desired != "running":
                return self.store.view(row)
            log.info("%s restarts deployment %s", user, name)
            self.store.update(name, rt, state="restarting")
            self.processes.stop(rt)
            rt.failures, rt.next_start = 0, 0.0
            self.scraper.forget(name)  # the new processes' figures start afresh
            return self.monitor.launch(self.store.require(name), rt, state="restarting")

    def released_within(self, name: str, seconds: float | None) -> bool:
        """Whether the deployment's version was changed (:meth:`release`) at most
        ``seconds`` ago and it still serves that version (always true for ``None``).

        The time is read from the deployment's folder (``release.json``, see
        :meth:`_record_release`), so it holds across a ``lepton server`` restart.
        """
        if seconds is None:
            return True
        try:
            data = json.loads((self.processes.folder(name) / RELEASE_FILE).read_text())
            at, version = float(data["at"]), int(data["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return False  # never released, or the record is unreadable: no rollback
        row = self.store.row(name)
        age = time.time() - at
        return row is not None and row.version == version and 0 <= age <= seconds

    def _record_release(self, name: str, version: int | None) -> None:
        """Keep when ``version`` began to be served, in ``home/deployments/NAME/
        release.json`` (written atomically; removed with the deployment's folder), or
        forget it (``None``: a rollback, which is never rolled back)."""
        path = self.processes.folder(name) / RELEASE_FILE
        if version is None:
            path.unlink(missing_ok=True)
            return
        private_dir(path.parent)
        atomic_write_bytes(path, json.dumps({"at": time.time(), "version": version}).encode())

    def rollback(self, name: str, user: str) -> DeploymentView:
        """Serve the previous ready version of the deployment's model (the highest version
        number below the one it serves), restarting it if it runs.

        Raises:
            NotFoundError: No deployment has that name.
            DeploymentError: No earlier ready version is registered.
        """
        with self.runtimes.lock(name):
            row = self.store.require(name)
            previous = None
            for number in range(row.version - 1, 0, -1):
                try:
                    previous = self.resolve(f"{row.model_name}:{number}")
                    break
                except DeploymentError:
                    continue
            if previous is None:
                raise DeploymentError(
                    f"deployment {name!r} serves {row.model_name}:{row.version} and no earlier "
                    f"ready version of {row.model_name!r} is registered to roll back to"
                )
            log.info("%s rolls deployment %s back to %s", user, name, previous.ref)
            return self._serve(name, previous.version, f"rolled back from version "
                               f"{row.version} by {user}", released=False)  # fmt: skip

    def release(self, name: str, ref: str, user: str) -> DeploymentView:
        """Serve another version of the deployment's model from now on (``ref``: ``3``,
        ``name:3`` or ``name@production``), restarting it if it runs; :meth:`rollback`
        goes back to the one before.

        Raises:
            NotFoundError: No deployment has that name.
            DeploymentError: No ready version matches, or it is another model's.
        """
        with self.runtimes.lock(name):
            version = self.version_for(self.store.view(self.store.require(name)), ref)
            log.info("%s releases %s on deployment %s", user, version.ref, name)
            return self._serve(name, version.version, None, released=True)

    def version_for(self, view: DeploymentView, ref: str) -> ModelVersion:
        """The ready version ``ref`` (``3``, ``name:3``, ``name@production``) of the model
        that ``view`` serves.

        Raises:
            DeploymentError: No ready version matches, or it is another model's.
        """
        version = self.resolve(f"{view.model_name}:{ref}" if ref.isdigit() else ref)
        if version.name != view.model_name:
            raise DeploymentError(
                f"deployment {view.name!r} serves model {view.model_name!r}, not "
                f"{version.name!r}; create another deployment for {version.ref}"
            )
        return version

    def _serve(
        self, name: str, version: int, error: str | None, *, released: bool
    ) -> DeploymentView:
        """Pin ``version`` and restart a running deployment on it (lock held);
        ``released``: a new version (a rollback is not one: it is never rolled back)."""
        rt = self.runtimes.of(self.store.require(name))
        self.store.update(name, rt, version=version, error=error)
        self._record_release(name, version if released else None)
        row = self.store.require(name)
        if row.desired != "running":
            return self.store.view(row)
        self.store.update(name, rt, state="restarting")
        self.processes.stop(rt)
        rt.failures, rt.next_start = 0, 0.0
        self.scraper.forget(name)  # the new version's figures start afresh
        return self.monitor.launch(self.store.require(name), rt, state="restarting")
