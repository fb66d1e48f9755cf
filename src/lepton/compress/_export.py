"""``export_onnx``: a PyTorch model as one ONNX file, checked against PyTorch on real inputs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch
from torch import nn

from lepton.compress._report import Compressed, CompressReport, parameter_count, stored_size
from lepton.compress._source import (
    DataArg,
    ModelArg,
    RegisterArg,
    Source,
    check_inputs,
    dataset,
    figures,
    logits,
    open_source,
    parity,
    publish,
    test_accuracy,
)
from lepton.data import Dataset
from lepton.errors import CompressionError, LeptonError, ParityError
from lepton.registry import OnnxModule
from lepton.registry._artifact_check import parse_onnx
from lepton.registry._onnx import onnx_bytes
from lepton.storage import Database

__all__ = ["export_onnx", "export_source", "inputs_of"]

_SAMPLE_ROWS = 256  # real inputs the parity check runs when given a dataset


def inputs_of(sample: torch.Tensor | DataArg, role: str = "sample") -> torch.Tensor:
    """A float batch of real inputs: a tensor as is, a dataset's first rows, or those of a
    catalog dataset's test split."""
    if isinstance(sample, torch.Tensor):
        if sample.dim() == 0 or len(sample) == 0:
            raise CompressionError(f"the {role} is empty; pass a batch of real inputs")
        return sample.float()
    return dataset(sample, "test", _SAMPLE_ROWS).features.float()


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def export_source(source: Source, x: torch.Tensor) -> bytes:
    """ONNX bytes of the source's PyTorch model, traced on (up to 8 of) the inputs ``x``."""
    net = source.need_pytorch("export_onnx")
    # the exporter would fix a batch of one as the model's only batch size
    example = x[:8] if len(x) >= 2 else torch.cat([x, x])
    with _eval_mode(net):
        try:
            return onnx_bytes(net, example.cpu())
        except LeptonError:
            raise
        except Exception as exc:  # the exporter fails in many types (torch, onnxscript)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CompressionError(
                f"{type(net).__name__} cannot be exported to ONNX ({first[:300]}); check that "
                f"the sample has the model's input shape and that its forward uses only "
                f"traceable tensor operations"
            ) from None


def export_onnx(
    model: ModelArg,
    sample: torch.Tensor | DataArg,
    tolerance: float = 1e-4,
    *,
    test: DataArg | None = None,
    register: RegisterArg = None,
    database: Database | None = None,
) -> Compressed:
    """Export a PyTorch model to one self-contained ONNX file with a dynamic batch axis.

    onnxruntime then runs the file on ``sample`` and its outputs are compared with
    PyTorch's: the export is refused when they differ by more than ``tolerance``.

    Args:
        model: An ``nn.Module`` or a registry reference (``"mnist-convnet@production"``).
        sample: Real inputs: a batch tensor, a :class:`~lepton.data.Dataset` (its first
            256 rows) or a catalog name (the first 256 rows of its test split).
        tolerance: The largest accepted absolute difference of any output value.
        test: Labelled data (or a catalog name: its test split) to report accuracy on.
        register: ``None``: register the ONNX file as a new version when ``model`` came
            from the registry (under its name); a name: register under it; ``False``: never.
        database: The metadata database of the registry.

    Returns:
        A :class:`Compressed`: the :class:`~lepton.registry.OnnxModule`, its report
        (``max_abs_diff``, sizes) and the file's bytes.

    Raises:
        ParityError: onnxruntime and PyTorch differ by more than ``tolerance``.
        ShapeError: ``sample`` does not have the model's input shape.
        CompressionError: The model cannot be exported, or is already ONNX.

    Example:
        >>> onnx_model, report = lp.compress.export_onnx(model, "mnist")  # doctest: +SKIP
        >>> report.max_abs_diff < 1e-4  # doctest: +SKIP
        True
    """
    started = time.perf_counter()
    if not tolerance >= 0:
        raise CompressionError(f"tolerance must be >= 0, got {tolerance}; e.g. tolerance=1e-4")
    source = open_source(model, database=database)
    net = source.need_pytorch("export_onnx")
    x = inputs_of(sample)
    check_inputs(net, Dataset(x, name="sample"), "sample")
    data = export_source(source, x)
    exported = OnnxModule(data)
    diff, agreement = parity(logits(net, x), logits(exported, x))
    if not diff <= tolerance:
        raise ParityError(
            f"the ONNX export differs from PyTorch by {diff:.3g} on {len(x)} real inputs, "
            f"above the tolerance {tolerance:g}; raise tolerance= if that is acceptable, or "
            f"check the model for operations that export differently (e.g. custom kernels)"
        )
    test_ds = dataset(test, "test") if test is not None else None
    acc_before, acc_after = test_accuracy(net, test_ds), test_accuracy(exported, test_ds)
    recipe = {"step": "export_onnx", "format": "onnx", "opset": _opset(data)}
    metrics = {"accuracy": acc_after} if acc_after is not None else {}
    registered = publish(
        exported, source=source, register=register, step="export_onnx", recipe=recipe,
        metrics=metrics, onnx=data, data=test_ds, database=database,
        measured=figures(test_ds, acc_before, acc_after, diff, agreement),
    )  # fmt: skip
    report = CompressReport(
        step="export_onnx", recipe=recipe, kind="onnx", source=source.ref,
        size_before=stored_size(net), size_after=len(data),
        parameters_before=parameter_count(net), parameters_after=parameter_count(net),
        max_abs_diff=diff, agreement=agreement, tolerance=tolerance,
        accuracy_before=acc_before, accuracy_after=acc_after, registered=registered,
        seconds=time.perf_counter() - started, details={"checked_inputs": len(x)},
    )  # fmt: skip
    return Compressed(model=exported, report=report, onnx=data)


def _opset(data: bytes) -> int:
    model = parse_onnx(data)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
