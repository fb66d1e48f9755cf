"""A conditional variational autoencoder (Kingma & Welling 2014; Sohn et al. 2015) for
small images: the generator this CPU trains in minutes.

The encoder maps an image and its one-hot class to a Gaussian over a ``latent``-dimension
code; the decoder maps a code and a class back to pixel logits. Trained on the negative
evidence lower bound (Bernoulli pixel likelihood + KL to N(0, I)); sampling draws a code
from N(0, I) and decodes it with the requested class. Registered as ``"image-vae"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lepton.errors import VisionError
from lepton.models import register_model

__all__ = ["CVAE", "VAELoss"]


@register_model("image-vae")
class CVAE(nn.Module):
    """Encoder ``(image, class) -> N(mu, sigma)``, decoder ``(code, class) -> image``.

    Args:
        num_classes: Classes it is conditioned on.
        in_channels: Image channels.
        image_size: Height = width of the images.
        hidden: Widths of the two hidden layers of the encoder (the decoder mirrors them).
        latent: Dimension of the code.
        classes: Class names (kept in the manifest; default ``"0"``, ``"1"``, ...).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        hidden: tuple[int, int] | list[int] = (512, 256),
        latent: int = 2,
        classes: list[str] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1 or latent < 1 or len(hidden) != 2 or min(hidden) < 1:
            raise VisionError(
                f"CVAE needs num_classes >= 1, latent >= 1 and two hidden widths, got "
                f"{num_classes}, {latent}, {list(hidden)}"
            )
        h1, h2 = int(hidden[0]), int(hidden[1])
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        self.latent = latent
        self.classes = list(classes) if classes else [str(i) for i in range(num_classes)]
        pixels = in_channels * image_size * image_size
        self.encoder = nn.Sequential(
            nn.Linear(pixels + num_classes, h1), nn.SiLU(), nn.Linear(h1, h2), nn.SiLU()
        )
        self.to_stats = nn.Linear(h2, 2 * latent)  # mu and log-variance
        self.decoder = nn.Sequential(
            nn.Linear(latent + num_classes, h2), nn.SiLU(), nn.Linear(h2, h1), nn.SiLU(),
            nn.Linear(h1, pixels),
        )  # fmt: skip

    def encode(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(N, C, S, S)`` in [0, 1] and labels ``(N,)`` -> ``mu`` and ``logvar``,
        ``(N, latent)`` each."""
        onehot = F.one_hot(labels, self.num_classes).float()
        mu, logvar = self.to_stats(self.encoder(torch.cat([x.flatten(1), onehot], 1))).chunk(2, 1)
        return mu, logvar.clamp(-10, 10)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Codes ``(N, latent)`` and labels ``(N,)`` -> pixel logits ``(N, C, S, S)``."""
        onehot = F.one_hot(labels, self.num_classes).float()
        logits: torch.Tensor = self.decoder(torch.cat([z, onehot], 1))  # (N, C*S*S)
        return logits.view(-1, self.in_channels, self.image_size, self.image_size)


class VAELoss(nn.Module):
    """What ``lp.fit`` trains: packed rows (image then label,
    :func:`~lepton.vision._diffusion.pack`) -> ``(N,)`` negative ELBO per row, in nats."""

    def __init__(self, vae: CVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        v = self.vae
        n = rows.shape[0]
        x = rows[:, :-1].reshape(n, v.in_channels, v.image_size, v.image_size)  # [0, 1]
        labels = rows[:, -1].long()
        mu, logvar = v.encode(x, labels)  # (N, latent) each
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)  # the reparameterisation
        logits = v(z, labels)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return recon + kl  # (N,)
