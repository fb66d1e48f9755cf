"""The recommend recipe: "train a recommender on MovieLens, test it, register it".

``lepton recommend train`` and a platform ``recommend`` job run this recipe with a
:class:`RecommendConfig`, whose defaults are defined here once: MovieLens-small (its first
``users`` users, when set) -> a random or per-user temporal split -> a
:class:`~lepton.recommend.Recommender` -> RMSE/MAE and ranking metrics at ``k`` on the
held-out ratings -> registered when asked. Everything is logged to one tracking run.

Example:
    >>> config = RecommendConfig.checked(factors=32, epochs=10, register="movies")
    >>> result = run(config, registrar=lp.register)  # doctest: +SKIP
    >>> result.metrics["rmse"]  # doctest: +SKIP
    0.88
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from lepton import data as lp_data
from lepton.recommend._recommender import ALGORITHMS, Recommender
from lepton.storage import Database
from lepton.tracking import start_run
from lepton.train.recipe import RecipeConfig, register_when_asked, require_registrar

__all__ = ["RATINGS_DATASETS", "RatingsRecord", "RecommendConfig", "RecommendResult", "run"]


#: Catalog datasets of ratings a recommender trains on (``lp.data.load`` names).
RATINGS_DATASETS = ("movielens",)


class RecommendConfig(RecipeConfig):
    """What to train: the ratings, how to split them, and the recommender's settings.
    Checked strictly and frozen; a platform ``RecommendJob`` is this class plus its
    ``kind``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, serialize_by_alias=True)

    data: Literal["movielens"] = Field(
        "movielens", description="Ratings dataset (MovieLens-small, `lepton data show movielens`)."
    )
    users: int | None = Field(
        None, ge=2, le=100_000_000, description="Use only the ratings of the first N users."
    )
    split: Literal["random", "temporal"] = Field(
        "random", description="Random rows, or each user's latest ratings, to test."
    )
    test_size: float = Field(0.2, gt=0, lt=1, description="Share of ratings held out.")
    feedback: Literal["explicit", "implicit"] = Field(
        "explicit", description="Ratings (matrix factorization) or interactions (ALS, BPR)."
    )
    algorithm: Literal["bayes", "sgd", "als", "bpr", "implicit-als"] | None = Field(
        None,
        description="bayes (default) or sgd for ratings; als (default), bpr or implicit-als "
        "for interactions.",
    )
    factors: int | None = Field(
        None, ge=1, le=4096, description="Latent dimension (empty: the algorithm's default)."
    )
    epochs: int | None = Field(
        None, ge=1, le=10_000, description="Epochs or sweeps (empty: the algorithm's default)."
    )
    lr: float | None = Field(None, gt=0, le=10, description="Adam learning rate (sgd, bpr).")
    reg: float | None = Field(
        None, ge=0, le=1e3, description="L2 weight (empty: the algorithm's default)."
    )
    batch_size: int = Field(4096, ge=1, le=1_000_000, description="Ratings per step.")
    k: int = Field(10, ge=1, le=1000, description="Cut-off of the ranking metrics.")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    register_as: str | None = Field(
        None, alias="register", description="Register the model under this name."
    )

    @model_validator(mode="after")
    def _algorithm_fits_feedback(self) -> RecommendConfig:
        if self.algorithm is not None and self.algorithm not in ALGORITHMS[self.feedback]:
            raise ValueError(
                f"algorithm {self.algorithm!r} does not fit feedback {self.feedback!r}; "
                f"choose one of {list(ALGORITHMS[self.feedback])}"
            )
        return self


@dataclass(frozen=True)
class RatingsRecord:
    """What the registry records of the training ratings (name, rows, fingerprint: the
    version's lineage); ``input_shape`` is a ``(user, item)`` pair. Serving reads the
    catalog's titles back by this name."""

    ratings: Any

    @property
    def name(self) -> str:
        return str(self.ratings.name)

    @property
    def input_shape(self) -> list[int]:
        return [2]

    def __len__(self) -> int:
        return len(self.ratings)

    def fingerprint(self) -> str:
        return str(self.ratings.fingerprint())


@dataclass
class RecommendResult:
    """What a recommend run measured and made."""

    metrics: dict[str, float]
    losses: list[float]
    users: int
    items: int
    train_ratings: int
    test_ratings: int
    seconds: float
    run_id: int | None = None
    registered: str | None = None
    recommender: Recommender | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe, without the fitted model."""
        return {
            "metrics": self.metrics, "losses": self.losses, "users": self.users,
            "items": self.items, "train_ratings": self.train_ratings,
            "test_ratings": self.test_ratings, "seconds": self.seconds, "run_id": self.run_id,
            "registered": self.registered,
        }  # fmt: skip


def load_ratings(config: RecommendConfig) -> Any:
    """The ratings ``config`` names (the first ``users`` users, when set)."""
    ratings = lp_data.load(config.data, split="all")
    if config.users is not None:
        keep = np.unique(ratings.user)[: config.users]
        ratings = ratings.take(np.isin(ratings.user, keep))
    return ratings


def run(
    config: RecommendConfig,
    *,
    registrar: Callable[..., Any] | None = None,
    database: Database | None = None,
    say: Callable[[str], None] | None = None,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    on_run: Callable[[int], None] | None = None,
) -> RecommendResult:
    """Train, test and (when ``config.register_as`` is set) register a recommender,
    tracked as one run.

    Args:
        config: What to train.
        registrar: Registers the model, e.g. :func:`lepton.registry.register` (the
            registry sits above this package, so it is passed in).
        database: The metadata database for the run and the registry.
        say: Receives one line at each step, e.g. ``print``.
        run_name: The tracking run's name.
        tags: The tracking run's tags.
        on_run: Called with the run's id as soon as it starts.

    Raises:
        ConfigError: ``register`` is set but no ``registrar`` was given.
    """
    tell = say or (lambda _: None)
    require_registrar(config, registrar)
    started = time.perf_counter()
    ratings = load_ratings(config)
    if config.split == "temporal":
        train, test = ratings.temporal_split(config.test_size)
    else:
        train, test = ratings.split(config.test_size, seed=config.seed)
    tell(
        f"{config.data}: {len(ratings):,} ratings by {ratings.n_users:,} users of "
        f"{ratings.n_items:,} movies; {config.split} split, {len(train):,} to train, "
        f"{len(test):,} to test"
    )
    name = run_name or f"recommend-{config.data}-{config.feedback}"
    params = config.model_dump(mode="json", by_alias=True)
    with start_run(name, params=params, tags=tags, database=database) as tracked:
        if on_run is not None:
            on_run(tracked.id)
        tracked.log_dataset(train, "train")
        tracked.log_dataset(test, "test")
        rec = Recommender(
            config.feedback, algorithm=config.algorithm, factors=config.factors,
            epochs=config.epochs, lr=config.lr, reg=config.reg,
            batch_size=config.batch_size, seed=config.seed,
        )  # fmt: skip
        tell(
            f"training {config.feedback} ({rec.algorithm}) factors={rec.factors} for "
            f"{rec.epochs} epochs"
        )
        fit_started = time.perf_counter()
        rec.fit(train)
        fit_seconds = time.perf_counter() - fit_started
        for epoch, loss in enumerate(rec.losses, start=1):
            tracked.log_metrics({"train_loss": loss}, step=epoch)
            tell(f"epoch {epoch}/{rec.epochs}: loss {loss:.4f}")
        metrics = rec.score(test, k=config.k)
        tracked.log_metrics({f"test_{key}": value for key, value in metrics.items()}, step=0)
        tracked.log_metrics({"fit_seconds": fit_seconds}, step=0)
        tell("test: " + ", ".join(f"{key} {value:.4f}" for key, value in metrics.items()))
        registered = register_when_asked(
            config, registrar, rec.model, say=tell, metrics=metrics, dataset=RatingsRecord(train),
            run=tracked, database=database,
            description=f"{config.feedback} recommender on {config.data} "
            f"({config.split} split)",
        )  # fmt: skip
        model = rec.model
        assert model is not None
        return RecommendResult(
            metrics=metrics, losses=list(rec.losses), users=len(model.user_ids),
            items=len(model.item_ids), train_ratings=len(train), test_ratings=len(test),
            seconds=time.perf_counter() - started, run_id=tracked.id, registered=registered,
            recommender=rec,
        )  # fmt: skip
