"""Figures measured on a registered version after it was registered: CPU latency at batch
1 and 64 with test accuracy (:func:`benchmark`), and global feature importance of a
tabular model (:func:`global_importance`).

A version is immutable (its manifest is frozen when it is registered), so what is
measured later is stored beside its files in the artifact store, as
``models/<name>/<version>/benchmark.json`` and ``importance.json``, each saying how it was
measured (data, rows, repeats, threads, when). Nothing here estimates: a version that was
never measured shows "not measured" until someone runs the measurement, which the
dashboard starts in a background thread (:func:`start`) so that a page never waits on it.

Example:
    >>> from lepton.platform.web._measure import benchmark, global_importance
    >>> benchmark("mnist-convnet:2")["latency_ms"]  # doctest: +SKIP
    {'1': 0.41, '64': 6.2}
    >>> global_importance("cancer-mlp:1")["features"][0]  # doctest: +SKIP
    {'name': 'worst radius', 'importance': 0.061, 'std': 0.012}
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lepton import registry
from lepton.errors import ExplainError, LeptonError, ShapeError
from lepton.storage import Database, artifact_store

__all__ = [
    "BATCHES",
    "benchmark",
    "dataset_of",
    "global_importance",
    "start",
    "state",
    "stored",
]

BATCHES = (1, 64)
BENCHMARK, IMPORTANCE = "benchmark.json", "importance.json"
_MAX_RUNNING = 2  # measurements at once: the platform's CPUs also serve pages
_lock = threading.Lock()
_running: dict[tuple[str, str], float] = {}  # (ref, file) -> started at
_failed: dict[tuple[str, str], str] = {}  # (ref, file) -> message of the last failure


def _key(version: registry.ModelVersion, file: str) -> str:
    return f"models/{version.name}/{version.version}/{file}"


def stored(version: registry.ModelVersion, file: str) -> dict[str, Any] | None:
    """The stored measurement ``file`` (``"benchmark.json"``, ``"importance.json"``)."""
    store = artifact_store()
    if not store.exists(_key(version, file)):
        return None
    found = json.loads(store.get(_key(version, file)))
    return found if isinstance(found, dict) else None


def _save(version: registry.ModelVersion, file: str, record: dict[str, Any]) -> dict[str, Any]:
    artifact_store().put(_key(version, file), json.dumps(record, indent=2).encode())
    return record


def dataset_of(
    version: registry.ModelVersion, *, database: Database | None = None, depth: int = 8
) -> str | None:
    """The catalog dataset whose test split measures ``version``: its training data's,
    the compress step's test data, or (for an ONNX file with neither) its original's."""
    for _ in range(depth):
        data = (version.manifest.get("dataset") or {}).get("name")
        lineage = version.manifest.get("lineage") or {}
        data = data or (lineage.get("figures") or {}).get("test_data")
        if data:
            return str(data)
        parent = lineage.get("derived_from")
        if not parent:
            return None
        try:
            version = registry.resolve(str(parent), database=database)
        except LeptonError:
            return None
    return None


def _sample_shape(version: registry.ModelVersion) -> list[int]:
    shape = list(version.manifest.get("input_schema", {}).get("shape") or [])
    if shape and (not isinstance(shape[0], int) or shape[0] in (-1, 0)):
        shape = shape[1:]  # ONNX graphs name their batch dimension
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ShapeError(
            f"{version.ref} records no fixed input shape ({shape or 'none'}); it cannot be "
            f"measured without knowing its inputs (register it with dataset=, or an ONNX "
            f"file with a fixed input shape)"
        )
    return [int(d) for d in shape]


class _Preprocessed(nn.Module):
    """The model after its version's recorded preprocessing: inputs in the raw space."""

    def __init__(self, model: nn.Module, steps: list[dict[str, Any]]) -> None:
        super().__init__()
        self.model, self.steps = model, steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from lepton.data import replay_preprocessing

        out = self.model(replay_preprocessing(x, self.steps)[0] if self.steps else x)
        return out  # type: ignore[no-any-return]


def _open(ref: str, database: Database | None) -> tuple[registry.ModelVersion, nn.Module]:
    version = registry.resolve(ref, database=database)
    model = registry.load_model(version.ref, database=database).eval()
    steps = [dict(s) for s in version.manifest.get("preprocessing") or []]
    return version, _Preprocessed(model, steps).eval()


@torch.inference_mode()
def benchmark(
    ref: str,
    *,
    database: Database | None = None,
    test_limit: int = 2000,
    rounds: int = 5,
    calls: tuple[int, int] = (20, 5),
) -> dict[str, Any]:
    """Measure ``ref`` on this machine's CPU and store the result as its ``benchmark.json``.

    Latency is the median wall time of one forward pass at batch 1 and at batch 64 (the
    model with its recorded preprocessing, as a deployment runs it), ``rounds`` rounds
    that interleave the two sizes so that both see the same machine load, ``calls`` calls
    per size and round, with the platform's torch threads. Inputs are real test rows
    when the version's dataset is known, else zeros of its input shape (timing does not
    depend on the values). Accuracy is top-1 on the first ``test_limit`` test rows of
    that dataset, for a classifier.

    Returns:
        The stored record: ``latency_ms`` (``{"1": ..., "64": ...}``), ``accuracy``,
        ``test_data``, ``test_rows``, ``threads``, ``rounds``, ``measured_at``.

    Raises:
        LeptonError: The version cannot be found, loaded or run.
    """
    from lepton.data import load

    version, net = _open(ref, database)
    shape = _sample_shape(version)
    data_name = dataset_of(version, database=database)
    test = load(data_name, split="test") if data_name else None
    if test is not None and list(test.input_shape) != shape:
        test = None  # e.g. a model registered under another dataset's name: do not guess
    rows = test.features[: max(BATCHES)].float() if test is not None else None
    inputs = {
        b: rows[:b] if rows is not None and len(rows) >= b else torch.zeros([b, *shape])
        for b in BATCHES
    }
    for b in BATCHES:  # warm-up: first calls allocate and choose kernels
        net(inputs[b])
    times: dict[int, list[float]] = {b: [] for b in BATCHES}
    for _ in range(rounds):
        for b, n in zip(BATCHES, calls, strict=True):
            for _ in range(n):
                started = time.perf_counter()
                net(inputs[b])
                times[b].append(time.perf_counter() - started)
    record: dict[str, Any] = {
        "latency_ms": {str(b): 1000 * statistics.median(times[b]) for b in BATCHES},
        "calls": {str(b): len(times[b]) for b in BATCHES},
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "inputs": "test rows" if rows is not None else "zeros",
        "accuracy": None,
        "test_data": None,
        "test_rows": None,
        "measured_at": time.time(),
    }
    classifier = version.manifest.get("output_schema", {}).get("kind") == "logits"
    labels = test.targets if test is not None and test.task == "classification" else None
    if (
        test is not None
        and labels is not None
        and (classifier or version.manifest.get("kind") == "pytorch")
    ):
        part = test.subset(slice(0, test_limit)) if len(test) > test_limit else test
        targets = labels[: len(part)]
        right = 0
        for i in range(0, len(part), 512):
            out = net(part.features[i : i + 512].float())
            right += int((out.argmax(dim=1) == targets[i : i + 512]).sum())
        record |= {"accuracy": right / len(part), "test_data": test.name,
                   "test_rows": len(part)}  # fmt: skip
    return _save(version, BENCHMARK, record)


def global_importance(
    ref: str,
    data: str | None = None,
    *,
    database: Database | None = None,
    n_repeats: int = 5,
    limit: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Permutation importance of each feature of tabular version ``ref`` on the test
    split of ``data`` (default: its training dataset), stored as its ``importance.json``
    and shown on its page and model card.

    The features are shuffled in the raw space a client sends (the recorded
    preprocessing runs inside the model), so the names are the dataset's columns.

    Returns:
        :meth:`lepton.explain.FeatureImportance.summary` plus ``test_data``,
        ``test_rows`` and ``measured_at``.

    Raises:
        ExplainError: Not a tabular model, no known dataset, or one of another width.
    """
    from lepton.data import load
    from lepton.explain import permutation_importance

    version, net = _open(ref, database)
    shape = _sample_shape(version)
    if len(shape) != 1:
        raise ExplainError(
            f"{version.ref} takes inputs of shape {shape}; global importances are for tabular "
            f"models (one row of features). Explain images one at a time on its page"
        )
    name = data or dataset_of(version, database=database)
    if not name:
        raise ExplainError(
            f"{version.ref} records no dataset; pass data= the catalog dataset it was "
            f"trained on, e.g. global_importance('{version.ref}', 'breast-cancer')"
        )
    test = load(name, split="test")
    if list(test.input_shape) != shape:
        raise ExplainError(
            f"dataset {name!r} has rows of shape {list(test.input_shape)}, and {version.ref} "
            f"takes {shape}; pass the dataset it was trained on"
        )
    part = test.subset(slice(0, limit)) if len(test) > limit else test
    found = permutation_importance(net, part, n_repeats=n_repeats, seed=seed)
    record = found.summary(k=None) | {
        "test_data": name,
        "test_rows": len(part),
        "measured_at": time.time(),
    }
    return _save(version, IMPORTANCE, record)


_MEASURES: dict[str, Callable[..., dict[str, Any]]] = {
    BENCHMARK: benchmark,
    IMPORTANCE: global_importance,
}


def state(ref: str, file: str) -> tuple[bool, str | None]:
    """``(running, last failure message)`` of measurement ``file`` of ``ref``."""
    with _lock:
        return (ref, file) in _running, _failed.get((ref, file))


def start(ref: str, file: str, *, database: Database | None = None) -> bool:
    """Run measurement ``file`` of ``ref`` in a background thread; ``False`` when it is
    already running or :data:`_MAX_RUNNING` measurements are (the page says so)."""
    measure = _MEASURES[file]
    with _lock:
        if (ref, file) in _running or len(_running) >= _MAX_RUNNING:
            return False
        _running[(ref, file)] = time.time()
        _failed.pop((ref, file), None)

    def work() -> None:
        try:
            measure(ref, database=database)
        except LeptonError as exc:
            with _lock:
                _failed[(ref, file)] = exc.message
        except Exception as exc:  # a model that fails to run: shown on the page
            with _lock:
                _failed[(ref, file)] = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            with _lock:
                _running.pop((ref, file), None)

    threading.Thread(target=work, name=f"measure {ref} {file}", daemon=True).start()
    return True
