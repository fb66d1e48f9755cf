"""The graph recipe: "train a knowledge-graph embedding, rank the test links, register it".

``lepton graph train`` and a platform ``graph`` job run this recipe with a
:class:`GraphConfig`, whose defaults are defined here once: a link-prediction dataset
(Nations, Kinships or UMLS, from PyPI ``pykeen``'s files) -> an
:class:`~lepton.graph.Embedding` (TransE, DistMult, ComplEx or RotatE) trained with
``lp.fit`` -> filtered MRR and Hits@1/3/10 on the test split -> registered when asked
(weights, vocabularies and known triples in safetensors and the JSON manifest, nothing
pickled). Everything is logged to one tracking run.

Example:
    >>> config = GraphConfig.checked(dataset="nations", model="distmult", register="nations")
    >>> result = run(config, registrar=lp.register)  # doctest: +SKIP
    >>> result.metrics["mrr"]  # doctest: +SKIP
    0.71
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ConfigDict, Field

from lepton.graph._data import TripleSplits, load_triples
from lepton.graph._embed import Embedding
from lepton.storage import Database
from lepton.tracking import start_run
from lepton.train.recipe import RecipeConfig, register_when_asked, require_registrar

__all__ = ["GraphConfig", "GraphResult", "TriplesRecord", "run"]


class GraphConfig(RecipeConfig):
    """What to train: the triples, the embedding model and its settings. Checked strictly
    and frozen; a platform ``GraphJob`` is this class plus its ``kind``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, serialize_by_alias=True)

    dataset: Literal["nations", "kinships", "umls"] = Field(
        "nations", description="Link-prediction dataset (standard train/valid/test splits)."
    )
    model: Literal["transe", "distmult", "complex", "rotate"] = Field(
        "distmult", description="Embedding model (scoring function)."
    )
    dim: int = Field(32, ge=1, le=4096, description="Embedding dimension.")
    epochs: int = Field(40, ge=1, le=100_000, description="Passes over the training triples.")
    batch_size: int = Field(128, ge=1, le=1_000_000, description="Triples per step.")
    lr: float = Field(0.01, gt=0, le=10, description="Adam learning rate.")
    negatives: int = Field(4, ge=1, le=1000, description="Corrupted triples per positive.")
    loss: Literal["margin", "softplus", "nssa"] | None = Field(
        None, description="Loss (default: PyKEEN's for the model)."
    )
    margin: float | None = Field(
        None, ge=0, le=1e3, description="Loss margin (default: 1 for margin, 9 for nssa)."
    )
    seed: int = Field(0, ge=0, le=2**32 - 1)
    register_as: str | None = Field(
        None, alias="register", description="Register the model under this name."
    )


@dataclass(frozen=True)
class TriplesRecord:
    """What the registry records of the training triples (name, rows, fingerprint: the
    version's lineage); ``input_shape`` is one ``(head, relation, tail)`` index triple."""

    data: TripleSplits

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def input_shape(self) -> list[int]:
        return [3]

    def __len__(self) -> int:
        return len(self.data.train)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for part in (self.data.entities, self.data.relations):
            digest.update("\x1f".join(part).encode())
        digest.update(self.data.train.numpy().tobytes())
        return digest.hexdigest()


@dataclass
class GraphResult:
    """What a graph run measured and made."""

    metrics: dict[str, float]
    losses: list[float]
    entities: int
    relations: int
    train_triples: int
    test_triples: int
    seconds: float
    train_seconds: float
    run_id: int | None = None
    registered: str | None = None
    embedding: Embedding | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe, without the fitted model."""
        return {
            "metrics": self.metrics, "losses": self.losses, "entities": self.entities,
            "relations": self.relations, "train_triples": self.train_triples,
            "test_triples": self.test_triples, "seconds": self.seconds,
            "train_seconds": self.train_seconds, "run_id": self.run_id,
            "registered": self.registered,
        }  # fmt: skip


def run(
    config: GraphConfig,
    *,
    registrar: Callable[..., Any] | None = None,
    database: Database | None = None,
    say: Callable[[str], None] | None = None,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    on_run: Callable[[int], None] | None = None,
    num_threads: int | None = None,
) -> GraphResult:
    """Train, test (filtered MRR, Hits@1/3/10) and, when ``config.register_as`` is set,
    register a knowledge-graph embedding, tracked as one run.

    Args:
        config: What to train.
        registrar: Registers the model, e.g. :func:`lepton.registry.register` (the
            registry sits above this package, so it is passed in).
        database: The metadata database for the run and the registry.
        say: Receives one line at each step, e.g. ``print``.
        run_name: The tracking run's name.
        tags: The tracking run's tags.
        on_run: Called with the run's id as soon as it starts.
        num_threads: Torch CPU threads while training (default: torch's).

    Raises:
        ConfigError: ``register`` is set but no ``registrar`` was given.
        DataSourceMissingError: The dataset's files are not on this machine.
    """
    tell = say or (lambda _: None)
    require_registrar(config, registrar)
    started = time.perf_counter()
    data = load_triples(config.dataset)
    tell(
        f"{config.dataset}: {len(data.entities):,} entities, {len(data.relations):,} "
        f"relations; {len(data.train):,} train, {len(data.valid):,} valid, "
        f"{len(data.test):,} test triples"
    )
    name = run_name or f"graph-{config.dataset}-{config.model}"
    params = config.model_dump(mode="json", by_alias=True)
    with start_run(name, params=params, tags=tags, database=database) as tracked:
        if on_run is not None:
            on_run(tracked.id)
        emb = Embedding(
            config.model, dim=config.dim, epochs=config.epochs, batch_size=config.batch_size,
            lr=config.lr, negatives=config.negatives, loss=config.loss, margin=config.margin,
            seed=config.seed, num_threads=num_threads,
        )  # fmt: skip
        tell(f"training {config.model} dim={config.dim} for {config.epochs} epochs")
        emb.fit(data)  # lp.fit logs each epoch's loss to the active run
        assert emb.result is not None
        losses = [float(r.train["loss"]) for r in emb.result.history]
        for epoch in sorted({1, len(losses) // 2, len(losses)} - {0}):
            tell(f"epoch {epoch}/{config.epochs}: loss {losses[epoch - 1]:.4f}")
        metrics = emb.evaluate(data.test, known=data.all)
        valid_mrr = emb.evaluate(data.valid, known=data.all)["mrr"]
        tracked.log_metrics({f"test_{key}": value for key, value in metrics.items()}, step=0)
        tracked.log_metrics({"valid_mrr": valid_mrr, "fit_seconds": emb.train_seconds()}, step=0)
        tell("test (filtered): " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        registered = register_when_asked(
            config, registrar, emb.model, say=tell, metrics=metrics, dataset=TriplesRecord(data),
            run=tracked, database=database,
            description=f"{config.model} knowledge-graph embedding on {config.dataset} "
            f"(dim {config.dim}, {config.epochs} epochs)",
        )  # fmt: skip
        return GraphResult(
            metrics=metrics, losses=losses, entities=len(data.entities),
            relations=len(data.relations), train_triples=len(data.train),
            test_triples=len(data.test), seconds=time.perf_counter() - started,
            train_seconds=emb.train_seconds(), run_id=tracked.id, registered=registered,
            embedding=emb,
        )  # fmt: skip
