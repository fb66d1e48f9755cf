"""A class-conditional DDPM (Ho et al. 2020) on 28x28 images, trained with
``lp.fit`` and sampled with DDIM (Song et al. 2021) and classifier-free guidance.

The forward process adds Gaussian noise in ``T`` steps; with ``a_t`` the cumulative
product of ``1 - beta`` (:class:`NoiseSchedule`), a noisy image is drawn in closed form::

    x_t = sqrt(a_t) * x_0 + sqrt(1 - a_t) * eps,   eps ~ N(0, I)

and the :class:`~lepton.vision._unet.UNet` learns to predict ``eps`` from ``(x_t, t,
label)`` (mean squared error). Images are scaled from [0, 1] to [-1, 1].

Training is :func:`lepton.train.fit` itself: the dataset's rows are the flattened images
with their label appended (:func:`pack`), the trained module is :class:`NoiseLoss` (the
U-Net plus the schedule; its forward draws ``t`` and ``eps``, drops the label to "no
class" 10% of the time for guidance, and returns each row's loss) and the ``loss=`` hook
averages them. Every ``lp.fit`` option (schedules, checkpoints, ``workers=``) applies.

Sampling (:func:`ddim_sample`) walks ``steps`` evenly spaced steps of the schedule
with the deterministic DDIM update, mixing the conditional and unconditional predictions
as ``eps_u + guidance * (eps_c - eps_u)`` (one batched forward for both).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lepton.errors import VisionError
from lepton.vision._unet import UNet

__all__ = ["NoiseLoss", "NoiseSchedule", "ddim_sample", "mean_loss", "pack"]

SCHEDULES = ("cosine", "linear")
LABEL_DROPOUT = 0.1  # classifier-free guidance: the share of rows trained without a label


class NoiseSchedule:
    """The ``T``-step variance schedule: ``betas``, ``alphas_bar`` (``a_t``), as tensors.

    ``"cosine"`` is Nichol & Dhariwal (2021) (``a_t = f(t)/f(0)``, ``f(t) =
    cos^2((t/T + s)/(1 + s) * pi/2)``, betas clipped at 0.999); ``"linear"`` is Ho et al.
    (betas from 1e-4 to 0.02 for T = 1000, scaled for other T).
    """

    def __init__(self, timesteps: int = 1000, kind: str = "cosine") -> None:
        if timesteps < 2 or kind not in SCHEDULES:
            raise VisionError(
                f"a noise schedule needs timesteps >= 2 and kind in {list(SCHEDULES)}, got "
                f"{timesteps}, {kind!r}"
            )
        self.timesteps, self.kind = timesteps, kind
        if kind == "cosine":
            s = 0.008
            steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        else:
            scale = 1000 / timesteps
            betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
        self.betas = betas.float()  # (T,)
        self.alphas_bar = torch.cumprod(1 - betas, dim=0).float()  # (T,) a_t

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t`` from ``x_0`` ``(N, ...)``, steps ``t`` ``(N,)`` and noise like ``x_0``."""
        a = self.alphas_bar.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))  # (N, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise


def pack(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows ``lp.fit`` can batch: ``(N, C*H*W + 1)``, the flattened image then its label."""
    return torch.cat([images.flatten(1).float(), labels.float()[:, None]], dim=1)


def mean_loss(outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``lp.fit``'s ``loss=`` hook for :class:`NoiseLoss`: the mean of the rows' losses."""
    return outputs.mean()


class NoiseLoss(nn.Module):
    """What ``lp.fit`` trains: ``forward(packed rows) -> (N,)`` per-row noise-prediction
    loss (its parameters are the U-Net's)."""

    def __init__(self, unet: UNet, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.unet, self.schedule = unet, schedule

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        u = self.unet
        n = rows.shape[0]
        x0 = rows[:, :-1].reshape(n, u.in_channels, u.image_size, u.image_size) * 2 - 1
        labels = rows[:, -1].long()  # (N,)
        if self.training:  # "no class" for a share of the rows: guidance needs both
            drop = torch.rand(n, device=rows.device) < LABEL_DROPOUT
            labels = labels.masked_fill(drop, u.num_classes)
        t = torch.randint(0, self.schedule.timesteps, (n,), device=rows.device)
        noise = torch.randn_like(x0)
        predicted = u(self.schedule.q_sample(x0, t, noise), t, labels)  # (N, C, S, S)
        return F.mse_loss(predicted, noise, reduction="none").flatten(1).mean(1)  # (N,)


@torch.no_grad()
def ddim_sample(
    unet: UNet, schedule: NoiseSchedule, x: torch.Tensor, labels: torch.Tensor, *,
    steps: int, guidance: float,
) -> torch.Tensor:  # fmt: skip
    """Deterministic DDIM (eta = 0) from noise ``x`` ``(N, C, S, S)`` to images in [-1, 1],
    of classes ``labels`` ``(N,)``, guided with scale ``guidance``."""
    a_bar = schedule.alphas_bar.to(x.device)  # (T,)
    times = torch.linspace(schedule.timesteps - 1, 0, steps).round().long().tolist()
    none = torch.full_like(labels, unet.num_classes)
    for i, t in enumerate(times):
        tt = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        if guidance == 1.0:
            eps = unet(x, tt, labels)
        else:  # conditional and unconditional predictions in one forward
            both = unet(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, none]))
            cond, free = both.chunk(2)
            eps = free + guidance * (cond - free)
        a_t = a_bar[t]
        a_prev = a_bar[times[i + 1]] if i + 1 < len(times) else torch.ones((), device=x.device)
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)  # predicted clean image
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()  # the noise consistent with it
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x
