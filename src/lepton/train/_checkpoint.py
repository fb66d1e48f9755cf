"""Training checkpoints: safetensors for tensors, JSON for everything else. No pickle.

Layout of a checkpoint folder::

    checkpoint_dir/
      latest.json               {"epoch": 3, "path": "epoch-0003"}  (replaced atomically)
      epoch-0003/
        model.safetensors       the model's state_dict
        trainer.safetensors     optimizer tensors, RNG states, callback tensors
        state.json              epoch, history, optimizer groups, schedule, callbacks

Each ``epoch-NNNN`` folder is built aside and renamed into place, and ``latest.json`` is
replaced only after, so a crash at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lepton._fs import atomic_dir, atomic_write_bytes
from lepton.errors import CheckpointError

__all__ = ["Checkpoint", "latest_epoch", "load_checkpoint", "save_checkpoint"]

KEEP = 2  # epoch folders kept; older ones are removed after a new one lands


@dataclass
class Checkpoint:
    """A loaded checkpoint: call :meth:`restore` to put it back into live objects."""

    path: Path
    state: dict[str, Any]
    model: dict[str, torch.Tensor]
    trainer: dict[str, torch.Tensor]

    @property
    def epoch(self) -> int:
        """The last completed epoch."""
        return int(self.state["epoch"])

    def restore_model(self, model: nn.Module) -> None:
        """Load the weights into ``model``, checking names and shapes first."""
        own = model.state_dict()
        if set(own) != set(self.model) or any(own[k].shape != self.model[k].shape for k in own):
            raise CheckpointError(
                f"checkpoint {self.path} was written for a different model architecture; "
                f"build the same model as the run that wrote it, or use a new checkpoint_dir"
            )
        model.load_state_dict(self.model)

    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Load optimizer state (tensors and hyper-parameters)."""
        raw = self.state["optimizer"]
        state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in raw["state"].items()}
        for key, tensor in self.trainer.items():
            kind, _, rest = key.partition(".")
            if kind == "optimizer":
                pid, _, name = rest.partition(".")
                state.setdefault(int(pid), {})[name] = tensor
        optimizer.load_state_dict({"state": state, "param_groups": raw["param_groups"]})

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Trainer tensors under ``prefix.`` with the prefix removed."""
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.trainer.items() if k.startswith(prefix + ".")}


def _optimizer_parts(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        plain[str(pid)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value
            else:
                plain[str(pid)][name] = value
    return {"state": plain, "param_groups": sd["param_groups"]}, tensors


def _owned(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage (tied weights) and strided views: give it copies.
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}


def save_checkpoint(
    directory: Path,
    *,
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra_tensors: dict[str, torch.Tensor],
) -> Path:
    """Write the checkpoint of the epoch ``state["epoch"]`` and point ``latest.json`` at it."""
    epoch = int(state["epoch"])
    name = f"epoch-{epoch:04d}"
    target = directory / name
    if target.exists():  # left by a run that crashed before updating latest.json
        shutil.rmtree(target)
    opt_plain, opt_tensors = _optimizer_parts(optimizer)
    with atomic_dir(target) as tmp:
        save_file(_owned(model.state_dict()), str(tmp / "model.safetensors"))
        save_file(_owned({**opt_tensors, **extra_tensors}), str(tmp / "trainer.safetensors"))
        full = {**state, "optimizer": opt_plain, "format": 1}
        (tmp / "state.json").write_text(json.dumps(full, indent=1))
    atomic_write_bytes(
        directory / "latest.json", json.dumps({"epoch": epoch, "path": name}).encode()
    )
    for old in sorted(directory.glob("epoch-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """Load the newest checkpoint in ``directory``, or ``None`` if there is none yet."""
    pointer = directory / "latest.json"
    if not pointer.exists():
        return None
    try:
        latest = json.loads(pointer.read_text())
        path = directory / str(latest["path"])
        state = json.loads((path / "state.json").read_text())
        model = load_file(str(path / "model.safetensors"))
        trainer = load_file(str(path / "trainer.safetensors"))
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise CheckpointError(
            f"checkpoint in {directory} is unreadable ({exc}); delete the folder to start "
            f"over, or pass resume=False"
        ) from None
    return Checkpoint(path=path, state=state, model=model, trainer=trainer)


def latest_epoch(directory: Path) -> int:
    """The epoch of the newest checkpoint in ``directory``, ``0`` when there is none
    (reads only ``latest.json``, not the tensors)."""
    try:
        return int(json.loads((directory / "latest.json").read_text())["epoch"])
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint pointer {directory / 'latest.json'} is unreadable ({exc}); delete "
            f"the folder to start over"
        ) from None
