"""``Generator``: class-conditional image generation on Lepton's data, training and
registry, with one of two models:

* ``kind="ddpm"``: a denoising diffusion model (:mod:`lepton.vision._diffusion`, a small
  U-Net, cosine schedule, classifier-free guidance, DDIM sampling in ``steps`` steps).
  The better generator, but it needs GPU-hours or many CPU-hours to train well.
* ``kind="vae"``: a conditional VAE (:mod:`lepton.vision._vae`), which trains on MNIST in
  minutes on a laptop CPU; its samples are blurrier (``steps`` and ``guidance`` do not
  apply to it).

Both train through ``lp.fit`` on packed rows (image then label) with a module that returns
each row's loss; both register as an ordinary ``nn.Module`` version (safetensors weights,
a manifest that rebuilds it) and :meth:`Generator.load` takes either back.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lepton.data import Dataset
from lepton.errors import NotFittedError, VisionError
from lepton.train import FitResult, fit
from lepton.vision._diffusion import NoiseLoss, NoiseSchedule, ddim_sample, mean_loss, pack
from lepton.vision._unet import UNet
from lepton.vision._vae import CVAE, VAELoss

if TYPE_CHECKING:
    from lepton.registry import ModelVersion
    from lepton.storage import Database

__all__ = ["GENERATOR_ARCHITECTURES", "KINDS", "Generator", "to_png"]

KINDS = ("ddpm", "vae")
#: Registered architecture names of generators (the serving table routes them).
GENERATOR_ARCHITECTURES = frozenset({"image-diffusion", "image-vae"})
MAX_SAMPLES = 10_000


def to_png(images: torch.Tensor, *, columns: int | None = None) -> bytes:
    """PNG bytes of ``images``: one ``(C, H, W)`` image, or a batch ``(N, C, H, W)`` laid
    out as a grid of ``columns`` (default: up to 10 a row). uint8, or floats in [0, 1]."""
    from PIL import Image

    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
        raise VisionError(
            f"to_png takes (C, H, W) or (N, C, H, W) images, got {tuple(images.shape)}"
        )
    if images.dtype != torch.uint8:
        images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    n, c, h, w = images.shape
    cols = max(1, min(columns or 10, n))
    grid = torch.zeros(c, math.ceil(n / cols) * h, cols * w, dtype=torch.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, cols)
        grid[:, r * h : (r + 1) * h, k * w : (k + 1) * w] = image
    array = grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).contiguous().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class Generator:
    """A class-conditional image generator.

    Args:
        classes: Class names, or their number.
        kind: ``"ddpm"`` (diffusion) or ``"vae"`` (conditional VAE).
        image_size: Height = width of the images (a multiple of 4 for ``"ddpm"``).
        in_channels: Image channels.
        **options: The model's own options: ``channels=(32, 64)``, ``timesteps=1000``,
            ``schedule="cosine"``, ``dropout=0.1`` for ``"ddpm"``
            (:class:`~lepton.vision._unet.UNet`); ``hidden=(512, 256)``, ``latent=2``
            for ``"vae"`` (:class:`~lepton.vision._vae.CVAE`).

    Example:
        >>> train = lp.data.load("mnist", split="train")  # doctest: +SKIP
        >>> gen = lp.vision.Generator(train.classes, kind="vae")
        >>> gen.fit(train, epochs=10)  # doctest: +SKIP
        >>> gen.sample(8, label=3, seed=0).shape  # doctest: +SKIP
        torch.Size([8, 1, 28, 28])
    """

    model: UNet | CVAE

    def __init__(
        self,
        classes: Sequence[str] | int = 10,
        *,
        kind: str = "ddpm",
        image_size: int = 28,
        in_channels: int = 1,
        **options: Any,
    ) -> None:
        if kind not in KINDS:
            raise VisionError(f"unknown generator kind {kind!r}; choose from {list(KINDS)}")
        names = [str(i) for i in range(classes)] if isinstance(classes, int) else list(classes)
        if not names:
            raise VisionError("a Generator needs at least one class")
        self.kind = kind
        self.config: dict[str, Any] = {
            "num_classes": len(names), "in_channels": in_channels, "image_size": image_size,
            "classes": names, **options,
        }  # fmt: skip
        try:
            self.model = UNet(**self.config) if kind == "ddpm" else CVAE(**self.config)
        except TypeError as exc:
            raise VisionError(f"bad option for a {kind!r} generator: {exc}") from None
        self.result: FitResult | None = None
        self.fitted = False

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes)

    @property
    def schedule(self) -> NoiseSchedule:
        """The noise schedule of a ``"ddpm"`` generator."""
        if not isinstance(self.model, UNet):
            raise VisionError("only a 'ddpm' generator has a noise schedule")
        return NoiseSchedule(self.model.timesteps, self.model.schedule)

    @classmethod
    def from_model(cls, model: nn.Module) -> Generator:
        """A trained :class:`Generator` around ``model`` (e.g. a registry version's)."""
        if not isinstance(model, (UNet, CVAE)):
            raise VisionError(
                f"expected an image generator (image-diffusion or image-vae), got "
                f"{type(model).__name__}"
            )
        gen = cls.__new__(cls)
        gen.kind = "ddpm" if isinstance(model, UNet) else "vae"
        from lepton.models import model_spec

        gen.config = dict(model_spec(model)["config"])
        gen.model, gen.result, gen.fitted = model.eval(), None, True
        return gen

    @classmethod
    def load(cls, ref: str, *, database: Database | None = None) -> Generator:
        """The generator registered as ``ref`` (``"mnist-gen:1"``, ``"mnist-gen@production"``)."""
        from lepton.registry import load_model

        return cls.from_model(load_model(ref, database=database))

    def register(self, name: str, **options: Any) -> ModelVersion:
        """Register the model as the next version of ``name`` (``lp.register``'s options)."""
        from lepton.registry import register

        self._check_fitted()
        return register(self.model, name, **options)

    def fit(
        self,
        data: Dataset,
        *,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 2e-3,
        schedule: str | None = "onecycle",
        seed: int = 0,
        quiet: bool = True,
        **fit_options: Any,
    ) -> Generator:
        """Train on a labelled image dataset (``lp.data.load("mnist")``) with ``lp.fit``
        (extra keyword arguments go to it); ``self.result`` holds its FitResult."""
        m = self.model
        if data.targets is None or data.task != "classification":
            raise VisionError(
                "Generator.fit takes a labelled image dataset, e.g. lp.data.load('mnist')"
            )
        if tuple(data.input_shape) != (m.in_channels, m.image_size, m.image_size):
            raise VisionError(
                f"the images are {tuple(data.input_shape)}, this Generator makes "
                f"{(m.in_channels, m.image_size, m.image_size)}; build it with image_size= "
                f"and in_channels= to match"
            )
        if int(data.targets.max()) >= m.num_classes:
            raise VisionError(
                f"the labels go up to {int(data.targets.max())} but the Generator has "
                f"{m.num_classes} classes; build it with classes=dataset.classes"
            )
        rows = Dataset(pack(data.features, data.targets), torch.zeros(len(data)),
                       name=data.name, task="regression")  # fmt: skip
        torch.manual_seed(seed)  # the weights' initialisation follows the seed too
        trainer: nn.Module
        if self.kind == "ddpm":
            self.model = UNet(**self.config)
            trainer = NoiseLoss(self.model, self.schedule)
        else:
            self.model = CVAE(**self.config)
            trainer = VAELoss(self.model)
        self.result = fit(trainer, rows, epochs=epochs, batch_size=batch_size, lr=lr,
                          schedule=schedule, seed=seed, quiet=quiet, loss=mean_loss,
                          **fit_options)  # fmt: skip
        self.model.eval()
        self.fitted = True
        return self

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError("this Generator is not trained yet; call fit(dataset) first")

    def label_index(self, label: int | str) -> int:
        """The class index of ``label`` (an index or a class name)."""
        classes = self.model.classes
        if isinstance(label, str) and label in classes:
            return classes.index(label)
        if isinstance(label, int) and 0 <= label < len(classes):
            return label
        raise VisionError(
            f"unknown label {label!r}; choose an index below {len(classes)} or one of {classes}"
        )

    def label_indices(self, n: int, label: int | str | Sequence[int] | None) -> list[int]:
        """The class index of each of ``n`` images asked for with ``label`` (as ``sample``)."""
        return [int(i) for i in self._labels(n, label)]

    def _labels(self, n: int, label: int | str | Sequence[int] | None) -> torch.Tensor:
        if label is None:  # every class in turn
            return torch.arange(n) % self.model.num_classes
        if isinstance(label, (int, str)):
            return torch.full((n,), self.label_index(label))
        labels = torch.tensor([self.label_index(int(v)) for v in label], dtype=torch.long)
        if len(labels) != n:
            raise VisionError(f"{len(labels)} labels for {n} images; give one per image")
        return labels

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        label: int | str | Sequence[int] | None = None,
        steps: int = 25,
        guidance: float = 2.0,
        seed: int = 0,
        temperature: float = 1.0,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """``n`` images as uint8 ``(n, C, S, S)`` of class ``label`` (an index or a name; a
        sequence gives one label per image; ``None`` cycles through the classes). A
        ``"ddpm"`` generator takes ``steps`` DDIM steps with guidance scale ``guidance``
        (0: unconditional, 1: plain conditional); a ``"vae"`` generator draws its codes
        from N(0, ``temperature``^2) (below 1: more typical, less varied images). The same
        ``seed``, the same images."""
        self._check_fitted()
        m = self.model
        top = self.schedule.timesteps if isinstance(m, UNet) else MAX_SAMPLES
        if not 1 <= n <= MAX_SAMPLES or not 1 <= steps <= top or guidance < 0 or temperature < 0:
            raise VisionError(
                f"sample needs 1 <= n <= {MAX_SAMPLES}, 1 <= steps <= {top}, guidance >= 0 "
                f"and temperature >= 0, got n={n}, steps={steps}, guidance={guidance}, "
                f"temperature={temperature}"
            )
        labels = self._labels(n, label)
        gen = torch.Generator().manual_seed(seed)
        m.eval()
        device = next(m.parameters()).device
        if isinstance(m, UNet):
            noise = torch.randn(n, m.in_channels, m.image_size, m.image_size, generator=gen)
            schedule = self.schedule
            parts = [
                ddim_sample(
                    m,
                    schedule,
                    noise[i : i + batch_size].to(device),
                    labels[i : i + batch_size].to(device),
                    steps=steps,
                    guidance=guidance,
                ).cpu()
                for i in range(0, n, batch_size)
            ]
            images = (torch.cat(parts) + 1) / 2  # [-1, 1] -> [0, 1]
        else:
            z = torch.randn(n, m.latent, generator=gen) * temperature
            images = torch.cat([
                m(z[i : i + batch_size].to(device), labels[i : i + batch_size].to(device))
                .sigmoid().cpu()
                for i in range(0, n, batch_size)
            ])  # fmt: skip
        return (images.clamp(0, 1) * 255).round().to(torch.uint8)

    def to_png(self, images: torch.Tensor, *, columns: int | None = None) -> bytes:
        """PNG bytes of sampled images (a grid for a batch); see :func:`to_png`."""
        return to_png(images, columns=columns)
