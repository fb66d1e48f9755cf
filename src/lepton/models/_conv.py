"""The seed-API convolutional classifier for small images (MNIST-sized by default)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lepton.models._checks import NORMS, ArgChecker, image_batch, norm2d
from lepton.models._registry import register_model

__all__ = ["ConvNet"]

_HIDDEN = 256  # width of the fully connected layer before the classifier


@register_model("convnet")
class ConvNet(nn.Module):
    """A plain CNN: one ``Conv -> Norm -> ReLU -> MaxPool(2)`` block per filter count.

    (Each block applies the pool before the ReLU, which computes exactly the same thing.)

    The head is ``flatten -> Dropout -> Linear(256) -> ReLU -> Dropout -> Linear``.

    Args:
        num_classes: Number of classes (>= 2).
        num_filters: Output channels of each convolutional block.
        kernel_size: The convolutions' size: an int (``3``), a ``[height, width]`` pair
            (``[3, 3]``, as PyTorch takes it) or one per block (``[5, 3, 3]`` or
            ``[[5, 5], [3, 3], [3, 1]]``); odd or even, padding keeps the size before
            pooling. The manifest records it as given.
        dropout: Dropout probability in the head, in [0, 1).
        in_channels: Channels of the input images (1 for MNIST).
        input_size: Height and width of the input images (an int for square images).
        norm: The normalisation after each convolution: ``"batch"`` (BatchNorm, the
            default), ``"group"`` (GroupNorm, for DP-SGD: ``lp.fit(..., privacy=DPSGD(...))``
            turns ``"batch"`` into it) or ``"none"``.

    Example:
        >>> model = ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3)
        >>> model(torch.zeros(8, 1, 28, 28)).shape
        torch.Size([8, 10])
    """

    def __init__(
        self,
        num_classes: int,
        num_filters: Sequence[int] = (32, 64, 128),
        kernel_size: int | Sequence[int] | Sequence[int | Sequence[int]] = 3,
        dropout: float = 0.5,
        in_channels: int = 1,
        input_size: int | Sequence[int] = 28,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check = ArgChecker(
            "ConvNet",
            "ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3, dropout=0.5)",
        )
        check.int_("num_classes", num_classes, 2)
        filters = check.ints("num_filters", num_filters)
        kernels = check.kernel_sizes("kernel_size", kernel_size, len(filters))
        p = check.fraction("dropout", dropout)
        check.int_("in_channels", in_channels, 1)
        check.choice("norm", norm, NORMS)
        sizes = [input_size] * 2 if isinstance(input_size, int) else input_size
        if not isinstance(sizes, Sequence) or len(sizes) != 2:
            raise check.fail(f"input_size must be an int or [height, width], got {input_size!r}")
        # Every block halves the map, so each side needs at least 2 ** blocks pixels.
        height, width = check.ints("input_size", sizes, minimum=2 ** len(filters))
        self.in_channels = in_channels
        self.input_size = (height, width)

        blocks: list[nn.Module] = []
        channels = in_channels
        for out, (kh, kw) in zip(filters, kernels, strict=True):
            # MaxPool before ReLU gives the same result as after it (both are monotone)
            # and runs the ReLU on a quarter of the values.
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, out, (kh, kw), padding=(kh // 2, kw // 2), bias=False),
                    norm2d(norm, out),
                    nn.MaxPool2d(2),
                    nn.ReLU(inplace=True),
                )
            )
            channels = out
            # An even kernel with padding k//2 grows the map by one pixel before pooling.
            height = (height + 2 * (kh // 2) - kh + 1) // 2
            width = (width + 2 * (kw // 2) - kw + 1) // 2
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(p),
            nn.Linear(channels * height * width, _HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(p),
            nn.Linear(_HIDDEN, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, C, H, W)`` (or ``(B, H, W)`` if one channel) to logits ``(B, K)``."""
        x = image_batch(x, "ConvNet", self.in_channels, self.input_size)  # (B, C, H, W)
        for block in self.features:
            # Channels-last activations make CPU (oneDNN) and GPU convolutions faster;
            # a no-op for the 1-channel input, so the first conversion is after block 1.
            x = block(x.contiguous(memory_format=torch.channels_last))  # (B, C_i, H_i, W_i)
        return self.head(x)  # type: ignore[no-any-return]  # (B, num_classes)
