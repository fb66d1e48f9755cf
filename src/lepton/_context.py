"""The tracking run that is active in this context, readable without importing tracking.

:mod:`lepton.tracking` sets it when a run starts (``with lp.start_run(...)``) and resets
it when the run ends; :func:`lepton.fit` reads it to log each epoch. Both sit in the same
layer, so neither imports the other: they meet here, through a ``ContextVar`` (each thread
and each asyncio task sees its own active run) and the small protocol of what ``fit``
asks of a run.

Example:
    >>> active_run() is None  # no run started in this context
    True
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["ActiveRun", "active_run", "forget_active_run", "reset_active_run", "set_active_run"]


class ActiveRun(Protocol):
    """What training logs into a run (:class:`lepton.tracking.Run` is one)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record hyper-parameters."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record metric values at ``step``."""
        ...

    def log_dataset(self, dataset: Any, role: str = "train") -> None:
        """Record a dataset's name, size and fingerprint (lineage)."""
        ...


_ACTIVE: contextvars.ContextVar[ActiveRun | None] = contextvars.ContextVar(
    "lepton_active_run", default=None
)


def active_run() -> ActiveRun | None:
    """The innermost run started in this context and not yet ended, if any."""
    return _ACTIVE.get()


def set_active_run(run: ActiveRun) -> contextvars.Token[ActiveRun | None]:
    """Make ``run`` the active one; pass the token to :func:`reset_active_run` at its end."""
    return _ACTIVE.set(run)


def reset_active_run(token: contextvars.Token[ActiveRun | None]) -> None:
    """Restore the run that was active before :func:`set_active_run` returned ``token``."""
    _ACTIVE.reset(token)


def forget_active_run() -> None:
    """No active run here: for a worker process forked from a process inside a run, whose
    records that process logs itself (a forked child inherits its parent's context)."""
    _ACTIVE.set(None)
