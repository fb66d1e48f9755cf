"""Lepton's side of the benchmark: the MLP as ``lp.Service`` classes, batched and not.

    lepton serve benchmarks/serving/apps/lepton_mlp.py:MLP --host 127.0.0.1 --port 8000 --replicas 1
    lepton serve benchmarks/serving/apps/lepton_mlp.py:MLPUnbatched ...

Batched: the body is ``{"inputs": [784 floats]}`` and ``predict`` receives up to 32 of them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import lepton as lp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlp import build_mlp, predict_rows


class MLP(lp.Service):
    """Dynamic batching: up to 32 requests per forward pass, waiting at most 2 ms for them."""

    def setup(self) -> None:
        torch.set_num_threads(1)
        self.model = build_mlp()

    @lp.handler(batch_size=32, max_wait_ms=2)
    def predict(self, inputs: list[list[float]]) -> list[dict[str, list[float]]]:
        return [{"outputs": row} for row in predict_rows(self.model, inputs)]


class MLPUnbatched(lp.Service):
    """One request per forward pass."""

    def setup(self) -> None:
        torch.set_num_threads(1)
        self.model = build_mlp()

    @lp.handler
    def predict(self, inputs: list[float]) -> dict[str, list[float]]:
        return {"outputs": predict_rows(self.model, [inputs])[0]}
