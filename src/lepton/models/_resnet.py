"""A small CIFAR-style residual network (He et al., 2016) for low-resolution images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lepton.models._checks import NORMS, ArgChecker, image_batch, norm2d
from lepton.models._registry import register_model

__all__ = ["ResNet"]


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut; a 1x1 projection when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = norm2d(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = norm2d(norm, out_channels)
        self.stride = stride
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            # A strided 1x1 convolution is this 1x1 convolution of every stride-th pixel:
            # the pixels are picked in forward, because torch 2.13's CPU kernel for a
            # strided 1x1 convolution of a channels-last input with few channels (4 in, 8
            # out) gets the weight gradient wrong.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                norm2d(norm, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))  # (B, C_out, H / s, W / s)
        out = self.bn2(self.conv2(out))  # (B, C_out, H / s, W / s)
        picked = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        return torch.relu(out + self.shortcut(picked))


@register_model("resnet")
class ResNet(nn.Module):
    """Residual network: 3x3 stem, one stage of BasicBlocks per width, global average pool.

    Every stage after the first halves the spatial size, so any input of at least
    ``2 ** (len(widths) - 1)`` pixels a side works.

    Args:
        num_classes: Number of classes (>= 2).
        in_channels: Channels of the input images.
        widths: Channels of each stage.
        blocks_per_stage: BasicBlocks in each stage (>= 1).
        norm: ``"batch"`` (default), ``"group"`` (GroupNorm, DP-SGD-friendly) or ``"none"``.
        channels_last: Keep the activations after the stem in channels-last memory layout,
            which oneDNN (CPU) and cuDNN (GPU, with ``lp.fit(amp=True)``: tensor cores)
            convolve faster: 1.2-1.4x a training step of ``widths=(16, 32, 64)``,
            ``blocks_per_stage=2`` on one CPU core (``benchmarks/vision.py layout``).
            The same numbers either way, up to float rounding.

    Example:
        >>> model = ResNet(num_classes=10, in_channels=3)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 1,
        norm: str = "batch",
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        check = ArgChecker("ResNet", "ResNet(num_classes=10, in_channels=3, widths=[16, 32, 64])")
        check.int_("num_classes", num_classes, 2)
        self.in_channels = check.int_("in_channels", in_channels, 1)
        stage_widths = check.ints("widths", widths)
        check.int_("blocks_per_stage", blocks_per_stage, 1)
        check.choice("norm", norm, NORMS)
        self.channels_last = bool(channels_last)

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stage_widths[0], 3, padding=1, bias=False),
            norm2d(norm, stage_widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        channels = stage_widths[0]
        for stage, width in enumerate(stage_widths):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(_BasicBlock(channels, width, stride, norm))
                channels = width
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, C, H, W)`` (or ``(B, H, W)`` if one channel) to logits ``(B, K)``."""
        x = image_batch(x, "ResNet", self.in_channels)  # (B, C, H, W)
        x = self.stem(x)  # (B, widths[0], H, W)
        if self.channels_last:  # the stem's input has one channel or few: converted after it
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stages(x)  # (B, widths[-1], H', W')
        x = self.pool(x).flatten(1)  # (B, widths[-1])
        return self.fc(x)  # type: ignore[no-any-return]  # (B, num_classes)
