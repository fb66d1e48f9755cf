"""A small class-conditional U-Net that predicts the noise of a DDPM (Ho et al. 2020).

Two resolutions for 28x28 images (28 -> 14 -> 7 and back), one residual block per level,
self-attention at the 7x7 bottleneck. The time step enters every residual block through a
sinusoidal embedding and an MLP; the class enters the same way through an
``nn.Embedding`` whose extra last row is the "no class" token that classifier-free
guidance (Ho & Salimans 2022) trains with and samples against.

Registered as ``"image-diffusion"`` so a registry version rebuilds it from its manifest.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lepton.errors import VisionError
from lepton.models import register_model

__all__ = ["UNet", "timestep_embedding"]


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer steps ``t`` ``(N,)`` -> ``(N, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)  # (N, dim)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding added in between, a 1x1 skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (N, cout, H, W)
        h = h + self.emb(F.silu(emb))[:, :, None, None]  # time + class, per channel
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return h + self.skip(x)  # type: ignore[no-any-return]


class _Attention(nn.Module):
    """Single-head self-attention over the pixels of a small feature map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)  # (N, C, HW) each
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.out(a.transpose(1, 2).reshape(n, c, h, w))  # type: ignore[no-any-return]


@register_model("image-diffusion")
class UNet(nn.Module):
    """The noise predictor ``eps(x_t, t, label)`` of :class:`lepton.vision.Generator`.

    Args:
        num_classes: Classes it is conditioned on (index ``num_classes`` means "none").
        in_channels: Image channels.
        image_size: Height = width of the images (a multiple of 4).
        channels: Channels at full and at half resolution, e.g. ``(32, 64)``.
        dropout: Dropout inside the residual blocks.
        timesteps: Steps of the noise schedule it was trained with (kept in the manifest).
        schedule: ``"cosine"`` or ``"linear"`` (kept in the manifest).
        classes: Class names (kept in the manifest; default ``"0"``, ``"1"``, ...).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        channels: tuple[int, int] | list[int] = (32, 64),
        dropout: float = 0.1,
        timesteps: int = 1000,
        schedule: str = "cosine",
        classes: list[str] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1 or image_size % 4 or len(channels) != 2 or min(channels) < 8:
            raise VisionError(
                f"UNet needs num_classes >= 1, image_size a multiple of 4 and two channel "
                f"widths >= 8, got {num_classes}, {image_size}, {list(channels)}"
            )
        c1, c2 = int(channels[0]), int(channels[1])
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        self.timesteps, self.schedule = timesteps, schedule
        self.classes = list(classes) if classes else [str(i) for i in range(num_classes)]
        emb = 4 * c1
        self.time_dim = c1
        self.time_mlp = nn.Sequential(nn.Linear(c1, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_emb = nn.Embedding(num_classes + 1, emb)  # last row: "no class"
        self.conv_in = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.down1 = _ResBlock(c1, c1, emb, dropout)  # 28x28
        self.pool1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)  # -> 14x14
        self.down2 = _ResBlock(c1, c2, emb, dropout)  # 14x14
        self.pool2 = nn.Conv2d(c2, c2, 3, stride=2, padding=1)  # -> 7x7
        self.mid1 = _ResBlock(c2, c2, emb, dropout)
        self.attn = _Attention(c2)
        self.mid2 = _ResBlock(c2, c2, emb, dropout)
        self.up2 = _ResBlock(c2 + c2, c2, emb, dropout)  # 14x14, with down2's output
        self.up1 = _ResBlock(c2 + c1, c1, emb, dropout)  # 28x28, with down1's output
        self.norm_out = _norm(c1)
        self.conv_out = nn.Conv2d(c1, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``x`` ``(N, C, S, S)`` noisy images, ``t`` ``(N,)`` steps, ``labels`` ``(N,)``
        class indices (``num_classes`` for none) -> the predicted noise ``(N, C, S, S)``."""
        emb = self.time_mlp(timestep_embedding(t, self.time_dim))  # (N, 4*c1)
        emb = emb + self.label_emb(labels)
        h0 = self.conv_in(x)  # (N, c1, S, S)
        h1 = self.down1(h0, emb)  # (N, c1, S, S)
        h2 = self.down2(self.pool1(h1), emb)  # (N, c2, S/2, S/2)
        h = self.mid1(self.pool2(h2), emb)  # (N, c2, S/4, S/4)
        h = self.mid2(self.attn(h), emb)
        h = F.interpolate(h, size=h2.shape[-2:], mode="nearest")  # (N, c2, S/2, S/2)
        h = self.up2(torch.cat([h, h2], dim=1), emb)
        h = F.interpolate(h, size=h1.shape[-2:], mode="nearest")  # (N, c2, S, S)
        h = self.up1(torch.cat([h, h1], dim=1), emb)  # (N, c1, S, S)
        return self.conv_out(F.silu(self.norm_out(h)))  # type: ignore[no-any-return]
