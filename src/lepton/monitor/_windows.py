"""Drift over windows of a stream of rows: tumbling (``step == size``) or sliding.

The reference is read once; every window of the last ``size`` rows is compared with it,
every ``step`` rows, by the same tests as :func:`lepton.monitor.drift`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton.errors import MonitorError
from lepton.monitor._drift import DriftReport, Method, drift_tables
from lepton.monitor._inputs import as_table

__all__ = ["DriftWindow", "WindowDrift", "drift_windows"]


@dataclass(frozen=True)
class WindowDrift:
    """The drift of one window: rows ``start`` (inclusive) to ``end`` (exclusive) of the
    stream, counted from 0."""

    start: int
    end: int
    report: DriftReport

    @property
    def drifted(self) -> bool:
        """The window's overall verdict."""
        return self.report.drifted


class DriftWindow:
    """Feed rows one at a time; every ``step`` rows, once ``size`` have arrived, the last
    ``size`` rows are compared with the reference.

    Args:
        reference: The baseline (anything :func:`~lepton.monitor.drift` takes).
        size: Rows per window.
        step: Rows between two windows (``size``: tumbling windows, the default; less:
            sliding windows that overlap).
        categorical: Column names to treat as categories.
        **options: ``method``, ``alpha``, ``threshold``, ``bins``, ``permutations``,
            ``max_samples`` and ``seed`` of :func:`~lepton.monitor.drift`.

    A row is a mapping of column names to values (for a reference with named columns), a
    1-D array (one value per column), a scalar (one column) or one image.

    Example:
        >>> import numpy as np
        >>> window = DriftWindow(np.zeros((100, 1)) + np.arange(100)[:, None], size=50)
        >>> [window.update([v]) for v in range(49)][-1] is None
        True
    """

    def __init__(
        self,
        reference: Any,
        *,
        size: int,
        step: int | None = None,
        categorical: Collection[str] = (),
        method: Method = "auto",
        alpha: float = 0.05,
        threshold: float | None = None,
        bins: int = 10,
        permutations: int = 200,
        max_samples: int = 1000,
        seed: int = 0,
    ) -> None:
        step = size if step is None else step
        if size < 2:
            raise MonitorError(f"a window needs at least 2 rows, got size={size}")
        if not 1 <= step <= size:
            raise MonitorError(
                f"step must be between 1 and size ({size}), got {step}; step == size gives "
                f"tumbling windows, a smaller step sliding ones"
            )
        self.size, self.step = size, step
        self.categorical = tuple(categorical)
        self.reference = as_table(reference, categorical=categorical, what="reference")
        self.options: dict[str, Any] = {
            "method": method,
            "alpha": alpha,
            "threshold": threshold,
            "bins": bins,
            "permutations": permutations,
            "max_samples": max_samples,
            "seed": seed,
        }
        self._rows: deque[Any] = deque(maxlen=size)
        self.seen = 0

    def _current(self) -> Any:
        rows = list(self._rows)
        if isinstance(rows[0], Mapping):
            return rows
        array = np.asarray(rows)
        if self.reference.matrix is None and array.ndim == 1:
            array = array[:, None]
        if array.dtype == object:
            return {name: array[:, i] for i, name in enumerate(self.reference.names)}
        if self.reference.matrix is None and self.reference.names:
            return {name: array[:, i] for i, name in enumerate(self.reference.names)}
        return array

    def update(self, row: Any) -> WindowDrift | None:
        """Add one row; the window's drift when this row completes one, else ``None``."""
        self._rows.append(row)
        self.seen += 1
        if self.seen < self.size or (self.seen - self.size) % self.step:
            return None
        current = as_table(self._current(), categorical=self.categorical, what="window")
        report = drift_tables(self.reference, current, **self.options)
        return WindowDrift(self.seen - self.size, self.seen, report)


def drift_windows(
    reference: Any, stream: Iterable[Any], *, size: int, step: int | None = None, **options: Any
) -> Iterator[WindowDrift]:
    """The drift of each window of ``stream`` against ``reference`` (see :class:`DriftWindow`).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> stream = np.concatenate([rng.normal(size=300), rng.normal(3, 1, size=300)])
        >>> [w.drifted for w in drift_windows(rng.normal(size=500), stream, size=100)]
        [False, False, False, True, True, True]
    """
    window = DriftWindow(reference, size=size, step=step, **options)
    for row in stream:
        result = window.update(row)
        if result is not None:
            yield result
