"""Split one :class:`~lepton.data.Dataset` into the private datasets of simulated clients.

Federated learning is hard because the clients' data differ; a benchmark that splits
uniformly at random (IID) hides that. Three schemes, all reproducible from ``seed``:

* ``"iid"``: a random permutation cut into equal parts.
* ``"dirichlet"``: for every class, client shares drawn from ``Dirichlet(alpha)``
  (Hsu et al. 2019): ``alpha=0.5`` gives each client a few dominant classes, a large
  alpha approaches IID, a small one gives clients one or two classes each.
* ``"shards"``: rows sorted by label, cut into ``2 * n_clients`` shards of equal size,
  two random shards per client (McMahan et al. 2017's pathological non-IID split).

Example:
    >>> import lepton as lp
    >>> digits = lp.data.load("digits", split="train")  # doctest: +SKIP
    >>> parts = lp.federated.partition(digits, 5, scheme="dirichlet", alpha=0.5)  # doctest: +SKIP
    >>> [len(p) for p in parts]  # doctest: +SKIP
    [263, 301, 285, 289, 299]
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lepton.data import Dataset
from lepton.errors import FederatedError

__all__ = ["Scheme", "label_counts", "partition"]

Scheme = Literal["iid", "dirichlet", "shards"]
SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "shards")


def partition(
    dataset: Dataset,
    n_clients: int,
    *,
    scheme: Scheme = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_size: int = 10,
) -> list[Dataset]:
    """Split ``dataset`` into ``n_clients`` disjoint client datasets.

    Args:
        dataset: A labelled dataset (``dirichlet`` and ``shards`` need class labels).
        n_clients: Number of clients (2 or more).
        scheme: ``"iid"``, ``"dirichlet"`` or ``"shards"`` (see the module docstring).
        alpha: Concentration of the Dirichlet split (smaller: more skewed).
        seed: The same seed gives the same split.
        min_size: Every client gets at least this many rows; a Dirichlet draw that
            leaves a client smaller is redrawn (up to 100 times).

    Returns:
        One dataset per client, named ``"<name>/client-<i>"``; together they hold every
        row exactly once.

    Raises:
        FederatedError: Too few rows for the clients, an unknown scheme, or a scheme that
            needs class labels on unlabelled or regression data.
    """
    if scheme not in SCHEMES:
        raise FederatedError(f"unknown partition scheme {scheme!r}; use one of {SCHEMES}")
    if n_clients < 2:
        raise FederatedError(f"n_clients must be 2 or more, got {n_clients}")
    if len(dataset) < n_clients * max(1, min_size):
        raise FederatedError(
            f"{dataset.name!r} has {len(dataset)} rows, too few for {n_clients} clients of at "
            f"least {min_size} rows; use fewer clients or a smaller min_size"
        )
    if alpha <= 0:
        raise FederatedError(f"alpha must be positive, got {alpha}")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(len(dataset)), n_clients)
    else:
        if dataset.task != "classification" or dataset.targets is None:
            raise FederatedError(
                f"scheme={scheme!r} splits by class label, but {dataset.name!r} has no class "
                "labels; use scheme='iid'"
            )
        labels = dataset.targets.numpy()
        if scheme == "dirichlet":
            parts = _dirichlet(labels, n_clients, alpha, min_size, rng)
        else:
            parts = _shards(labels, n_clients, rng)
    return [
        _named(dataset.subset(np.sort(idx).tolist()), f"{dataset.name}/client-{i}")
        for i, idx in enumerate(parts)
    ]


def _named(ds: Dataset, name: str) -> Dataset:
    ds.name = name
    return ds


def _dirichlet(
    labels: np.ndarray, n: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    classes = np.unique(labels)
    for _ in range(100):
        buckets: list[list[int]] = [[] for _ in range(n)]
        for c in classes:
            rows = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(n, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
            for client, chunk in enumerate(np.split(rows, cuts)):
                buckets[client].extend(chunk.tolist())
        if min(len(b) for b in buckets) >= min_size:
            return [np.asarray(b, dtype=np.int64) for b in buckets]
    raise FederatedError(
        f"a Dirichlet(alpha={alpha}) split left a client with fewer than {min_size} rows in "
        "100 draws; raise alpha, use fewer clients or lower min_size"
    )


def _shards(labels: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, 2 * n)
    picks = rng.permutation(2 * n)
    return [np.concatenate([shards[picks[2 * i]], shards[picks[2 * i + 1]]]) for i in range(n)]


def label_counts(parts: list[Dataset]) -> list[dict[int, int]]:
    """Rows per class in each client dataset (to see how skewed a split is)."""
    out = []
    for p in parts:
        assert p.targets is not None
        values, counts = np.unique(p.targets.numpy(), return_counts=True)
        out.append({int(v): int(c) for v, c in zip(values, counts, strict=True)})
    return out
