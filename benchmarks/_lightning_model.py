"""The seed ConvNet as plain PyTorch, shared by ``trainer_overhead.py`` and the Lightning arm.

It imports nothing but torch, so the Lightning venv (which has no Lepton) builds exactly the
same module as the repo venv. Layer for layer it is ``lp.models.ConvNet(num_classes=10,
num_filters=[32, 64, 128], kernel_size=3)`` with BatchNorm: the same parameter names and
shapes (``trainer_overhead.py`` loads the zoo model's state dict into it with
``strict=True`` and checks that both give the same logits) and the same channels-last
forward.
"""

from __future__ import annotations

import torch
from torch import nn

FILTERS = (32, 64, 128)
HIDDEN = 256


class PlainConvNet(nn.Module):
    """``Conv(3, no bias) -> BatchNorm -> MaxPool(2) -> ReLU`` x3, then a 2-layer head."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels, side = 1, 28
        for out in FILTERS:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.MaxPool2d(2),
                    nn.ReLU(inplace=True),
                )
            )
            channels, side = out, side // 2
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * side * side, HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(HIDDEN, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 1, 28, 28)`` -> logits ``(B, 10)``."""
        for block in self.features:
            x = block(x.contiguous(memory_format=torch.channels_last))  # (B, C_i, H_i, W_i)
        return self.head(x)  # type: ignore[no-any-return]


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
