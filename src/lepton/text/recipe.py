"""The text recipe: "train a classifier, build an index or an assistant, measure it,
register it".

``lepton text train`` and a platform ``text`` job run this recipe with a
:class:`TextConfig`, whose defaults are defined here once:

* ``task="classify"``: a ``TextClassifier`` on rotten-tomatoes (movie-disjoint splits);
  test accuracy and macro F1; registered as ``text-tfidf`` or ``text-classifier``.
* ``task="index"``: an ``Index`` over rotten-tomatoes or wordnet-glosses; self-hit@1 (a
  text finds itself first) and, for HNSW, recall@10 against exact search.
* ``task="assistant"``: an ``Assistant`` over the FAQ about Lepton that ships with it;
  top-1 on held-out paraphrases and the "I don't know" rate on out-of-scope questions.

Everything is logged to one tracking run. ``lp.text`` sits above the registry in the
layers, so the recipe registers by itself (``register=`` names the model).

Example:
    >>> config = TextConfig.checked(task="classify", encoder="tfidf", register="reviews")
    >>> result = run(config)  # doctest: +SKIP
    >>> result.metrics["accuracy"]  # doctest: +SKIP
    0.74
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, model_validator

from lepton.storage import Database
from lepton.tracking import start_run
from lepton.train.recipe import RecipeConfig

__all__ = ["TextConfig", "TextResult", "faq_metrics", "macro_f1", "run", "sample"]


class TextConfig(RecipeConfig):
    """What to build. Checked strictly and frozen; a platform ``TextJob`` is this class
    plus its ``kind``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, serialize_by_alias=True)

    task: Literal["classify", "index", "assistant"] = Field(
        "classify", description="Train a classifier, build a search index, or an FAQ assistant."
    )
    dataset: Literal["rotten-tomatoes", "wordnet-glosses"] = Field(
        "rotten-tomatoes", description="Catalog text dataset (classify: rotten-tomatoes only)."
    )
    encoder: Literal["tfidf", "minilm", "transformer"] = Field(
        "tfidf", description="Classifier encoder: TF-IDF, frozen MiniLM, or fine-tuned MiniLM."
    )
    index: Literal["exact", "hnsw"] = Field("hnsw", description="Index kind (task=index).")
    limit: int | None = Field(
        None, ge=10, le=10_000_000, description="Use N random texts of each split (default: all)."
    )
    C: float = Field(1.0, gt=0, le=1e6, description="Inverse L2 strength of the logistic heads.")
    epochs: int = Field(2, ge=1, le=100, description="Fine-tuning epochs (transformer).")
    batch_size: int = Field(32, ge=1, le=4096, description="Batch size (embedding, fine-tuning).")
    lr: float = Field(1e-4, gt=0, le=1, description="Peak learning rate (transformer).")
    threshold: float = Field(
        0.35, gt=0, lt=1, description="Assistant: least score that counts as knowing."
    )
    seed: int = Field(0, ge=0, le=2**32 - 1)
    register_as: str | None = Field(
        None, alias="register", description="Register the result under this name."
    )

    @model_validator(mode="after")
    def _labelled(self) -> TextConfig:
        if self.task == "classify" and self.dataset != "rotten-tomatoes":
            raise ValueError(
                f"dataset: {self.dataset!r} has no labels; classify on 'rotten-tomatoes'"
            )
        return self


@dataclass
class TextResult:
    """What a text run measured and made."""

    task: str
    metrics: dict[str, float]
    rows: int
    seconds: float
    run_id: int | None = None
    registered: str | None = None
    made: Any = field(default=None, repr=False)  # the classifier, index or assistant

    def to_json(self) -> dict[str, Any]:
        """JSON-safe, without the object made."""
        return {
            "task": self.task, "metrics": self.metrics, "rows": self.rows,
            "seconds": self.seconds, "run_id": self.run_id, "registered": self.registered,
        }  # fmt: skip


def sample(data: Any, limit: int | None, seed: int) -> Any:
    """``limit`` texts of ``data`` drawn at random with ``seed`` (in their order), or all."""
    if limit is None or limit >= len(data):
        return data
    return data.subset(np.sort(np.random.default_rng(seed).permutation(len(data))[:limit]))


def macro_f1(truth: list[str], predicted: list[str]) -> float:
    """The mean over classes of F1 (a class never seen nor predicted is left out)."""
    scores = []
    for c in sorted(set(truth) | set(predicted)):
        tp = sum(t == c and p == c for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def faq_metrics(bot: Any) -> dict[str, float]:
    """Top-1 accuracy on the held-out paraphrases of the packaged FAQ and the "I don't
    know" rate on its out-of-scope questions (``lepton/text/faq_eval.csv``)."""
    path = resources.files("lepton.text").joinpath("faq_eval.csv")
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    inside = [r for r in rows if r["expected"]]
    outside = [r for r in rows if not r["expected"]]
    fresh = bot.conversation()
    right = sum(fresh.conversation().ask(r["question"]).question == r["expected"] for r in inside)
    idk = sum(not fresh.conversation().ask(r["question"]).known for r in outside)
    return {"top1_accuracy": right / len(inside), "dont_know_rate": idk / len(outside)}


def _classify(config: TextConfig, say: Callable[[str], None], threads: int | None) -> Any:
    from lepton.data import load
    from lepton.text._classifier import TextClassifier

    train = sample(load(config.dataset, split="train"), config.limit, config.seed)
    test = sample(load(config.dataset, split="test"), config.limit, config.seed + 1)
    say(f"{config.dataset}: {len(train):,} train, {len(test):,} test texts (movie-disjoint)")
    clf = TextClassifier(config.encoder, C=config.C, epochs=config.epochs,
                         batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                         num_threads=threads)  # fmt: skip
    say(f"fitting encoder={config.encoder}")
    clf.fit(train)
    truth, predicted = test.label_names(), clf.predict(list(test.texts))
    metrics = {
        "accuracy": float(np.mean([t == p for t, p in zip(truth, predicted, strict=True)])),
        "macro_f1": macro_f1(truth, predicted),
        "fit_seconds": float(clf.fit_seconds or 0.0),
    }
    return clf, train, len(train), metrics


def _index(config: TextConfig, say: Callable[[str], None], threads: int | None) -> Any:
    from lepton.data import load
    from lepton.text._embed import default_embedder
    from lepton.text._index import Index

    data = sample(load(config.dataset, split="all"), config.limit, config.seed)
    say(f"{config.dataset}: embedding {len(data):,} texts")
    vectors = default_embedder()(list(data.texts), batch_size=config.batch_size,
                                 num_threads=threads)  # fmt: skip
    meta = [{k: data.meta[k][i] for k in data.meta} for i in range(len(data))]
    ids = list(data.ids) if data.ids else None
    index = Index(config.index)
    index.add(list(data.texts), vectors=vectors, ids=ids, metadata=meta)
    queries = np.random.default_rng(config.seed).permutation(len(data))[: min(200, len(data))]
    q = vectors[torch.as_tensor(queries)]
    found = index.search(q, k=10)
    wanted = [index._ids[int(i)] for i in queries]
    metrics = {
        "self_hit_at_1": float(np.mean([h[0].id == w for h, w in zip(found, wanted, strict=True)]))
    }
    if config.index == "hnsw":
        exact = Index("exact")
        exact.add(vectors=vectors, ids=index._ids)
        truth = exact.search(q, k=10)
        overlap = [len({h.id for h in a} & {h.id for h in b}) / len(b)
                   for a, b in zip(found, truth, strict=True)]  # fmt: skip
        metrics["recall_at_10"] = float(np.mean(overlap))
    return index, data, len(data), metrics


def _assistant(config: TextConfig, say: Callable[[str], None], threads: int | None) -> Any:
    from lepton.text._assistant import Assistant

    bot = Assistant(threshold=config.threshold)
    say(f"assistant over the packaged FAQ: {len(bot.entries)} entries")
    return bot, None, len(bot.entries), faq_metrics(bot)


_TASKS = {"classify": _classify, "index": _index, "assistant": _assistant}


def run(
    config: TextConfig,
    *,
    database: Database | None = None,
    say: Callable[[str], None] | None = None,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    on_run: Callable[[int], None] | None = None,
    num_threads: int | None = None,
) -> TextResult:
    """Build, measure and (when ``config.register_as`` is set) register a text model,
    tracked as one run.

    Args:
        config: What to build.
        database: The metadata database for the run and the registry.
        say: Receives one line at each step, e.g. ``print``.
        run_name: The tracking run's name.
        tags: The tracking run's tags.
        on_run: Called with the run's id as soon as it starts.
        num_threads: Torch CPU threads (default: torch's).

    Raises:
        DataSourceMissingError: The dataset's files are not on this machine.
    """
    tell = say or (lambda _: None)
    started = time.perf_counter()
    what = config.encoder if config.task == "classify" else config.index
    name = run_name or f"text-{config.task}-{what if config.task != 'assistant' else 'faq'}"
    params = config.model_dump(mode="json", by_alias=True)
    with start_run(name, params=params, tags=tags, database=database) as tracked:
        if on_run is not None:
            on_run(tracked.id)
        made, data, rows, metrics = _TASKS[config.task](config, tell, num_threads)
        tracked.log_metrics(metrics, step=0)
        tell(", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        registered = None
        if config.register_as is not None:
            if config.task == "assistant":
                version = made.register(config.register_as, metrics=metrics, database=database)
            else:
                version = made.register(config.register_as, metrics=metrics, dataset=data,
                                        database=database)  # fmt: skip
            registered = version.ref
            tell(f"registered as {registered}")
    return TextResult(config.task, metrics, rows, time.perf_counter() - started,
                      run_id=tracked.id, registered=registered, made=made)  # fmt: skip
