"""What a job is: its typed spec (:class:`TrainJob`, :class:`EvaluateJob`, never a shell
string), what it asks of the scheduler (:class:`JobRequest`), its states, and how the API
shows it (:class:`JobView`).

States: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled`` |
``lost``; ``running`` -> ``cancelling`` -> ``cancelled``. The transition table in
:mod:`lepton.platform.jobs._states` says which event moves a job between them.

Example:
    >>> request = JobRequest(spec=TrainJob(model="mlp", epochs=2), cpus=2)  # doctest: +SKIP
    >>> request.spec.model_dump(mode="json")["kind"]  # doctest: +SKIP
    'train'
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lepton.compress import CompressConfig
from lepton.errors import RegistryError
from lepton.federated.recipe import FederatedConfig
from lepton.graph.recipe import GraphConfig
from lepton.recommend.recipe import RecommendConfig
from lepton.registry._registry import validate_name
from lepton.storage.schema import JobRow
from lepton.text.recipe import TextConfig
from lepton.train.recipe import TrainConfig, catalog_name
from lepton.tune.recipe import TuneConfig
from lepton.vision.recipe import ClassifyConfig, DetectConfig, GenerateConfig

__all__ = [
    "ACTIVE",
    "DETERMINISTIC_EXIT",
    "STATES",
    "TERMINAL",
    "ClassifyJob",
    "CompressJob",
    "DetectJob",
    "EvaluateJob",
    "FederatedJob",
    "GraphJob",
    "JobRequest",
    "JobSpec",
    "JobState",
    "JobView",
    "RecommendJob",
    "TextJob",
    "TrainJob",
    "TuneJob",
]

JobState: TypeAlias = Literal[
    "queued", "running", "cancelling", "succeeded", "failed", "cancelled", "lost"
]
STATES: tuple[JobState, ...] = get_args(JobState)
ACTIVE: tuple[JobState, ...] = ("running", "cancelling")  # a worker process exists
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "lost"})
DETERMINISTIC_EXIT = 3  # the worker's exit code for a failure that a retry would repeat

# -- specs ------------------------------------------------------------------------------
_MODEL_REF = r"^[a-z0-9][a-z0-9._-]{0,99}(:[0-9]{1,9}|@[a-z0-9_-]{1,64})?$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _model_name(value: str | None) -> str | None:
    if value is not None:
        try:
            validate_name(value)
        except RegistryError as exc:
            raise ValueError(exc.message) from None
    return value


class TrainJob(TrainConfig):
    """Train a zoo model on a catalog dataset, test it, save it, optionally register it:
    the recipe's :class:`~lepton.train.recipe.TrainConfig` (every field and default) plus
    its ``kind``, run by :func:`lepton.train.recipe.run` in the worker.

    Example: ``{"kind": "train", "model": "mlp", "data": "mnist", "epochs": 2}``.
    """

    kind: Literal["train"] = "train"

    _register_as = field_validator("register_as")(_model_name)


class TuneJob(TuneConfig):
    """Search a zoo model's hyper-parameters on a catalog dataset: the recipe's
    :class:`~lepton.tune.recipe.TuneConfig` plus its ``kind``, run by
    :func:`lepton.tune.recipe.run` in the worker. Its trials run in ``workers`` processes
    inside the job's CPU slots; a retried job resumes its study (``job-ID``).

    Example: ``{"kind": "tune", "model": "mlp", "data": "digits", "n_trials": 20,
    "space": {"lr": {"type": "float", "low": 0.0001, "high": 0.1, "log": true}}}``.
    """

    kind: Literal["tune"] = "tune"

    _register_as = field_validator("register_as")(_model_name)


class CompressJob(CompressConfig):
    """Compress a registered model (prune, int8-quantize) and register the result as a new
    version derived from it: the recipe's :class:`~lepton.compress.CompressConfig` plus its
    ``kind``, run by :func:`lepton.compress.run` in the worker.

    Example: ``{"kind": "compress", "model": "mnist-convnet@production", "quantize":
    "static", "data": "mnist"}``.
    """

    kind: Literal["compress"] = "compress"


class FederatedJob(FederatedConfig):
    """Train a zoo model federated (Flower) over a catalog dataset split among clients:
    the recipe's :class:`~lepton.federated.recipe.FederatedConfig` plus its ``kind``, run
    by :func:`lepton.federated.recipe.run` in the worker (a Ray simulation, or a SuperLink
    and one SuperNode process per client on 127.0.0.1, inside the job's process group).

    Example: ``{"kind": "federated", "model": "convnet", "data": "mnist", "clients": 5,
    "partition": "dirichlet", "alpha": 0.5, "rounds": 10, "strategy": "fedprox"}``.
    """

    kind: Literal["federated"] = "federated"

    _register_as = field_validator("register_as")(_model_name)


class RecommendJob(RecommendConfig):
    """Train a recommender on MovieLens, test it (RMSE, NDCG@k, ...) and optionally
    register it: the recipe's :class:`~lepton.recommend.recipe.RecommendConfig` plus its
    ``kind``, run by :func:`lepton.recommend.recipe.run` in the worker.

    Example: ``{"kind": "recommend", "data": "movielens", "factors": 64, "epochs": 15,
    "register": "movies"}``.
    """

    kind: Literal["recommend"] = "recommend"

    _register_as = field_validator("register_as")(_model_name)


class GraphJob(GraphConfig):
    """Train a knowledge-graph embedding (TransE, DistMult, ComplEx, RotatE) on Nations,
    Kinships or UMLS, rank the test links (filtered MRR, Hits@k) and optionally register
    it: the recipe's :class:`~lepton.graph.recipe.GraphConfig` plus its ``kind``, run by
    :func:`lepton.graph.recipe.run` in the worker.

    Example: ``{"kind": "graph", "dataset": "umls", "model": "complex", "dim": 64,
    "epochs": 100, "register": "umls-complex"}``.
    """

    kind: Literal["graph"] = "graph"

    _register_as = field_validator("register_as")(_model_name)


class ClassifyJob(ClassifyConfig):
    """A ``train`` job with image augmentation: the recipe's
    :class:`~lepton.vision.recipe.ClassifyConfig` (a ``TrainConfig`` plus random crops,
    flips, erasing, mixup/cutmix, label smoothing and test-time augmentation, all off by
    default) plus its ``kind``, run by :func:`lepton.vision.recipe.classify`.

    Example: ``{"kind": "classify", "model": "resnet", "data": "fashion-mnist",
    "padding": 2, "hflip": true, "label_smoothing": 0.1, "tta": true}``.
    """

    kind: Literal["classify"] = "classify"

    _register_as = field_validator("register_as")(_model_name)


class DetectJob(DetectConfig):
    """Train an object detector on scenes of real digits, measure its COCO mAP on
    held-out scenes (test-split digits) and optionally register it: the recipe's
    :class:`~lepton.vision.recipe.DetectConfig` plus its ``kind``, run by
    :func:`lepton.vision.recipe.run` in the worker. (A COCO folder is a path on one
    machine: ``lepton vision detect train --coco`` trains on it there, never a job.)

    Example: ``{"kind": "detect", "train_scenes": 3000, "epochs": 4, "register":
    "digits-det"}``.
    """

    kind: Literal["detect"] = "detect"

    _register_as = field_validator("register_as")(_model_name)


class GenerateJob(GenerateConfig):
    """Train a class-conditional image generator (a VAE, or a DDPM) on MNIST or
    Fashion-MNIST, judge its samples with a ConvNet trained alongside (class recognition,
    Frechet distance beside two real halves) and optionally register it: the recipe's
    :class:`~lepton.vision.recipe.GenerateConfig` plus its ``kind``, run by
    :func:`lepton.vision.recipe.generate` in the worker.

    Example: ``{"kind": "generate", "dataset": "mnist", "epochs": 20, "register":
    "mnist-gen"}``.
    """

    kind: Literal["generate"] = "generate"

    _register_as = field_validator("register_as")(_model_name)


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
        return catalog_name(value)


class TextJob(TextConfig):
    """Train a text classifier (TF-IDF, frozen or fine-tuned MiniLM) on Rotten Tomatoes,
    build a semantic-search index over a text dataset, or an assistant over the packaged
    FAQ; measure it and optionally register it: the recipe's
    :class:`~lepton.text.recipe.TextConfig` plus its ``kind``, run by
    :func:`lepton.text.recipe.run` in the worker.

    Example: ``{"kind": "text", "task": "classify", "encoder": "minilm", "register":
    "reviews"}``.
    """

    kind: Literal["text"] = "text"

    _register_as = field_validator("register_as")(_model_name)


JobSpec = Annotated[
    TrainJob
    | EvaluateJob
    | TuneJob
    | CompressJob
    | FederatedJob
    | RecommendJob
    | GraphJob
    | DetectJob
    | TextJob
    | ClassifyJob
    | GenerateJob,
    Field(discriminator="kind"),
]


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

    @model_validator(mode="before")
    @classmethod
    def _train_workers_reserve_slots(cls, data: Any) -> Any:
        # a data-parallel train job reserves one CPU slot per worker unless cpus is given
        if isinstance(data, dict) and "cpus" not in data:
            spec = data.get("spec")
            workers = None
            if isinstance(spec, dict) and spec.get("kind") == "train":
                workers = spec.get("workers")
            if isinstance(spec, TrainJob):
                workers = spec.workers
            if isinstance(workers, int) and workers > 1 and not data.get("gpus"):
                data = {**data, "cpus": float(workers)}
        return data

    @model_validator(mode="after")
    def _slots_for_workers(self) -> JobRequest:
        if isinstance(self.spec, TuneJob) and self.spec.workers > self.cpus:
            raise ValueError(
                f"a tune job with workers={self.spec.workers} runs that many trials at once; "
                f"ask for cpus >= {self.spec.workers}"
            )
        if isinstance(self.spec, TrainJob) and self.spec.workers > 1:
            if self.gpus and self.gpus < self.spec.workers:
                raise ValueError(
                    f"a train job with workers={self.spec.workers} on GPUs takes one GPU per "
                    f"worker; ask for gpus >= {self.spec.workers}, or gpus=0 for CPU workers"
                )
            if not self.gpus and self.spec.workers > self.cpus:
                raise ValueError(
                    f"a train job with workers={self.spec.workers} runs that many processes; "
                    f"ask for cpus >= {self.spec.workers}"
                )
        return self


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
