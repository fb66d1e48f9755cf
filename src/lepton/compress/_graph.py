"""ONNX graph work for int8: the pre-processing and rewrites the quantizer needs.

Why the rewrite: ONNX Runtime's quantizer folds a ``Relu`` into the output range of the
quantized node that produces its input (a ``QLinearConv`` then clamps at zero by itself),
but only when the ``Relu`` directly follows that node. The zoo's ``ConvNet`` pools before
its ReLU (the same function, cheaper in fp32), so its graph reads ``Conv -> MaxPool ->
Relu``: the quantizer then drops the ``Relu`` while the ``MaxPool`` keeps the
convolution's signed range, and negative activations survive. Measured on MNIST: 3.4 to
7.9 points of accuracy lost (``benchmarks/compress.py``). ``relu(maxpool(x)) ==
maxpool(relu(x))`` (both are monotone), so :func:`relu_before_max_pool` swaps them back,
and the ``Relu`` folds into the convolution.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from lepton.errors import CompressionError
from lepton.registry._artifact_check import need_onnx

__all__ = ["int8_initializers", "node_types", "pre_process", "relu_before_max_pool", "scratch"]


def relu_before_max_pool(model: Any) -> int:
    """Rewrite every ``MaxPool -> Relu`` pair of ``model`` (an ``onnx.ModelProto``) as
    ``Relu -> MaxPool``, in place, where the pool's output feeds only that ``Relu``.

    Returns:
        How many pairs were swapped.
    """
    graph = model.graph
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    swaps: dict[int, Any] = {}  # id(pool) -> its relu
    for node in graph.node:
        if node.op_type != "MaxPool" or len(node.output) != 1 or node.output[0] in outputs:
            continue
        readers = users.get(node.output[0], [])
        if len(readers) == 1 and readers[0].op_type == "Relu":
            swaps[id(node)] = readers[0]
    if not swaps:
        return 0
    stale: set[str] = set()
    order: list[Any] = []
    moved = {id(relu) for relu in swaps.values()}
    for node in graph.node:
        if id(node) in moved:
            continue
        relu = swaps.get(id(node))
        if relu is None:
            order.append(node)
            continue
        pooled, result = node.output[0], relu.output[0]
        rectified = f"{result}_before_pool"
        relu.input[0], relu.output[0] = node.input[0], rectified
        node.input[0], node.output[0] = rectified, result
        stale.add(pooled)
        order += [relu, node]
    kept = [info for info in graph.value_info if info.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    del graph.node[:]
    graph.node.extend(order)
    return len(swaps)


def pre_process(data: bytes, folder: Path) -> Path:
    """ONNX Runtime's quantization pre-processing (shape inference, graph optimisation,
    so that e.g. a ``BatchNormalization`` is folded into its ``Conv``), then
    :func:`relu_before_max_pool`. Returns the file to quantize, written in ``folder``."""
    onnx, _ = need_onnx()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, prepared = folder / "fp32.onnx", folder / "prepared.onnx"
    source.write_bytes(data)
    try:
        quant_pre_process(str(source), str(prepared))
    except Exception as exc:  # onnxruntime's shape inference raises many types
        raise CompressionError(
            f"onnxruntime's quantization pre-processing failed on this model ({exc}); "
            f"export it again with a recent opset (lp.compress.export_onnx)"
        ) from None
    model = onnx.load(str(prepared))
    if relu_before_max_pool(model):
        onnx.checker.check_model(model)
        onnx.save(model, str(prepared))
    return prepared


def node_types(data: bytes) -> dict[str, int]:
    """How many nodes of each operator type the ONNX model ``data`` holds."""
    onnx, _ = need_onnx()
    return dict(Counter(node.op_type for node in onnx.load_from_string(data).graph.node))


def int8_initializers(data: bytes) -> int:
    """How many stored tensors of the ONNX model ``data`` are 8-bit integers."""
    onnx, _ = need_onnx()
    eight_bit = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    return sum(t.data_type in eight_bit for t in onnx.load_from_string(data).graph.initializer)


def scratch() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for the quantizer, which works on files."""
    return tempfile.TemporaryDirectory(prefix="lepton-quantize-")
