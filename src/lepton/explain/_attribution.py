"""``Attribution``: what ``explain`` returns, with the input's shape, a PNG and a summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lepton._fs import atomic_write_bytes
from lepton.errors import ExplainError
from lepton.explain._inputs import InputKind
from lepton.explain._plot import bars_png, heatmap_png

__all__ = ["Attribution"]

_MAX_BARS = 20  # features or tokens drawn in one plot; top_features(k) gives any number


@dataclass(frozen=True, eq=False)
class Attribution:
    """Attributions of a batch of inputs to the model's target outputs.

    Attributes:
        attributions: One value per input value, with the input's shape (token ids
            ``(B, T)`` get one value per token); on the CPU.
        inputs: The inputs explained, as the model saw them (batched, on the CPU).
        outputs: The model's outputs on them, ``(B, K)`` (logits for the zoo's classifiers).
        targets: The class explained for each example (default: the predicted one);
            ``None`` for a model with a single output.
        method: The method used, one of :data:`~lepton.explain.METHODS`.
        kind: ``"image"``, ``"tabular"`` or ``"text"``.
        convergence_delta: Integrated gradients only: per example, the sum of the
            attributions minus ``f(x) - f(baseline)``; near zero when the path integral
            converged (raise ``n_steps`` otherwise).
        feature_names: Names of the features (or tokens), when known.

    Example:
        >>> result = explain(model, test.features[:4])  # doctest: +SKIP
        >>> result.numpy().shape
        (4, 1, 28, 28)
        >>> png = result.plot("digit.png")  # doctest: +SKIP
    """

    attributions: torch.Tensor
    inputs: torch.Tensor
    outputs: torch.Tensor
    targets: list[int] | None
    method: str
    kind: InputKind
    convergence_delta: torch.Tensor | None = None
    feature_names: list[str] | None = None

    def numpy(self) -> np.ndarray:
        """The attributions as a numpy array (the input's shape)."""
        return self.attributions.numpy()

    @property
    def probabilities(self) -> torch.Tensor:
        """Softmax of :attr:`outputs`, ``(B, K)``; for a classifier that outputs logits."""
        out = self.outputs if self.outputs.ndim == 2 else self.outputs.reshape(-1, 1)
        return out.float().softmax(dim=1)

    def _batched(self) -> torch.Tensor:
        """The attributions with the batch dimension (a single example's come without)."""
        return self.attributions.reshape(self.inputs.shape)

    def _rows(self) -> torch.Tensor:
        """``(B, F)``: one row of attributions per example."""
        return self.attributions.reshape(self.inputs.shape[0], -1)

    def _names(self, count: int) -> list[str]:
        if self.feature_names is not None and len(self.feature_names) == count:
            return list(self.feature_names)
        prefix = "token" if self.kind == "text" else "feature"
        return [f"{prefix} {i}" for i in range(count)]

    def _check_index(self, index: int) -> None:
        batch = self.inputs.shape[0]
        if not -batch <= index < batch:
            raise ExplainError(f"index {index} is out of range for {batch} explained inputs")

    def top_features(self, k: int = 10, *, index: int = 0) -> list[tuple[str, float]]:
        """The ``k`` features (or tokens) of one example with the largest ``|attribution|``.

        Args:
            k: How many to return.
            index: Which example of the batch.

        Returns:
            ``(name, attribution)`` pairs, largest magnitude first.

        Raises:
            ExplainError: Image inputs (use :meth:`plot`), or ``index`` out of range.

        Example:
            >>> result.top_features(3)  # doctest: +SKIP
            [('worst radius', -1.92), ('worst texture', -1.41), ('mean concavity', -0.88)]
        """
        if self.kind == "image":
            raise ExplainError(
                "top_features is for tabular and token inputs; for an image, plot() draws the "
                "heatmap and numpy() gives the per-pixel values"
            )
        if k < 1:
            raise ExplainError(f"k must be >= 1, got {k}")
        self._check_index(index)
        row = self._rows()[index]
        names = self._names(row.numel())
        order = row.abs().argsort(descending=True, stable=True)[:k].tolist()
        return [(names[i], float(row[i])) for i in order]

    def plot(self, path: str | Path | None = None, *, index: int = 0) -> bytes:
        """Draw one example's attributions as a PNG (and write it to ``path`` if given).

        Images: the input, a diverging heatmap over it and the heatmap alone. Tabular
        rows: horizontal bars of the largest attributions, with feature names. Tokens:
        one bar per token, in the sequence's order.

        Args:
            path: A ``.png`` file to write; the bytes are returned either way.
            index: Which example of the batch.

        Returns:
            The PNG bytes.
        """
        self._check_index(index)
        target = self.targets[index] if self.targets is not None else None
        title = f"{self.method}" + (f" for class {target}" if target is not None else "")
        if self.outputs.ndim == 2 and self.outputs.shape[1] > 1 and target is not None:
            title += f" (p={float(self.probabilities[index, target]):.3f})"
        if self.kind == "image":
            png = heatmap_png(self.inputs[index].numpy(), self._batched()[index].numpy(), title)
        else:
            row = self._rows()[index].numpy()
            names = self._names(row.size)
            if self.kind == "text":
                keep = list(range(min(row.size, _MAX_BARS * 2)))
            else:
                keep = np.argsort(-np.abs(row), kind="stable")[:_MAX_BARS].tolist()
            png = bars_png([names[i] for i in keep], row[keep], title)
        if path is not None:
            atomic_write_bytes(Path(path), png)
        return png

    def to_dict(self, *, index: int = 0) -> dict[str, Any]:
        """One example's explanation as JSON-safe values (what a served ``/explain`` sends)."""
        self._check_index(index)
        return {
            "method": self.method,
            "target": self.targets[index] if self.targets is not None else None,
            "attributions": self._batched()[index].tolist(),
            "convergence_delta": (
                float(self.convergence_delta[index]) if self.convergence_delta is not None else None
            ),
            "feature_names": self.feature_names,
        }
