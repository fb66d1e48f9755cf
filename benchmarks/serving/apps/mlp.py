"""The model every server in the benchmark serves: an MLP 784-256-256-10 with seeded weights.

Imports nothing but torch, so each anchor's venv can load it. Every venv has the same torch
(2.13.0), so ``torch.manual_seed(0)`` gives bit-identical weights everywhere; ``run.py``
still checks that all servers return the same outputs before it measures anything.
"""

from __future__ import annotations

import torch
from torch import nn

IN_FEATURES = 784
OUT_FEATURES = 10


def build_mlp() -> nn.Module:
    """Linear-ReLU-Linear-ReLU-Linear, weights from ``torch.manual_seed(0)``, in eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(IN_FEATURES, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, OUT_FEATURES),
    )
    return model.eval()


def predict_rows(model: nn.Module, rows: list[list[float]]) -> list[list[float]]:
    """Runs ``rows`` (B, 784) through ``model`` and returns (B, 10) as nested lists."""
    with torch.inference_mode():
        out: list[list[float]] = model(torch.tensor(rows, dtype=torch.float32)).tolist()
    return out
