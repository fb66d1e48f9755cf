"""``prune``: magnitude pruning, and structured pruning that really removes channels.

Structured pruning rebuilds a zoo model with fewer filters (``ConvNet``) or hidden units
(``MLP``): in each layer it keeps the filters (rows) with the largest L1 norm and slices
every tensor that reads them (the BatchNorm that follows, the next layer's input
channels, the head's input columns) consistently. The result is an ordinary, smaller zoo
model whose config records the new widths, so it registers, rebuilds from its manifest
with :func:`lepton.models.build` and exports like any other.

Magnitude pruning (``structured=False``) zeroes the smallest weights of every
convolutional and linear layer (one global L1 threshold, ``torch.nn.utils.prune``), keeps
the mask while fine-tuning and then makes it permanent. The model keeps its shape: it is
sparser, not smaller or faster on a dense CPU kernel.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from lepton.compress._report import Compressed, CompressReport, parameter_count, stored_size
from lepton.compress._source import (
    DataArg,
    ModelArg,
    RegisterArg,
    dataset,
    figures,
    open_source,
    publish,
    test_accuracy,
)
from lepton.errors import CompressionError
from lepton.models import MLP, ConvNet, build, model_spec
from lepton.storage import Database
from lepton.train import fit

__all__ = ["prune"]


def _keep(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """Indices (ascending) of the output channels/rows with the largest L1 norm."""
    norms = weight.detach().abs().flatten(1).sum(dim=1)
    count = max(1, round(len(norms) * (1 - amount)))
    return norms.topk(count).indices.sort().values


@torch.no_grad()
def _copy(target: nn.Module, source: nn.Module, rows: torch.Tensor | None,
          cols: torch.Tensor | None) -> None:  # fmt: skip
    """Copy ``source``'s parameters and buffers into ``target``, sliced along dim 0
    (``rows``) and dim 1 (``cols``, weights only)."""
    theirs = dict(source.named_parameters(recurse=False)) | dict(
        source.named_buffers(recurse=False)
    )
    for name, value in (*target.named_parameters(recurse=False),
                        *target.named_buffers(recurse=False)):  # fmt: skip
        tensor = theirs[name]
        if rows is not None and tensor.dim() >= 1:
            tensor = tensor[rows]
        if cols is not None and tensor.dim() >= 2:
            tensor = tensor[:, cols]
        value.copy_(tensor)


def _layers(net: ConvNet) -> tuple[list[tuple[nn.Conv2d, nn.BatchNorm2d]], list[nn.Linear]]:
    """The ``(conv, batchnorm)`` of each block, and the head's linear layers."""
    blocks = []
    for block in net.features:
        conv, norm = (m for m in block.children() if isinstance(m, nn.Conv2d | nn.BatchNorm2d))
        assert isinstance(conv, nn.Conv2d)
        assert isinstance(norm, nn.BatchNorm2d)
        blocks.append((conv, norm))
    return blocks, [m for m in net.head if isinstance(m, nn.Linear)]


def _slim_convnet(net: ConvNet, amount: float) -> tuple[ConvNet, dict[str, Any]]:
    config = model_spec(net)["config"]
    blocks, head = _layers(net)
    keeps = [_keep(conv.weight, amount) for conv, _ in blocks]
    widths = [len(k) for k in keeps]
    slim = build("convnet", **{**config, "num_filters": widths})
    assert isinstance(slim, ConvNet)
    new_blocks, new_head = _layers(slim)
    previous: torch.Tensor | None = None
    for (conv, norm), (new_conv, new_norm), keep in zip(blocks, new_blocks, keeps, strict=True):
        _copy(new_conv, conv, keep, previous)  # its kept filters, over the kept inputs
        _copy(new_norm, norm, keep, None)
        previous = keep
    assert previous is not None
    # the head reads the last block's maps flattened as (C, H, W): each kept channel
    # brings its H * W consecutive columns
    per_channel = head[0].in_features // blocks[-1][0].out_channels
    columns = (previous[:, None] * per_channel + torch.arange(per_channel)).reshape(-1)
    _copy(new_head[0], head[0], None, columns)
    for new_linear, linear in zip(new_head[1:], head[1:], strict=True):
        _copy(new_linear, linear, None, None)
    return slim, {"num_filters": {"before": list(config["num_filters"]), "after": widths}}


def _slim_mlp(net: MLP, amount: float) -> tuple[MLP, dict[str, Any]]:
    config = model_spec(net)["config"]
    linears = [m for m in net.layers if isinstance(m, nn.Linear)]
    keeps = [_keep(layer.weight, amount) for layer in linears[:-1]]
    widths = [len(k) for k in keeps]
    slim = build("mlp", **{**config, "hidden": widths})
    assert isinstance(slim, MLP)
    new_linears = [m for m in slim.layers if isinstance(m, nn.Linear)]
    previous: torch.Tensor | None = None
    for i, (old, new) in enumerate(zip(linears, new_linears, strict=True)):
        keep = keeps[i] if i < len(keeps) else None
        _copy(new, old, keep, previous)
        previous = keep
    return slim, {"hidden": {"before": list(config["hidden"]), "after": widths}}


def _slim(net: nn.Module, amount: float) -> tuple[nn.Module, dict[str, Any]]:
    if isinstance(net, ConvNet):
        return _slim_convnet(net, amount)
    if isinstance(net, MLP):
        if not list(model_spec(net)["config"]["hidden"]):
            raise CompressionError(
                "this MLP has no hidden layer, so there are no units to remove; use "
                "structured=False (magnitude pruning)"
            )
        return _slim_mlp(net, amount)
    raise CompressionError(
        f"structured pruning rebuilds ConvNet and MLP models with fewer channels, and "
        f"this is a {type(net).__name__}; use structured=False (magnitude pruning)"
    )


def _prunable(net: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _sparsity(targets: list[tuple[nn.Module, str]]) -> float:
    weights = [getattr(m, name) for m, name in targets]
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights)) / total if total else 0.0


def prune(
    model: ModelArg,
    amount: float = 0.5,
    structured: bool = True,
    finetune: DataArg | None = None,
    epochs: int = 1,
    *,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    test: DataArg | None = None,
    register: RegisterArg = None,
    database: Database | None = None,
    quiet: bool = True,
) -> Compressed:
    """Prune a fraction ``amount`` of a model's channels (or weights), then fine-tune it.

    Args:
        model: An ``nn.Module`` or a registry reference to a PyTorch version.
        amount: Fraction to remove, in (0, 1): of each layer's filters/hidden units when
            ``structured``, else of all conv/linear weights (one global threshold).
        structured: Remove whole channels (a smaller, faster ``ConvNet``/``MLP``) or zero
            single weights (same shape, sparser).
        finetune: Training data (a :class:`~lepton.data.Dataset` or a catalog name: its
            training split) for a short recovery through :func:`lepton.fit`; ``None``
            skips it.
        epochs, batch_size, lr, seed: The fine-tuning's :func:`lepton.fit` settings.
        test: Labelled data (or a catalog name: its test split) for accuracy before/after.
        register: ``None``: register the result as a new version when ``model`` came from
            the registry (under its name); a name: under it; ``False``: never.
        database: The metadata database of the registry.
        quiet: No progress output from the fine-tuning.

    Returns:
        A :class:`Compressed` with the new module (the original is left untouched) and
        its report (parameters and sizes before/after, widths or sparsity, accuracy).

    Raises:
        CompressionError: ``amount`` outside (0, 1), an ONNX model, or structured
            pruning of a model other than ``ConvNet``/``MLP``.

    Example:
        >>> slim, report = lp.compress.prune(model, 0.5, finetune=train)  # doctest: +SKIP
        >>> report.parameters_after < report.parameters_before  # doctest: +SKIP
        True
    """
    started = time.perf_counter()
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 < amount < 1:
        raise CompressionError(
            f"amount must be a fraction in (0, 1), got {amount!r}; e.g. amount=0.5 removes "
            f"half of each layer's channels"
        )
    if not isinstance(epochs, int) or epochs < 1:
        raise CompressionError(f"epochs must be >= 1, got {epochs!r}")
    source = open_source(model, database=database)
    original = source.need_pytorch("prune")
    train_ds = dataset(finetune, "train") if finetune is not None else None
    test_ds = dataset(test, "test") if test is not None else None
    if structured:
        result, details = _slim(original, float(amount))
    else:
        result = copy.deepcopy(original)
        targets = _prunable(result)
        if not targets:
            raise CompressionError(
                f"{type(original).__name__} has no Conv2d or Linear layer to prune"
            )
        torch_prune.global_unstructured(
            targets, pruning_method=torch_prune.L1Unstructured, amount=float(amount)
        )
    if train_ds is not None:  # the masks stay in place while fine-tuning
        fit(result, train_ds, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
            quiet=quiet)  # fmt: skip
    if not structured:
        for module, name in targets:
            torch_prune.remove(module, name)  # type: ignore[no-untyped-call]  # weight = weight_orig * mask, for good
        details = {"sparsity": _sparsity(targets)}
    result.eval()
    acc_before, acc_after = test_accuracy(original, test_ds), test_accuracy(result, test_ds)
    recipe: dict[str, Any] = {"step": "prune", "amount": float(amount),
                              "structured": bool(structured), "criterion": "l1"}  # fmt: skip
    if train_ds is not None:
        recipe |= {"finetune": train_ds.name, "finetune_rows": len(train_ds), "epochs": epochs,
                   "batch_size": batch_size, "lr": lr, "seed": seed}  # fmt: skip
    metrics = {"accuracy": acc_after} if acc_after is not None else {}
    registered = publish(
        result, source=source, register=register, step="prune", recipe=recipe,
        metrics=metrics, data=train_ds or test_ds, database=database,
        measured=figures(test_ds, acc_before, acc_after),
    )  # fmt: skip
    report = CompressReport(
        step="prune", recipe=recipe, kind="pytorch", source=source.ref,
        size_before=stored_size(original), size_after=stored_size(result),
        parameters_before=parameter_count(original), parameters_after=parameter_count(result),
        accuracy_before=acc_before, accuracy_after=acc_after, registered=registered,
        seconds=time.perf_counter() - started, details=details,
    )  # fmt: skip
    return Compressed(model=result, report=report)
