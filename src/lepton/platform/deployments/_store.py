"""The ``deployments`` rows: the one place that reads and writes them.

A row holds what should be (``desired``, the pinned version, ``replicas``, ``port``) and
what was last seen (``state``, ``pid``, ``restarts``, ``error``). Every change goes
through :meth:`DeploymentStore.update`, which also mirrors ``desired`` and ``state``
into the deployment's :class:`~lepton.platform.deployments._runtime.Runtime`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as RowConflict

from lepton.errors import ConflictError, NotFoundError
from lepton.platform.deployments._runtime import Runtime
from lepton.platform.deployments._specs import DeploymentView, view_of
from lepton.storage import Database
from lepton.storage.schema import DeploymentRow

if TYPE_CHECKING:
    from lepton.registry import ModelVersion

__all__ = ["DeploymentStore"]


class DeploymentStore:
    """Create, list, get, update and delete the ``deployments`` rows.

    Args:
        db: The metadata database.
        host: The address deployments listen on (for the URL of each view).
    """

    def __init__(self, db: Database, host: str) -> None:
        self.db = db
        self.host = host

    def insert(
        self,
        *,
        name: str,
        model_ref: str,
        version: ModelVersion,
        replicas: int,
        user: str,
        port_for: Callable[[dict[int, str]], int],
    ) -> DeploymentRow:
        """Add a running deployment of ``version``, ``starting``.

        Args:
            port_for: Chooses its port, given the ports taken (port -> deployment);
                called inside the transaction, so two creations cannot take one port.

        Raises:
            ConflictError: The name (or the port) is taken.
        """
        now = time.time()
        try:
            with self.db.session() as s:
                if s.get(DeploymentRow, name) is not None:
                    raise ConflictError(
                        f"a deployment named {name!r} already exists; pick another name, "
                        f"or delete it first"
                    )
                taken = {p: n for n, p in s.execute(select(DeploymentRow.name, DeploymentRow.port))}
                row = DeploymentRow(
                    name=name, model_ref=model_ref, model_name=version.name,
                    version=version.version, replicas=replicas, port=port_for(taken),
                    desired="running", state="starting", pid=None, restarts=0, error=None,
                    created_by=user, created_at=now, updated_at=now,
                )  # fmt: skip
                s.add(row)
        except RowConflict:
            raise ConflictError(
                f"deployment {name!r} or its port was taken by a request at the same moment; retry"
            ) from None
        return row

    def page(self, offset: int, limit: int) -> tuple[list[DeploymentView], int]:
        """A page of deployments, oldest first, and how many there are in all."""
        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(DeploymentRow)) or 0
            rows = s.scalars(
                select(DeploymentRow)
                .order_by(DeploymentRow.created_at, DeploymentRow.name)
                .offset(max(0, offset))
                .limit(max(0, limit))
            )
            return [view_of(row, self.host) for row in rows], int(total)

    def names(self) -> list[str]:
        """Every deployment's name, sorted."""
        with self.db.session() as s:
            return list(s.scalars(select(DeploymentRow.name).order_by(DeploymentRow.name)))

    def row(self, name: str) -> DeploymentRow | None:
        """A detached copy of ``name``'s row, ``None`` when there is none."""
        with self.db.session() as s:
            row = s.get(DeploymentRow, name)
            if row is not None:
                s.expunge(row)
            return row

    def require(self, name: str) -> DeploymentRow:
        """Like :meth:`row`.

        Raises:
            NotFoundError: No deployment has that name.
        """
        row = self.row(name)
        if row is None:
            raise NotFoundError(
                f"no deployment named {name!r}; list them with GET /api/v1/deployments"
            )
        return row

    def view(self, row: DeploymentRow) -> DeploymentView:
        """``row`` as the API shows it."""
        return view_of(row, self.host)

    def update(self, name: str, rt: Runtime | None, **values: Any) -> DeploymentView:
        """Set columns of ``name``'s row (and ``updated_at``); mirror its ``desired`` and
        ``state`` into ``rt``.

        Raises:
            NotFoundError: The deployment was deleted meanwhile.
        """
        with self.db.session() as s:
            row = s.get(DeploymentRow, name)
            if row is None:
                raise NotFoundError(f"deployment {name!r} was deleted meanwhile")
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = time.time()
            view = view_of(row, self.host)
        if rt is not None:
            rt.state, rt.desired = view.state, view.desired
        return view

    def delete(self, name: str) -> None:
        """Remove ``name``'s row, if there is one."""
        with self.db.session() as s:
            found = s.get(DeploymentRow, name)
            if found is not None:
                s.delete(found)
