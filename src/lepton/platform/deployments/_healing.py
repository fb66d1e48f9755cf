"""Remediation of a deployment: replace its processes, or roll it back a version.

:class:`Healer` does what the AIOps rules' ``restart`` and ``rollback`` actions ask (and
what an operator may call through the manager); ``scale`` is the manager's own
:meth:`~._manager.DeploymentManager.scale`. Each takes the deployment's lock, like every
change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from lepton.errors import DeploymentError
from lepton.platform.deployments._monitor import Monitor
from lepton.platform.deployments._process import ProcessControl
from lepton.platform.deployments._runtime import Runtimes
from lepton.platform.deployments._scraper import MetricsScraper
from lepton.platform.deployments._specs import DeploymentView
from lepton.platform.deployments._store import DeploymentStore

if TYPE_CHECKING:
    from lepton.registry import ModelVersion

__all__ = ["Healer"]

log = logging.getLogger("lepton.platform.deployments")


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
            return self.monitor.launch(self.store.require(name), rt, state="restarting")

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
            rt = self.runtimes.of(row)
            log.info("%s rolls deployment %s back to %s", user, name, previous.ref)
            self.store.update(
                name, rt, version=previous.version,
                error=f"rolled back from version {row.version} by {user}",
            )  # fmt: skip
            if row.desired != "running":
                return self.store.view(self.store.require(name))
            self.store.update(name, rt, state="restarting")
            self.processes.stop(rt)
            rt.failures, rt.next_start = 0, 0.0
            self.scraper.forget(name)  # the new version's figures start afresh
            return self.monitor.launch(self.store.require(name), rt, state="restarting")
