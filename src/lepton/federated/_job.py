"""The job folder: everything the Flower apps need, written by :func:`lepton.federated.run`
and read by the ServerApp and ClientApps wherever they run (threads and Ray actors in a
simulation, SuperLink and SuperNode subprocesses in a deployment).

A folder rather than objects in memory because the deployment's apps live in other
processes; the simulation uses the same folder so both modes run the same code.

Layout: ``job.json`` (the settings), ``initial.safetensors`` (the starting weights),
``client-<i>.npz`` (client ``i``'s data), ``test.npz``, and what the ServerApp writes back:
``rounds.jsonl`` (one line per round), ``final.safetensors`` and ``done.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lepton import models as lp_models
from lepton._fs import atomic_write
from lepton.data import Dataset, from_npz
from lepton.federated._dp import ClientDP

__all__ = ["Job", "RoundRecord", "read_rounds"]

JOB_ENV = "LEPTON_FEDERATED_JOB"  # tells the deployed apps where the job folder is


@dataclass(frozen=True)
class RoundRecord:
    """One round as the server saw it (round 0: the initial model, before training).

    Attributes:
        round: 0 for the initial model, then 1..rounds.
        accuracy, loss: The global model's metrics on the server's test data.
        clients_sampled: Clients the strategy sent the round's training to.
        clients_replied: Clients whose update arrived and was aggregated.
        clients_failed: Clients that replied with an error or not at all in time.
        bytes_down, bytes_up: Payload bytes server -> clients and clients -> server.
        seconds: Wall time of the round.
    """

    round: int
    accuracy: float | None
    loss: float
    clients_sampled: int = 0
    clients_replied: int = 0
    clients_failed: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Job:
    """The settings of one federated run (``job.json``)."""

    folder: str
    n_clients: int
    rounds: int
    strategy: str
    fraction_fit: float
    min_fit: int
    min_available: int
    local_epochs: int
    lr: float
    batch_size: int
    optimizer: str
    proximal_mu: float
    server_lr: float
    round_timeout: float
    seed: int
    model: dict[str, Any] | None
    dp: dict[str, Any] | None = None
    secure_aggregation: bool = False  # SecAgg+ (lepton.federated._secagg)
    secagg_shares: float = 1.0  # share each client's mask seeds with this fraction of the round
    secagg_threshold: float = 0.67  # fraction of the share holders needed to unmask

    @property
    def path(self) -> Path:
        return Path(self.folder)

    @property
    def client_dp(self) -> ClientDP | None:
        return ClientDP.from_json(self.dp) if self.dp is not None else None

    def write(self, model: nn.Module, partitions: list[Dataset], test: Dataset) -> None:
        """Write the whole folder (the caller's model weights, data and settings)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(partitions):
            part.save(self.path / f"client-{i}.npz")
        test.save(self.path / "test.npz")
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(self.path / "initial.safetensors"))
        body = json.dumps({k: v for k, v in asdict(self).items()}, indent=1)
        atomic_write(self.path / "job.json", lambda tmp: _write(tmp, body))

    @classmethod
    def read(cls, folder: str | Path) -> Job:
        values = json.loads((Path(folder) / "job.json").read_text())
        return cls(**values)

    def new_model(self, template: nn.Module | None = None) -> nn.Module:
        """A model of the run's architecture with the initial weights."""
        import copy

        if self.model is not None:
            model = lp_models.build(self.model)
        elif template is not None:
            model = copy.deepcopy(template)
        else:  # run() checks this before starting anything
            raise RuntimeError("the job has no model spec and no template model")
        model.load_state_dict(load_file(str(self.path / "initial.safetensors")))
        return model

    def client_data(self, client: int) -> Dataset:
        return from_npz(self.path / f"client-{client}.npz")

    def test_data(self) -> Dataset:
        return from_npz(self.path / "test.npz")

    def append_round(self, record: RoundRecord) -> None:
        with (self.path / "rounds.jsonl").open("a") as f:
            f.write(json.dumps(record.to_json()) + "\n")

    def finish(self, state: dict[str, torch.Tensor], error: str | None = None) -> None:
        if state:
            save_file(
                {k: v.contiguous() for k, v in state.items()},
                str(self.path / "final.safetensors"),
            )
        body = json.dumps({"error": error})
        atomic_write(self.path / "done.json", lambda tmp: _write(tmp, body))


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def read_rounds(folder: str | Path) -> list[RoundRecord]:
    """The rounds written so far (a line being written is skipped)."""
    path = Path(folder) / "rounds.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(RoundRecord(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return out
