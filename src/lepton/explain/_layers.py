"""The methods that attribute through a layer: Grad-CAM on the last convolution of an
image model, and integrated gradients of token ids through the embedding.

Token IG interpolates the *embedding output* from the baseline ids' embedding (padding:
zeros) to the inputs' own, while the model still sees the input ids, so its masks and
lengths stay those of the input along the whole path. Captum's own convergence delta
would compare with ``f(baseline ids)``, a model run with other masks; the delta here
compares with the path's real start, so it measures only the integration error.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from torch import nn

from lepton.errors import ExplainError, ShapeError
from lepton.explain._inputs import embedding_layer

__all__ = ["gradcam", "picked", "resolve_layer", "token_integrated_gradients"]

Forward = Callable[[torch.Tensor], torch.Tensor]
_LAST_SPATIAL: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def resolve_layer(model: nn.Module, layer: Any) -> nn.Module | None:
    """``layer=``: a submodule, or its dotted name (``"features.2"``); None when not given."""
    if layer is None:
        return None
    if isinstance(layer, nn.Module):
        if not any(layer is m for m in model.modules()):
            raise ExplainError(f"layer {type(layer).__name__} is not a submodule of the model")
        return layer
    names = [n for n, m in model.named_modules() if n and isinstance(m, (nn.Conv2d, nn.Embedding))]
    try:
        return model.get_submodule(str(layer))
    except AttributeError:
        raise ExplainError(
            f"the model has no layer {layer!r}; name one of its modules, e.g. "
            f"{', '.join(names[-3:]) or 'features.0'}"
        ) from None


def gradcam(
    attr: ModuleType,
    model: nn.Module,
    forward: Forward,
    x: torch.Tensor,
    targets: list[int] | None,
    options: dict[str, Any],
) -> torch.Tensor:
    """Grad-CAM maps upsampled (bilinear) to the images and repeated over their channels."""
    layer = resolve_layer(model, options.get("layer"))
    if layer is None:
        found = _LAST_SPATIAL.setdefault(model, {})
        key = tuple(x.shape[1:])
        if key not in found:  # one probe per model and input size, not one per call
            found[key] = _spatial_layer(model, forward, x)
        layer = found[key]
    cam = attr.LayerGradCam(forward, layer).attribute(
        x, target=targets, relu_attributions=options.get("relu", True)
    )
    if not isinstance(cam, torch.Tensor) or cam.ndim != 4:
        raise ExplainError(
            f"gradcam needs a layer with a (B, C, H, W) output; {type(layer).__name__} gives "
            f"{tuple(cam.shape) if isinstance(cam, torch.Tensor) else type(cam).__name__}; "
            f"pass layer=<a convolutional layer>"
        )
    up = attr.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")  # (B, 1, H, W)
    return up.expand(x.shape[0], *x.shape[1:]) if x.ndim == 4 else up[:, 0]  # type: ignore[no-any-return]


def _spatial_layer(model: nn.Module, forward: Forward, x: torch.Tensor) -> nn.Module:
    """The last convolution the forward pass runs (Grad-CAM's usual layer), skipping 1x1
    projections (a residual shortcut runs after its block's last 3x3 convolution); for a
    model without ``nn.Conv2d``, the last module with a spatial ``(B, C, H, W)`` output."""
    convs: list[nn.Module] = []
    spatial: list[nn.Module] = []

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output[0, 0].numel() > 1:
            spatial.append(module)
            if isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1):
                convs.append(module)

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            forward(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    if not spatial:
        raise ExplainError(
            f"gradcam needs a convolutional layer, and {type(model).__name__} has no layer with a "
            f"spatial (B, C, H, W) output; use method='integrated_gradients' or 'occlusion'"
        )
    return convs[-1] if convs else spatial[-1]


def token_integrated_gradients(
    attr: ModuleType,
    model: nn.Module,
    forward: Forward,
    x: torch.Tensor,
    outputs: torch.Tensor,
    targets: list[int] | None,
    baseline: Any,
    options: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token attributions ``(B, T)`` (summed over the embedding) and the delta ``(B,)``."""
    layer = resolve_layer(model, options.get("layer")) or embedding_layer(model)
    if layer is None:
        raise ExplainError("token ids need a model with an nn.Embedding; pass layer=<its name>")
    base_ids = _token_baseline(model, x, baseline)
    lig = attr.LayerIntegratedGradients(forward, layer)
    with _cudnn_for_rnn(model, x):
        a = lig.attribute(
            x, baselines=base_ids, target=targets, n_steps=int(options.get("n_steps", 50)),
            internal_batch_size=options.get("internal_batch_size"),
        )  # fmt: skip
        with torch.no_grad():
            start = _with_layer_output_of(forward, layer, x, base_ids)
    gap = picked(outputs, targets) - picked(start, targets)
    return a.sum(dim=-1), a.reshape(len(a), -1).sum(dim=1) - gap  # (B, T, D) -> (B, T)


def picked(out: torch.Tensor, targets: list[int] | None) -> torch.Tensor:
    """Each example's output for its target class, ``(B,)``."""
    if targets is None:
        return out.reshape(-1)
    return out[torch.arange(len(out), device=out.device), targets]


def _with_layer_output_of(
    forward: Forward, layer: nn.Module, x: torch.Tensor, other: torch.Tensor
) -> torch.Tensor:
    """``forward(x)`` with ``layer``'s output replaced by its output on ``other``."""
    captured: list[Any] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        forward(other)
    finally:
        handle.remove()
    handle = layer.register_forward_hook(lambda _m, _i, _out: captured[0])
    try:
        return forward(x)
    finally:
        handle.remove()


def _token_baseline(model: nn.Module, x: torch.Tensor, baseline: Any) -> torch.Tensor:
    if baseline is None:
        embedding = embedding_layer(model)
        pad = getattr(model, "padding_idx", None)
        if pad is None and embedding is not None:
            pad = embedding.padding_idx
        return torch.full_like(x, int(pad or 0))  # every token padding: a zero embedding
    b = torch.as_tensor(baseline, device=x.device).long()
    try:
        return b.expand_as(x).contiguous()
    except RuntimeError:
        raise ShapeError(
            f"a token baseline is one id or ids shaped like the inputs {tuple(x.shape)}, got "
            f"{tuple(b.shape)}"
        ) from None


@contextmanager
def _cudnn_for_rnn(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    # cuDNN's RNN backward refuses eval mode; the native kernels differentiate it.
    if not (x.is_cuda and any(isinstance(m, nn.RNNBase) for m in model.modules())):
        yield
        return
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=False, benchmark=cudnn.benchmark,
                     deterministic=cudnn.deterministic, allow_tf32=cudnn.allow_tf32):  # fmt: skip
        yield
