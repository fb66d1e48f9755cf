"""Federated learning on Flower: train one model across clients that keep their data.

Each round, Flower's strategy (FedAvg, FedProx or FedAdam) samples a random subset of
the clients, each trains the global model on its own data with Lepton's ``fit`` (and may
clip and noise its update: :class:`ClientDP`, charged to the privacy ledger), and the
strategy aggregates the updates. Runs as a simulation on one machine or as real Flower
SuperLink / SuperNode processes, with the same code. ``docs/federated.md`` says what is
protected and what is not.

Example:
    >>> import lepton as lp
    >>> train = lp.data.load("mnist", split="train")  # doctest: +SKIP
    >>> parts = lp.federated.partition(train, 5, scheme="dirichlet", alpha=0.5)  # doctest: +SKIP
    >>> model = lp.models.build("convnet", num_classes=10)  # doctest: +SKIP
    >>> result = lp.federated.run(model, parts, test=lp.data.load("mnist", split="test"),
    ...                           rounds=10, strategy="fedprox")  # doctest: +SKIP
    >>> [round(r.accuracy, 3) for r in result.rounds]  # doctest: +SKIP
"""

import importlib.util

from lepton.errors import MissingExtraError as _MissingExtraError

if importlib.util.find_spec("flwr") is None:
    raise _MissingExtraError(
        "lepton.federated needs Flower: pip install 'lepton[federated]' (flwr[simulation]==1.41.*)"
    )

from lepton.federated._dp import ClientDP
from lepton.federated._job import RoundRecord
from lepton.federated._partition import label_counts, partition
from lepton.federated._run import FederatedResult, run
from lepton.federated._tls import TlsFiles

__all__ = [
    "ClientDP",
    "FederatedResult",
    "RoundRecord",
    "TlsFiles",
    "label_counts",
    "partition",
    "run",
]
