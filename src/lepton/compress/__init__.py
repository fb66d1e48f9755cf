"""Smaller, faster models: ONNX export, int8 quantization, pruning and distillation.

Every step takes a model (an ``nn.Module`` or a registry reference such as
``"mnist-convnet@production"``) and returns a :class:`Compressed`: the new model and a
:class:`CompressReport` (sizes, parity with the original on real inputs, accuracy, the
recipe). A model from the registry comes back registered as a new version whose
manifest's ``lineage`` says ``derived_from`` the original, with the recipe.

Example:
    >>> import lepton.compress
    >>> int8, report = lp.compress.quantize("mnist-convnet@production", "static",
    ...                                     calibration="mnist", test="mnist")  # doctest: +SKIP
    >>> report.ratio, report.accuracy_drop, report.registered  # doctest: +SKIP
    (3.9, 0.02, 'mnist-convnet:2')
"""

from lepton.compress._distill import DistillationLoss, distill
from lepton.compress._export import export_onnx
from lepton.compress._prune import prune
from lepton.compress._quantize import quantize
from lepton.compress._recipe import CompressConfig, CompressOutcome, run
from lepton.compress._report import Compressed, CompressReport

__all__ = [
    "CompressConfig",
    "CompressOutcome",
    "CompressReport",
    "Compressed",
    "DistillationLoss",
    "distill",
    "export_onnx",
    "prune",
    "quantize",
    "run",
]
