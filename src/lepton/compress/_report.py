"""What every compression step returns: the new model and a report of what it cost."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import nn

from lepton._fs import atomic_write_bytes
from lepton.errors import CompressionError

__all__ = ["CompressReport", "Compressed", "stored_size"]


def stored_size(model: nn.Module) -> int:
    """Bytes of ``model`` as the registry stores a PyTorch version (safetensors)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return len(safetensors.torch.save(state))


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (0 for an ONNX model, which holds none in PyTorch)."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class CompressReport:
    """What one step did, JSON-safe (``to_dict``), for a terminal, a job or a manifest.

    Attributes:
        step: ``"export_onnx"``, ``"quantize"``, ``"prune"``, ``"distill"`` or
            ``"compress"`` (several steps by :func:`~lepton.compress.run`).
        recipe: The step's settings, as the registered version's lineage records them.
        source: The registry reference of the original, when it came from the registry.
        kind: ``"pytorch"`` or ``"onnx"``: what the new model is.
        size_before: Bytes of the original as stored (safetensors, or the ONNX file).
        size_after: Bytes of the result as it would be stored.
        parameters_before: Parameters of the original (0 for an ONNX original).
        parameters_after: Parameters of the result (0 for an ONNX result).
        max_abs_diff: The largest difference between the outputs of the result and the
            original on real inputs (``None`` for steps that retrain, where it means
            nothing).
        agreement: Fraction of those inputs where both predict the same class.
        tolerance: The largest ``max_abs_diff`` accepted (``None``: reported only).
        accuracy_before: The original's accuracy on the test data, when given.
        accuracy_after: The result's accuracy on the same data.
        registered: The new version's reference, when registered.
        seconds: Wall time of the step.
        details: Step-specific facts (sparsity, widths, quantized node types, ...).
    """

    step: str
    recipe: dict[str, Any]
    kind: str
    size_before: int
    size_after: int
    parameters_before: int
    parameters_after: int
    source: str | None = None
    max_abs_diff: float | None = None
    agreement: float | None = None
    tolerance: float | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    registered: str | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """How many times smaller the result is (``size_before / size_after``)."""
        return self.size_before / self.size_after if self.size_after else float("inf")

    @property
    def accuracy_drop(self) -> float | None:
        """``accuracy_before - accuracy_after`` in points (0-100), when both are known."""
        if self.accuracy_before is None or self.accuracy_after is None:
            return None
        return 100 * (self.accuracy_before - self.accuracy_after)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, with ``ratio`` and ``accuracy_drop`` added."""
        return {**asdict(self), "ratio": self.ratio, "accuracy_drop": self.accuracy_drop}

    def lines(self) -> list[str]:
        """A few human lines: sizes, parity, accuracy (what ``lepton compress`` prints)."""
        out = [
            f"{self.step}: {self.size_before / 1e6:.3f} MB -> {self.size_after / 1e6:.3f} MB "
            f"({self.ratio:.2f}x smaller, {self.kind})"
        ]
        if self.max_abs_diff is not None:
            tol = f" (tolerance {self.tolerance:g})" if self.tolerance is not None else ""
            agree = f", same class on {100 * self.agreement:.2f}%" if self.agreement else ""
            out.append(f"  parity: max abs diff {self.max_abs_diff:.3g}{tol}{agree}")
        if self.accuracy_before is not None and self.accuracy_after is not None:
            out.append(
                f"  accuracy: {100 * self.accuracy_before:.2f}% -> {100 * self.accuracy_after:.2f}%"
            )
        if self.registered:
            out.append(f"  registered as {self.registered}")
        return out


@dataclass(frozen=True)
class Compressed:
    """A step's result: ``model, report = lp.compress.quantize(...)`` unpacks it.

    Attributes:
        model: The new model: an ``nn.Module``, or for ONNX results an
            :class:`~lepton.registry.OnnxModule` (onnxruntime, callable like a module).
        report: The :class:`CompressReport`.
        onnx: The ONNX file's bytes, for ONNX results.
    """

    model: nn.Module
    report: CompressReport
    onnx: bytes | None = None

    def __iter__(self) -> Iterator[Any]:
        yield self.model
        yield self.report

    def save(self, path: str | Path) -> Path:
        """Write the result: the ONNX file, or the PyTorch weights as safetensors.

        Example:
            >>> lp.compress.quantize(model, calibration="mnist").save("int8.onnx")  # doctest: +SKIP
        """
        target = Path(path)
        if self.onnx is not None:
            atomic_write_bytes(target, self.onnx)
            return target
        if target.suffix != ".safetensors":
            raise CompressionError(
                f"a PyTorch result is saved as safetensors; use a path ending in "
                f".safetensors, not {target.name!r} (or register it: register='name')"
            )
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        atomic_write_bytes(target, safetensors.torch.save(state))
        return target
