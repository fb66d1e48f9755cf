"""Optuna, as Lepton uses it: imported on first use, its storage on Lepton's own metadata
database, and the samplers and pruners by name.

Studies live in the same database as runs and models (``LEPTON_DATABASE_URL``, SQLite
or PostgreSQL). Optuna's tables (``studies``, ``trials``, ``trial_params``, ...; none of
them clash with Lepton's) are created by Optuna's own models the first time a study is
made. Optuna would also record its schema in ``alembic_version``, the table Lepton's
migrations use, so its check of that table is skipped and this module checks Optuna's
``version_info`` row instead: a database made by another Optuna schema gets a clear
error, not a silent mix.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
import warnings
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from lepton._procs import pid_alive
from lepton.errors import MissingExtraError, SearchSpaceError, TuneError
from lepton.storage import Database, sqlite_pragmas
from lepton.tune._space import Space, grid

if TYPE_CHECKING:
    import optuna

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "fail_dead_trials",
    "import_optuna",
    "make_pruner",
    "make_sampler",
    "storage_for",
]

SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("median", "hyperband", "none")


def import_optuna() -> Any:
    """The ``optuna`` module, or a :class:`MissingExtraError` that says what to install."""
    try:
        import optuna
    except ImportError:
        raise MissingExtraError(
            "tuning needs Optuna: pip install 'lepton[tune]' (or pip install optuna)"
        ) from None
    # a failed trial is reported by lp.tune itself (with its reason), without Optuna's
    # traceback on every one
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


@functools.cache
def _storage(url: str) -> optuna.storages.RDBStorage:
    import_optuna()
    import optuna
    from optuna.storages._rdb import models

    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 30}}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_compatibility_check=True)
    if url.startswith("sqlite"):  # WAL and a relaxed fsync, as Lepton's own connections
        event.listen(storage.engine, "connect", sqlite_pragmas)
        storage.engine.dispose()  # connections made before the listener get it next time
    with storage.engine.connect() as conn:
        found = conn.execute(models.VersionInfoModel.__table__.select()).first()
    if found is not None and found.schema_version != models.SCHEMA_VERSION:
        raise TuneError(
            f"the studies in this database were written by Optuna {found.library_version} "
            f"(schema {found.schema_version}); this Optuna {optuna.__version__} needs schema "
            f"{models.SCHEMA_VERSION}: install that Optuna version, or run "
            f"`optuna storage upgrade --storage URL` on a copy first"
        )
    return storage


def storage_for(db: Database) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on ``db``'s URL (one per URL and process)."""
    return _storage(db.url)


def make_sampler(name: str, space: Space, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` (one of :data:`SAMPLERS`), seeded."""
    import_optuna()
    import optuna

    if name == "tpe":
        # multivariate + group: TPE models parameters jointly and handles conditional
        # sub-spaces, which independent TPE does poorly
        with warnings.catch_warnings():  # `group` is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, n_startup_trials=5
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid(space), seed=seed)
    if name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise MissingExtraError(
                "sampler='cmaes' needs the cmaes package: pip install 'lepton[tune]' "
                "(or pip install cmaes)"
            )
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise SearchSpaceError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, max_steps: int) -> optuna.pruners.BasePruner:
    """The pruner called ``name`` (one of :data:`PRUNERS`) for trials of ``max_steps``
    reported steps (epochs)."""
    import_optuna()
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(max_steps, 1), reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SearchSpaceError(f"unknown pruner {name!r}; use one of {', '.join(PRUNERS)}")


def mark_owner(trial: optuna.Trial) -> None:
    """Record which process runs ``trial``, so a crash can be recognized later."""
    trial.set_user_attr("lepton.host", socket.gethostname())
    trial.set_user_attr("lepton.pid", os.getpid())


def fail_dead_trials(study: optuna.Study) -> int:
    """Mark ``RUNNING`` trials whose process on this host is gone (``kill -9``, a power
    cut) as failed, so a resumed study neither waits for them nor counts them. Returns
    how many were marked."""
    optuna = import_optuna()
    host, marked = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = trial.user_attrs.get("lepton.pid")
        if trial.user_attrs.get("lepton.host") != host or not isinstance(pid, int):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            marked += 1
    return marked
