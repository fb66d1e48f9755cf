"""The tuning recipe: "search a zoo model's hyper-parameters on a catalog dataset".

``lepton tune``, the platform's tune jobs and the dashboard all run this recipe with a
:class:`TuneConfig`, whose defaults are defined here once: the catalog's training split
(its holdout for validation, the same rows as ``lepton train`` uses) -> :func:`tune`
(model form) -> the best model registered when asked.

Example:
    >>> config = TuneConfig.checked(
    ...     model="mlp", data="digits", epochs=3, n_trials=10,
    ...     space={"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}},
    ... )
    >>> result = run(config)  # doctest: +SKIP
    >>> result.best_params  # doctest: +SKIP
    {'lr': 0.0042}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from lepton.errors import SearchSpaceError
from lepton.storage import Database
from lepton.train.recipe import HOLDOUT, RecipeConfig, catalog_name, load_data
from lepton.tune._result import TuneResult
from lepton.tune._space import space_from_json
from lepton.tune._study import tune

__all__ = ["TuneConfig", "run"]

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class TuneConfig(RecipeConfig):
    """What to tune: a zoo model (or a ``model`` entry in the space), the search space
    in its JSON form, a catalog dataset, and the study's budget and strategy.

    Values are checked strictly and the instance is frozen; the platform's ``TuneJob`` is
    this class plus its ``kind``.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, serialize_by_alias=True)

    model: str | None = Field("mlp", description="Zoo model, unless the space picks it.")
    space: dict[str, Any] = Field(
        description="Search space (JSON form: {name: {type, low, high, log} | {type: "
        "categorical, choices, when}})."
    )
    data: str = Field("digits", description="Catalog dataset (`lepton data list`).")
    limit: int | None = Field(None, ge=1, le=100_000_000, description="Use N training rows.")
    epochs: int = Field(3, ge=1, le=1000, description="Epochs per trial (pruning may cut).")
    batch_size: int = Field(64, ge=1, le=65536)
    metric: str = Field("val_accuracy", pattern=r"^(val|train)_[a-z0-9_]{1,40}$")
    n_trials: int = Field(20, ge=1, le=100_000)
    timeout_s: float | None = Field(None, gt=0, le=30 * 24 * 3600)
    sampler: Literal["tpe", "random", "cmaes", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int = Field(0, ge=0, le=2**32 - 1)
    workers: int = Field(1, ge=1, le=64, description="Trials in parallel (processes).")
    study: str | None = Field(None, pattern=NAME, description="Resumes a study of this name.")
    register_as: str | None = Field(
        None, alias="register", description="Register the best model under this name."
    )

    @field_validator("data")
    @classmethod
    def _known_data(cls, value: str) -> str:
        return catalog_name(value)

    @field_validator("space")
    @classmethod
    def _valid_space(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            space_from_json(value)
        except SearchSpaceError as exc:
            raise ValueError(exc.message) from None
        return value


def run(
    config: TuneConfig,
    *,
    study: str | None = None,
    database: Database | None = None,
    on_trial: Callable[[TuneResult], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> TuneResult:
    """Run the study ``config`` describes (resuming it when it exists).

    Args:
        config: What to tune.
        study: The study's name when ``config.study`` is unset (a platform job passes
            ``job-ID``, so a retried job resumes its own study).
        database: The metadata database.
        on_trial: Called after every finished trial with the study so far.
        say: Receives one line at each step, e.g. ``print``.
    """
    tell = say or (lambda _: None)
    full = load_data(config.data, "train", config.limit)
    train, val = full.split(test_size=HOLDOUT, seed=0)
    tell(
        f"tune {config.model or 'the space’s models'} on {config.data}: {len(train)} train / "
        f"{len(val)} val samples, {config.n_trials} trials of up to {config.epochs} epochs "
        f"({config.sampler}, {config.pruner} pruning, {config.workers} worker(s))"
    )
    result = tune(
        space_from_json(config.space), train, val, model=config.model, metric=config.metric,
        epochs=config.epochs, n_trials=config.n_trials, timeout_s=config.timeout_s,
        sampler=config.sampler, pruner=config.pruner, seed=config.seed,
        workers=config.workers, study=config.study or study, register=config.register_as,
        fit_options={"batch_size": config.batch_size}, database=database, on_trial=on_trial,
    )  # fmt: skip
    return result
