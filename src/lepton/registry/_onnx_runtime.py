"""Running an ONNX model with onnxruntime, callable like a PyTorch module.

Shared by the loader (:mod:`lepton.registry._load`) and the ONNX import/export
(:mod:`lepton.registry._onnx`), so neither imports the other.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lepton.errors import RegistryError
from lepton.registry._artifact_check import need_onnx, parse_onnx

__all__ = ["OnnxModule"]


class OnnxModule(nn.Module):
    """An ONNX model run by onnxruntime, callable like a PyTorch module (inference only).

    Args:
        data: The model's bytes. They are checked to reference nothing outside
            themselves before onnxruntime sees them, and onnxruntime gets bytes, never a
            path, so there is no folder a reference could be resolved against.

    Raises:
        UnsafeFormatError: The model references external data (or another file).
        RegistryError: It is not valid ONNX, or onnxruntime cannot run it.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__()
        _, ort = need_onnx()
        parse_onnx(data)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's pybind errors share no Python base class
            raise RegistryError(
                f"onnxruntime cannot run this ONNX model ({exc}); check its opset and "
                f"operators against onnxruntime {ort.__version__}"
            ) from None
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the graph on ``x`` (its first input) and return the first output."""
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(np.asarray(out))
