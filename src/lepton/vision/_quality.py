"""How good generated images are, measured with a classifier Lepton trained itself.

* :func:`frechet_distance`: the Frechet distance between two sets of images, each
  summarised by the mean and covariance of a classifier's penultimate features (the input
  of its last linear layer). It is the recipe of the FID (Heusel et al. 2017), but **not
  the Inception FID**: the features are those of a small MNIST/Fashion-MNIST classifier,
  so the figures compare only with figures from the same classifier.
* :func:`label_accuracy`: how often the classifier predicts the class the images were
  generated for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lepton.errors import VisionError

if TYPE_CHECKING:
    from lepton.data import Dataset
    from lepton.vision._generator import Generator

__all__ = ["classifier_features", "frechet_distance", "label_accuracy", "sample_quality"]


def _as_float(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4:
        raise VisionError(f"expected images (N, C, H, W), got {tuple(images.shape)}")
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


@contextmanager
def _penultimate(classifier: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collects the input of ``classifier``'s last ``nn.Linear`` while the block runs."""
    linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise VisionError(
            f"{type(classifier).__name__} has no linear layer whose input to use as "
            f"features; use a classifier such as lp.models.ConvNet or ResNet"
        )
    seen: list[torch.Tensor] = []
    handle = linears[-1].register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].detach().flatten(1).cpu())
    )
    try:
        yield seen
    finally:
        handle.remove()


@torch.no_grad()
def classifier_features(
    images: torch.Tensor, classifier: nn.Module, *, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """The penultimate features ``(N, D)`` and the logits ``(N, K)`` of ``classifier`` on
    ``images`` (uint8, or floats in [0, 1] as the classifier was trained on)."""
    x = _as_float(images)
    classifier.eval()
    device = next(classifier.parameters()).device
    logits = []
    with _penultimate(classifier) as seen:
        for i in range(0, len(x), batch_size):
            logits.append(classifier(x[i : i + batch_size].to(device)).cpu())
    return torch.cat(seen), torch.cat(logits)


def _frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of two feature sets."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)  # (D, D)
    vals, vecs = torch.linalg.eigh(s_a)
    root_a = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T  # S_a^1/2
    # Tr((S_a S_b)^1/2) = Tr((S_a^1/2 S_b S_a^1/2)^1/2): eigenvalues of a symmetric matrix
    middle = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp(min=0).sqrt().sum()
    value = (mu_a - mu_b).pow(2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * middle
    return float(value.clamp(min=0))


def frechet_distance(
    images_a: torch.Tensor, images_b: torch.Tensor, classifier: nn.Module, *, batch_size: int = 500
) -> float:
    """The Frechet distance between two image sets in ``classifier``'s penultimate feature
    space (e.g. generated vs real test images; 0 for identical statistics). Not the
    Inception FID: compare it only with distances from the same classifier."""
    if len(images_a) < 2 or len(images_b) < 2:
        raise VisionError("the Frechet distance needs at least 2 images in each set")
    fa, _ = classifier_features(images_a, classifier, batch_size=batch_size)
    fb, _ = classifier_features(images_b, classifier, batch_size=batch_size)
    return _frechet(fa, fb)


def label_accuracy(
    images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module, *, batch_size: int = 500
) -> float:
    """The share of ``images`` that ``classifier`` puts in the class of ``labels`` ``(N,)``
    (for generated images: the classes they were asked for)."""
    if len(images) != len(labels) or len(images) == 0:
        raise VisionError(
            f"{len(images)} images and {len(labels)} labels; give one label per image"
        )
    _, logits = classifier_features(images, classifier, batch_size=batch_size)
    return float((logits.argmax(1) == labels.cpu()).float().mean())


def sample_quality(
    generator: Generator, test: Dataset, classifier: nn.Module, *, n: int = 1000,
    seed: int = 0, **draw: Any,
) -> dict[str, float]:  # fmt: skip
    """How good ``n`` samples of ``generator`` are (every class equally often, drawn with
    ``draw``: ``steps``, ``guidance``, ``temperature``), judged by ``classifier`` against
    the real ``test`` images (at least ``2 n``):

    * ``label_accuracy``: the share the classifier puts in the class asked for;
    * ``frechet_distance``: to the first ``n`` test images;
    * ``frechet_floor``: the same distance from the next ``n`` real test images (two
      halves of the real test set: what a perfect generator would score);
    * ``real_label_accuracy``: the classifier on those real images (its own ceiling);
    * ``ms_per_image``: sampling time.
    """
    if test.targets is None or len(test) < 2 * n:
        raise VisionError(f"sample_quality needs >= {2 * n} labelled test images, got {len(test)}")
    classes = generator.model.num_classes
    asked = torch.arange(n) % classes  # every class equally
    started = time.perf_counter()
    fake = generator.sample(n, label=asked.tolist(), seed=seed, **draw)
    ms = (time.perf_counter() - started) * 1000 / n
    real = (test.features[: 2 * n].clamp(0, 1) * 255).round().to(torch.uint8)
    real_a, real_b = real[:n], real[n : 2 * n]
    return {
        "label_accuracy": label_accuracy(fake, asked, classifier),
        "frechet_distance": frechet_distance(fake, real_a, classifier),
        "frechet_floor": frechet_distance(real_b, real_a, classifier),
        "real_label_accuracy": label_accuracy(real_b, test.targets[n : 2 * n], classifier),
        "ms_per_image": ms,
    }
