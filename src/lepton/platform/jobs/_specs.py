"""What a job is: its typed spec (:class:`TrainJob`, :class:`EvaluateJob`, never a shell
string), what it asks of the scheduler (:class:`JobRequest`), its states, and how the API
shows it (:class:`JobView`).

States: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled`` |
``lost``; ``running`` -> ``cancelling`` -> ``cancelled``. See :mod:`lepton.platform.jobs._scheduler`
for what moves a job between them.

Example:
    >>> request = JobRequest(spec=TrainJob(model="mlp", epochs=2), cpus=2)  # doctest: +SKIP
    >>> request.spec.model_dump(mode="json")["kind"]  # doctest: +SKIP
    'train'
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lepton import data as lp_data
from lepton import models as lp_models
from lepton.errors import RegistryError
from lepton.registry._registry import validate_name
from lepton.storage.schema import JobRow

__all__ = [
    "ACTIVE",
    "DETERMINISTIC_EXIT",
    "STATES",
    "TERMINAL",
    "EvaluateJob",
    "JobRequest",
    "JobSpec",
    "JobState",
    "JobView",
    "TrainJob",
]

JobState: TypeAlias = Literal[
    "queued", "running", "cancelling", "succeeded", "failed", "cancelled", "lost"
]
STATES: tuple[JobState, ...] = get_args(JobState)
ACTIVE: tuple[JobState, ...] = ("running", "cancelling")  # a worker process exists
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "lost"})
DETERMINISTIC_EXIT = 3  # the worker's exit code for a failure that a retry would repeat

# -- specs ------------------------------------------------------------------------------
JsonScalar: TypeAlias = str | int | float | bool | None
ConfigValue: TypeAlias = JsonScalar | list[JsonScalar]
_MODEL_REF = r"^[a-z0-9][a-z0-9._-]{0,99}(:[0-9]{1,9}|@[a-z0-9_-]{1,64})?$"


def _dataset_name(value: str) -> str:
    names = [d.name for d in lp_data.list_datasets()]
    key = value.strip().lower().replace("_", "-")
    if key not in names:
        raise ValueError(
            f"unknown dataset {value!r}; use one of {', '.join(names)} (`lepton data list`)"
        )
    return key


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TrainJob(_Spec):
    """Train a zoo model on a catalog dataset, test it, save it, optionally register it.

    Example: ``{"kind": "train", "model": "mlp", "data": "mnist", "epochs": 2}``.
    """

    model_config = ConfigDict(serialize_by_alias=True)

    kind: Literal["train"] = "train"
    model: str = Field("convnet", description="Zoo model (`lepton models zoo`).")
    data: str = Field("mnist", description="Catalog dataset (`lepton data list`).")
    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    optimizer: Literal["adamw", "adam", "sgd", "adagrad", "rmsprop"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float | None = Field(None, ge=0, le=1, description="None: 0.01 for adamw.")
    schedule: Literal["cosine", "onecycle", "step", "plateau"] | None = None
    early_stopping: int | None = Field(None, ge=1, le=1000, description="Patience in epochs.")
    grad_clip: float | None = Field(None, gt=0, le=1e6)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    val: Literal["holdout", "test", "none"] = "holdout"
    config: dict[str, ConfigValue] = Field(
        default_factory=dict, max_length=32, description="Model arguments, e.g. dropout."
    )
    # "register" is the field's name on the wire; as an attribute it would shadow
    # BaseModel.register (from ABCMeta)
    register_as: str | None = Field(
        None, alias="register", description="Register the result under this model name."
    )
    limit: int | None = Field(None, ge=1, le=100_000_000, description="Train on N samples.")

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
        return _dataset_name(value)

    @field_validator("register_as")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                validate_name(value)
            except RegistryError as exc:
                raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _config_fits_model(self) -> TrainJob:
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


class EvaluateJob(_Spec):
    """Evaluate a registered model version on a catalog dataset split.

    Example: ``{"kind": "evaluate", "model_ref": "mnist-convnet@production", "data": "mnist"}``.
    """

    kind: Literal["evaluate"] = "evaluate"
    model_ref: str = Field(
        pattern=_MODEL_REF, description="'name', 'name:VERSION' or 'name@ALIAS_OR_STAGE'."
    )
    data: str = Field("mnist", description="Catalog dataset (`lepton data list`).")
    split: Literal["train", "test", "all"] = "test"
    limit: int | None = Field(None, ge=1, le=100_000_000, description="Use the first N rows.")

    @field_validator("data")
    @classmethod
    def _known_data(cls, value: str) -> str:
        return _dataset_name(value)


JobSpec = Annotated[TrainJob | EvaluateJob, Field(discriminator="kind")]


class JobRequest(BaseModel):
    """A spec plus what the job needs from the scheduler.

    ``cpus`` also sets the worker's torch threads; ``memory_mb`` is reserved when the job
    starts and enforced while it runs: a worker that uses more is stopped (the job fails,
    with its peak in the log).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    spec: JobSpec
    priority: int = Field(0, ge=-100, le=100, description="Higher starts first.")
    cpus: float = Field(1.0, gt=0, le=1024)
    gpus: int = Field(0, ge=0, le=64)
    memory_mb: int = Field(
        2048, ge=16, le=16 * 1024 * 1024, description="MiB reserved, and the most it may use."
    )
    max_retries: int = Field(2, ge=0, le=10, description="Retries after a crash.")


class JobView(BaseModel):
    """A job as the API shows it (JSON-safe; the executor's handle stays inside)."""

    model_config = ConfigDict(frozen=True)

    id: int
    kind: str
    spec: dict[str, Any]
    state: JobState
    priority: int
    cpus: float
    gpus: int
    memory_mb: int
    attempts: int = Field(description="Attempts started so far (a retry adds one).")
    max_retries: int
    not_before: float | None = Field(description="A retry waits until this time.")
    executor: str
    result: dict[str, Any] | None
    error: str | None
    run_id: int | None
    created_by: str
    created_at: float
    started_at: float | None = Field(description="When the latest attempt started.")
    ended_at: float | None

    @classmethod
    def from_row(cls, row: JobRow) -> JobView:
        """Freeze a database row."""
        return cls(
            id=row.id, kind=row.kind, spec=dict(row.spec), state=row.state,  # type: ignore[arg-type]
            priority=row.priority, cpus=row.cpus, gpus=row.gpus, memory_mb=row.memory_mb,
            attempts=row.attempts, max_retries=row.max_retries, not_before=row.not_before,
            executor=row.executor, result=row.result, error=row.error, run_id=row.run_id,
            created_by=row.created_by, created_at=row.created_at, started_at=row.started_at,
            ended_at=row.ended_at,
        )  # fmt: skip
