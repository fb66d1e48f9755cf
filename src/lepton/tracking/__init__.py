"""Experiment tracking: runs with params, per-step metrics, tags, artifacts and lineage.

Example:
    >>> import lepton as lp
    >>> with lp.start_run("baseline", params={"lr": 1e-3}) as run:  # doctest: +SKIP
    ...     lp.fit(model, train, epochs=3)  # logs train_/val_ metrics per epoch
"""

from lepton.tracking._plot import plot_curves
from lepton.tracking._query import compare_runs, get_run, list_runs, metric_history
from lepton.tracking._reconcile import reconcile
from lepton.tracking._run import Run, RunRecord, active_run, resume_run, start_run
from lepton.tracking._stats import RUN_STATES, count_runs, metric_histories

__all__ = [
    "RUN_STATES",
    "Run",
    "RunRecord",
    "active_run",
    "compare_runs",
    "count_runs",
    "get_run",
    "list_runs",
    "metric_histories",
    "metric_history",
    "plot_curves",
    "reconcile",
    "resume_run",
    "start_run",
]
