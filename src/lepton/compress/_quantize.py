"""``quantize``: int8 ONNX models through ONNX Runtime, for linear and convolutional layers.

The path, chosen by measurement (``benchmarks/compress.py``) on this x86 CPU (AVX2, no
VNNI):

1. export to fp32 ONNX (unless the model already is ONNX);
2. ONNX Runtime's ``quant_pre_process`` (shape inference, BatchNorm folded into Conv),
   then ``Relu`` moved before ``MaxPool`` so it folds into the convolution
   (:mod:`lepton.compress._graph` says why);
3. ``method="static"``: ``quantize_static`` with per-channel int8 weights, uint8
   activations and ranges calibrated on real data (MinMax by default), in the QDQ format
   (``QuantizeLinear``/``DequantizeLinear`` around the fp32 ops, which onnxruntime fuses
   into ``QLinearConv``/``QGemm`` kernels when it loads the model); it ran as fast as
   or faster than the QOperator format in every interleaved measurement, and is the
   format onnxruntime recommends;
   ``method="dynamic"``: ``quantize_dynamic`` of ``MatMul``/``Gemm`` only (activation
   ranges computed per batch at run time), because dynamic int8 convolutions
   (``ConvInteger``) ran 4-8x *slower* than fp32 ONNX here;
4. the int8 model is checked against the fp32 one on real inputs.

``torch.ao.quantization.quantize_dynamic`` is deprecated and not used. PyTorch 2 export
quantization (torchao's ``X86InductorQuantizer`` + ``torch.compile``) is measured in the
benchmark but not offered: torchao is not a dependency, its result is a compiled
PyTorch graph rather than a file the registry and ``lepton deploy`` serve, each new
batch size recompiles, and it ran slower than onnxruntime's int8 here.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from lepton.compress._export import export_source, inputs_of
from lepton.compress._graph import int8_initializers, node_types, pre_process, scratch
from lepton.compress._report import Compressed, CompressReport, parameter_count, stored_size
from lepton.compress._source import (
    DataArg,
    ModelArg,
    RegisterArg,
    check_inputs,
    dataset,
    figures,
    logits,
    open_source,
    parity,
    publish,
    test_accuracy,
)
from lepton.errors import CompressionError, ParityError
from lepton.registry import OnnxModule
from lepton.storage import Database

__all__ = ["CALIBRATIONS", "FORMATS", "METHODS", "calibration_reader", "quantize"]

METHODS = ("static", "dynamic")
FORMATS = ("qdq", "qoperator")
CALIBRATIONS = ("minmax", "entropy", "percentile")
_BATCH = 64  # rows per calibration batch
_CHECK_ROWS = 1000  # real inputs of the parity check


def _choice(what: str, value: object, allowed: tuple[str, ...], example: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise CompressionError(
            f"unknown {what} {value!r}; use one of {', '.join(map(repr, allowed))} (e.g. {example})"
        )
    return value


def calibration_reader(name: str, x: torch.Tensor) -> Any:
    """An onnxruntime ``CalibrationDataReader`` over the rows of ``x``, ``_BATCH`` at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    rows = x.float().numpy()
    batches: Iterator[dict[str, Any]] = iter(
        [{name: rows[i : i + _BATCH]} for i in range(0, len(rows), _BATCH)]
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime is untyped
        def get_next(self) -> dict[str, Any] | None:
            return next(batches, None)

    return Reader()


def _int8(
    prepared: Path,
    target: Path,
    *,
    method: str,
    calibration: torch.Tensor,
    quant_format: str,
    calibrate: str,
    per_channel: bool,
) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if method == "dynamic":
        quantize_dynamic(
            str(prepared), str(target), weight_type=QuantType.QInt8, per_channel=per_channel,
            op_types_to_quantize=["MatMul", "Gemm"],
        )  # fmt: skip
        return
    name = OnnxModule(prepared.read_bytes()).input_name
    # the entropy and percentile calibrators print their progress to stdout
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}  # fmt: skip
    formats = {"qoperator": QuantFormat.QOperator, "qdq": QuantFormat.QDQ}
    # the entropy and percentile calibrators print their progress to stdout
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(prepared), str(target), calibration_reader(name, calibration),
            quant_format=formats[quant_format], per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=methods[calibrate],
        )  # fmt: skip


def quantize(
    model: ModelArg,
    method: Literal["static", "dynamic"] = "static",
    calibration: DataArg | None = None,
    *,
    backend: Literal["onnxruntime"] = "onnxruntime",
    quant_format: Literal["qdq", "qoperator"] = "qdq",
    calibrate: Literal["minmax", "entropy", "percentile"] = "minmax",
    per_channel: bool = True,
    calibration_size: int = 512,
    test: DataArg | None = None,
    tolerance: float | None = None,
    register: RegisterArg = None,
    database: Database | None = None,
) -> Compressed:
    """Quantize a model to int8 (weights and activations) as an ONNX model.

    Args:
        model: An ``nn.Module`` (exported to ONNX first), a registry reference to a
            PyTorch or ONNX version (``"mnist-convnet@production"``), or the result of
            :func:`export_onnx` (its file is quantized as is).
        method: ``"static"``: convolutions and linear layers in int8, activation ranges
            calibrated on ``calibration`` (the fast path for CNNs). ``"dynamic"``: linear
            layers only, ranges measured per batch at run time (no calibration needed
            beyond the export sample).
        calibration: Real inputs: a :class:`~lepton.data.Dataset` or a catalog name (its
            training split). Static quantization calibrates on its first
            ``calibration_size`` rows; both methods export and check on them.
        backend: ``"onnxruntime"``, the one backend (see the module docstring).
        quant_format: ``"qdq"`` (``QuantizeLinear``/``DequantizeLinear`` pairs around the
            fp32 nodes, fused into int8 kernels when onnxruntime loads them) or
            ``"qoperator"`` (``QLinearConv``/``QGemm`` nodes in the file).
        calibrate: How activation ranges are chosen: ``"minmax"``, ``"entropy"`` or
            ``"percentile"``.
        per_channel: One weight scale per output channel (more accurate) or per tensor.
        calibration_size: Calibration rows.
        test: Labelled data (or a catalog name: its test split) for accuracy before and
            after; its first 1,000 inputs are also the parity check's.
        tolerance: Refuse the result if any output differs from the fp32 model's by more.
        register: ``None``: register the int8 model as a new version when ``model`` came
            from the registry (under its name); a name: under it; ``False``: never.
        database: The metadata database of the registry.

    Returns:
        A :class:`Compressed` with the int8 :class:`~lepton.registry.OnnxModule`, its
        report (sizes, max abs diff from fp32, accuracy, node types) and its bytes.

    Raises:
        CompressionError: An unknown method, format, calibration method or backend, or
            no calibration data.
        ShapeError: The calibration data does not have the model's input shape.
        ParityError: The int8 outputs differ from fp32 by more than ``tolerance``.

    Example:
        >>> int8, report = lp.compress.quantize(model, "static", calibration="mnist",
        ...                                     test="mnist")  # doctest: +SKIP
        >>> print(*report.lines(), sep="\\n")  # doctest: +SKIP
    """
    started = time.perf_counter()
    _choice("method", method, METHODS, 'method="static"')
    _choice("backend", backend, ("onnxruntime",), 'backend="onnxruntime"')
    _choice("quant_format", quant_format, FORMATS, 'quant_format="qdq"')
    _choice("calibrate", calibrate, CALIBRATIONS, 'calibrate="minmax"')
    if not isinstance(calibration_size, int) or calibration_size < 1:
        raise CompressionError(f"calibration_size must be >= 1, got {calibration_size!r}")
    if calibration is None:
        raise CompressionError(
            "quantize needs real inputs: pass calibration= a Dataset or a catalog name, e.g. "
            "quantize(model, 'static', calibration='mnist')"
        )
    source = open_source(model, database=database)
    calib = dataset(calibration, "train", calibration_size)
    check_inputs(source.model, calib, "calibration")
    x = inputs_of(calib, "calibration")
    fp32 = source.onnx if source.onnx is not None else export_source(source, x)
    with scratch() as tmp:
        prepared = pre_process(fp32, Path(tmp))
        target = Path(tmp) / "int8.onnx"
        _int8(prepared, target, method=method, calibration=x, quant_format=quant_format,
              calibrate=calibrate, per_channel=per_channel)  # fmt: skip
        data = target.read_bytes()
    int8 = OnnxModule(data)
    test_ds = dataset(test, "test") if test is not None else None
    check = test_ds.features[:_CHECK_ROWS].float() if test_ds is not None else x
    diff, agreement = parity(logits(source.model, check), logits(int8, check))
    if tolerance is not None and not diff <= tolerance:
        raise ParityError(
            f"the int8 model's outputs differ from the fp32 model's by {diff:.3g} on "
            f"{len(check)} real inputs, above tolerance={tolerance:g}; calibrate on more "
            f"or more typical data, try calibrate='entropy' or 'percentile', or raise "
            f"the tolerance"
        )
    acc_before, acc_after = test_accuracy(source.model, test_ds), test_accuracy(int8, test_ds)
    recipe: dict[str, Any] = {"step": "quantize", "method": method, "backend": backend}
    if method == "static":
        recipe |= {"format": quant_format, "calibrate": calibrate,
                   "calibration": calib.name, "calibration_rows": len(calib)}  # fmt: skip
    recipe |= {"per_channel": per_channel, "weights": "int8",
               "activations": "uint8" if method == "static" else "uint8, per batch"}  # fmt: skip
    metrics = {"accuracy": acc_after} if acc_after is not None else {}
    registered = publish(
        int8, source=source, register=register, step="quantize", recipe=recipe,
        metrics=metrics, onnx=data, data=test_ds, database=database,
        measured=figures(test_ds, acc_before, acc_after, diff, agreement),
    )  # fmt: skip
    report = CompressReport(
        step="quantize", recipe=recipe, kind="onnx", source=source.ref,
        size_before=len(source.onnx) if source.onnx is not None else stored_size(source.model),
        size_after=len(data), parameters_before=parameter_count(source.model),
        parameters_after=0, max_abs_diff=diff, agreement=agreement, tolerance=tolerance,
        accuracy_before=acc_before, accuracy_after=acc_after, registered=registered,
        seconds=time.perf_counter() - started,
        details={"fp32_onnx_bytes": len(fp32), "node_types": node_types(data),
                 "int8_initializers": int8_initializers(data), "checked_inputs": len(check)},
    )  # fmt: skip
    return Compressed(model=int8, report=report, onnx=data)
