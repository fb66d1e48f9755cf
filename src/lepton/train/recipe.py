"""The training recipe: one definition of "train a zoo model on a catalog dataset".

``lepton train``, the platform's train jobs and the dashboard's job form all run this
recipe with a :class:`TrainConfig`, whose defaults are defined here and nowhere else:
data -> model -> fit -> evaluate on the test split -> save -> register, tracked as one run.

What to train is the config (plain, JSON-safe values that may travel to a server); where
on this machine (checkpoint folder, output folder, database) is given to :func:`run`.

The registry sits one layer above training, so the recipe does not import it: a caller
that registers passes ``registrar=lepton.registry.register``.

Example:
    >>> from lepton.registry import register
    >>> config = TrainConfig(model="mlp", data="digits", epochs=2, register="digits-mlp")
    >>> outcome = run(config, registrar=register)  # doctest: +SKIP
    >>> outcome.registered, round(outcome.metrics["accuracy"], 2)  # doctest: +SKIP
    ('digits-mlp:1', 0.95)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from lepton import data as lp_data
from lepton import models as lp_models
from lepton.data import Dataset
from lepton.errors import ConfigError
from lepton.storage import Database
from lepton.tracking import Run, start_run
from lepton.train._callbacks import Callback, EpochRecord, TrainState
from lepton.train._checkpoint import latest_epoch
from lepton.train._fit import FitResult, fit
from lepton.train._metrics import evaluate
from lepton.train._progress import format_metrics
from lepton.train._recipe_parts import HOLDOUT as HOLDOUT  # re-exported: tune uses it
from lepton.train._recipe_parts import build_model, load_data, save_model, splits
from lepton.train._registering import (
    Registered,
    Registrar,
    register_when_asked,
    require_registrar,
)

__all__ = [
    "RecipeConfig",
    "Registered",
    "Registrar",
    "TrainConfig",
    "TrainOutcome",
    "build_model",
    "catalog_name",
    "load_data",
    "problems",
    "register_when_asked",
    "require_registrar",
    "run",
    "save_model",
    "trainable_datasets",
]

JsonScalar: TypeAlias = str | int | float | bool | None
ConfigValue: TypeAlias = JsonScalar | list[JsonScalar]
_C = TypeVar("_C", bound="RecipeConfig")


# catalog entries that do not load as a Dataset of tensors, and what trains on them
_NOT_TENSORS = {
    "ratings": "a ratings table (user, item, rating): fit it with lp.recommend.Recommender "
    "or a recommend job",
    "text": "a text corpus: use lp.text (TextClassifier, embed, Index)",
    "series": "a time series with a labelled anomaly: use lp.monitor.AnomalyDetector",
}


def trainable_datasets() -> list[str]:
    """The catalog datasets a train job can name (those that load as tensors)."""
    return [d.name for d in lp_data.list_datasets() if d.loads == "tensors"]


def catalog_name(value: str) -> str:
    """A catalog dataset's name as the catalog spells it (``Fashion_MNIST`` ->
    ``fashion-mnist``); a ``ValueError`` lists the catalog for an unknown one."""
    key = value.strip().lower().replace("_", "-")
    info = {d.name: d for d in lp_data.list_datasets()}.get(key)
    if info is not None and info.loads != "tensors":
        raise ValueError(f"{key!r} is {_NOT_TENSORS[info.loads]}; train jobs cannot use it")
    names = trainable_datasets()
    if key not in names:
        raise ValueError(
            f"unknown dataset {value!r}; use one of {', '.join(names)} (`lepton data list`)"
        )
    return key


class RecipeConfig(BaseModel):
    """The base of every recipe's config (train, tune, compress, graph, ...): a pydantic
    model with :meth:`checked`."""

    @classmethod
    def checked(cls: type[_C], **values: Any) -> _C:
        """Like the constructor, but a bad value raises :class:`~lepton.errors.ConfigError`
        (one line per field) instead of pydantic's ``ValidationError``.

        Example:
            >>> TrainConfig.checked(epochs=0)  # doctest: +SKIP
            ConfigError: epochs: Input should be greater than or equal to 1
        """
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(problems(exc)) from None


class TrainConfig(RecipeConfig):
    """What to train: a zoo model, a catalog dataset and the hyper-parameters of ``fit``.

    Values are checked strictly (no ``"3"`` for 3) and the instance is frozen. The
    platform's :class:`~lepton.platform.jobs._specs.TrainJob` is this class plus its ``kind``, so
    the CLI, the API and the dashboard share every default.

    Attributes:
        model: Zoo model (``lepton models zoo``).
        config: Model arguments, e.g. ``{"dropout": 0.3}``; input and output sizes that
            follow from the data are filled in (:func:`build_model`).
        data: Catalog dataset (``lepton data list``).
        limit: Train on the first N samples of the training split (all when ``None``).
        val: ``"holdout"``: validate on 1/12 of the training split (the same rows for
            every seed, so runs compare); ``"test"``: on the test split; ``"none"``.
        epochs, batch_size, optimizer, lr, weight_decay, schedule, early_stopping,
            grad_clip: As :func:`lepton.fit` takes them.
        seed: Seeds the initial weights, shuffling and dropout.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        register_as: Register the result under this model name (``"register"`` in JSON).
        workers: Train data-parallel in this many processes (``fit(workers=...)``); the
            global batch stays ``batch_size``, which must split evenly over them.
    """

    # "register" is the field's name on the wire; as an attribute it would shadow
    # BaseModel.register (from ABCMeta)
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, serialize_by_alias=True)

    model: str = Field("convnet", description="Zoo model (`lepton models zoo`).")
    config: dict[str, ConfigValue] = Field(
        default_factory=dict, max_length=32, description="Model arguments, e.g. dropout."
    )
    data: str = Field("mnist", description="Catalog dataset (`lepton data list`).")
    limit: int | None = Field(None, ge=1, le=100_000_000, description="Train on N samples.")
    val: Literal["holdout", "test", "none"] = "holdout"
    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    optimizer: Literal["adamw", "adam", "sgd", "adagrad", "rmsprop"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float | None = Field(None, ge=0, le=1, description="None: 0.01 for adamw.")
    schedule: Literal["cosine", "onecycle", "step", "plateau"] | None = None
    early_stopping: int | None = Field(None, ge=1, le=1000, description="Patience in epochs.")
    grad_clip: float | None = Field(None, gt=0, le=1e6)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]{1,2})?)$")
    register_as: str | None = Field(
        None, alias="register", description="Register the result under this model name."
    )
    workers: int = Field(
        1, ge=1, le=64, description="Data-parallel training processes (lp.fit workers=)."
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in lp_models.available_models():
            raise ValueError(
                f"unknown model {value!r}; use one of {', '.join(lp_models.available_models())}"
            )
        return value

    @field_validator("data")
    @classmethod
    def _known_data(cls, value: str) -> str:
        return catalog_name(value)

    @model_validator(mode="after")
    def _config_fits_model(self) -> TrainConfig:
        accepted = lp_models.model_parameters(self.model)
        unknown = sorted(set(self.config) - set(accepted))
        if unknown:
            raise ValueError(
                f"config keys {unknown} are not arguments of {self.model!r}; it takes "
                f"{', '.join(accepted)}"
            )
        if any(isinstance(v, list) and len(v) > 64 for v in self.config.values()):
            raise ValueError("config lists hold at most 64 values")
        return self


def problems(exc: ValidationError) -> str:
    """A pydantic error as one line per field (``"epochs: Input should be ..."``)."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


@dataclass(frozen=True)
class TrainOutcome:
    """What :func:`run` returns.

    Attributes:
        config: The config it ran.
        model: The trained model (on the device it trained on).
        train_data: The data it trained on (after ``limit`` and the holdout).
        test_data: The test split it was evaluated on.
        metrics: Test metrics (accuracy, f1, loss, ...).
        fit: What ``fit`` returned (history, throughput).
        run_id: The tracking run, when tracked.
        resumed_from_epoch: The checkpoint's epoch it continued from, ``0`` when fresh.
        saved: The output folder, when ``save_to`` was given.
        registered: The registered version's reference (``"name:1"``), when registered.
    """

    config: TrainConfig
    model: nn.Module
    train_data: Dataset
    test_data: Dataset
    metrics: dict[str, float]
    fit: FitResult
    run_id: int | None
    resumed_from_epoch: int
    saved: Path | None
    registered: str | None


class _EachEpoch(Callback):
    in_caller = True  # fit(workers=N) calls it in this process with each epoch's record

    def __init__(self, hook: Callable[[EpochRecord], None]) -> None:
        self.hook = hook

    def on_epoch_end(self, state: TrainState) -> None:
        self.hook(state.history[-1])


def run(
    config: TrainConfig,
    *,
    registrar: Registrar | None = None,
    save_to: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    track: bool = True,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    database: Database | None = None,
    on_start: Callable[[Run], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    say: Callable[[str], None] | None = None,
    quiet: bool = False,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_transform: Callable[..., Any] | None = None,
    loss: Callable[..., Any] | None = None,
    extra_metrics: Callable[[nn.Module, Dataset], Mapping[str, float]] | None = None,
) -> TrainOutcome:
    """Train, test, save and register as ``config`` says, tracked as one run.

    Args:
        config: What to train.
        registrar: Registers the result when ``config.register_as`` is set, e.g.
            :func:`lepton.registry.register`.
        save_to: A new folder for the weights and manifest (:func:`save_model`).
        checkpoint_dir: Checkpoint every epoch here.
        resume: Continue from the newest checkpoint in ``checkpoint_dir`` if there is
            one (a fresh start when there is none).
        track: Record a tracking run (params, per-epoch and test metrics).
        run_name: The run's name (default ``"MODEL-DATA"``).
        tags: The run's tags.
        database: The metadata database for the run and the registry.
        on_start: Called with the run once it exists, before training.
        on_epoch: Called after every epoch with its record.
        say: Receives one line at each step (what trains, a resume, the test metrics,
            the registered version), e.g. ``print``.
        quiet: No progress bar or epoch lines from ``fit``.
        augment: A per-batch transform of the training images (augmentation on the fly,
            e.g. ``lp.vision.Augment``); validation and test data are left as they are.
        batch_transform: ``lp.fit``'s ``batch_transform=`` (mixup, cutmix).
        loss: ``lp.fit``'s ``loss=`` (e.g. label smoothing).
        extra_metrics: Called with the trained model and the test split; its metrics
            (e.g. test-time augmentation's accuracy) join the test metrics before they
            are logged and registered.

    Returns:
        The :class:`TrainOutcome`.

    Raises:
        ConfigError: ``register_as`` without a ``registrar``, or ``save_to`` exists.
        LeptonError: Whatever loading, training or registering raises.
    """
    tell = say or (lambda _: None)
    require_registrar(config, registrar)
    if save_to is not None and save_to.exists():  # before the training, not after it
        raise ConfigError(f"{save_to} already exists; save to a new folder")
    train_ds, val_ds, test = splits(config.data, limit=config.limit, val=config.val)
    tell(f"train {config.model} on {config.data}: {len(train_ds)} samples, {config.epochs} epochs")
    torch.manual_seed(config.seed)  # the seed covers the initial weights too
    net = build_model(config.model, train_ds, config.config)
    resumed = latest_epoch(checkpoint_dir) if resume and checkpoint_dir is not None else 0
    if resumed:
        tell(f"resuming from the checkpoint of epoch {resumed}")
    with contextlib.ExitStack() as stack:
        tracked = None
        if track:
            name = run_name or f"{config.model}-{config.data}"
            recipe = {"recipe": config.model_dump(mode="json", by_alias=True)}  # all of it
            tracked = stack.enter_context(
                start_run(name, params=recipe, tags=tags, database=database)
            )
            if on_start is not None:
                on_start(tracked)
        fit_train = train_ds.with_transform(augment) if augment is not None else train_ds
        result = fit(
            net, fit_train, val_ds, epochs=config.epochs, batch_size=config.batch_size,
            optimizer=config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
            schedule=config.schedule, early_stopping=config.early_stopping,
            grad_clip=config.grad_clip, seed=config.seed, device=config.device,
            checkpoint_dir=checkpoint_dir, resume=resume and checkpoint_dir is not None,
            callbacks=[_EachEpoch(on_epoch)] if on_epoch is not None else (), quiet=quiet,
            workers=config.workers if config.workers > 1 else None,
            batch_transform=batch_transform, loss=loss,
        )  # fmt: skip
        metrics = evaluate(net, test)
        if extra_metrics is not None:
            metrics = {**metrics, **extra_metrics(net, test)}
        tell(f"test ({len(test)} samples): {format_metrics(metrics)}")
        if tracked is not None:
            tracked.log_metrics(
                {f"test_{k}": v for k, v in metrics.items()}, step=len(result.history)
            )
        saved = save_model(save_to, net, train_ds, metrics, result) if save_to else None
        registered = register_when_asked(
            config, registrar, net, say=tell, metrics=metrics, dataset=train_ds, run=tracked,
            database=database,
        )  # fmt: skip
    return TrainOutcome(
        config=config, model=net, train_data=train_ds, test_data=test, metrics=metrics,
        fit=result, run_id=tracked.id if tracked is not None else None,
        resumed_from_epoch=resumed, saved=saved, registered=registered,
    )  # fmt: skip
