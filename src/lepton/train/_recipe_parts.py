"""The recipe's data and model plumbing: catalog splits, building a zoo model for a
dataset, and saving a trained model to a folder.

Kept apart from :mod:`lepton.train.recipe` (the config and the run) so each reads on its
own; the recipe re-exports these names, which other packages import from there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from safetensors.torch import save_file
from torch import nn

from lepton import data as lp_data
from lepton import models as lp_models
from lepton._fs import atomic_dir
from lepton.data import Dataset
from lepton.errors import ConfigError
from lepton.train._result import FitResult

__all__ = ["HOLDOUT", "build_model", "load_data", "save_model", "splits"]

HOLDOUT = 1 / 12  # of the training split, for val="holdout"


def load_data(
    name: str, split: Literal["train", "test", "all"], limit: int | None = None
) -> Dataset:
    """A catalog split, cut to its first ``limit`` rows when given."""
    ds = lp_data.load(name, split=split)
    return ds.subset(slice(0, limit)) if limit is not None and limit < len(ds) else ds


def splits(
    data: str, *, limit: int | None, val: str | None
) -> tuple[Dataset, Dataset | None, Dataset]:
    """``(train, val, test)`` of catalog dataset ``data`` for a recipe's ``val`` setting:
    ``"holdout"`` (1/12 of the training split, stratified, seed 0), ``"test"`` (the test
    split doubles as validation) or ``None``."""
    full = load_data(data, "train", limit)
    test = lp_data.load(data, split="test")
    if val == "holdout":
        train_ds, val_ds = full.split(test_size=HOLDOUT, seed=0)
        return train_ds, val_ds, test
    return full, (test if val == "test" else None), test


def build_model(name: str, ds: Dataset, overrides: Mapping[str, Any]) -> nn.Module:
    """Build zoo model ``name`` with input and output sizes that fit ``ds``
    (``overrides`` win)."""
    accepted = lp_models.model_parameters(name)
    shape = ds.input_shape
    auto: dict[str, Any] = {}
    if ds.task == "classification":
        auto["num_classes"] = ds.num_classes
    elif "out_features" in accepted:
        auto["out_features"] = (
            1 if ds.targets is None or ds.targets.dim() == 1 else ds.targets.shape[1]
        )
    if "in_features" in accepted:
        auto["in_features"] = math.prod(shape)
    if len(shape) == 3:
        auto["in_channels"] = shape[0]
        auto["input_size"] = [shape[1], shape[2]]
    config = {k: v for k, v in auto.items() if k in accepted}
    config.update(overrides)
    return lp_models.build(name, **config)


def save_model(
    folder: Path, model: nn.Module, train_ds: Dataset, metrics: dict[str, float], result: FitResult
) -> Path:
    """Write ``folder`` (new) atomically: ``model.safetensors``, ``manifest.json`` (what
    rebuilds the model, with the metrics and the fit) and ``dataset.json`` (the training
    data's lineage, input shape and classes)."""
    if folder.exists():
        raise ConfigError(f"{folder} already exists; save to a new folder")
    manifest = {
        "model": lp_models.model_spec(model),
        "dataset": {
            "name": train_ds.name,
            "fingerprint": train_ds.fingerprint(),
            "preprocessing": list(train_ds.preprocessing),
        },
        "metrics": metrics,
        "fit": result.to_dict(),
    }
    summary = {
        "name": train_ds.name, "rows": len(train_ds), "fingerprint": train_ds.fingerprint(),
        "preprocessing": train_ds.preprocessing, "input_shape": list(train_ds.input_shape),
        "task": train_ds.task, "classes": train_ds.classes,
    }  # fmt: skip
    with atomic_dir(folder) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        (tmp / "dataset.json").write_text(json.dumps(summary, indent=1))
    return folder
