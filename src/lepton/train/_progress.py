"""What ``fit`` shows while it works: a live bar on stderr and one line per epoch."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lepton.train._callbacks import EpochRecord

__all__ = ["Reporter", "format_metrics"]


def format_metrics(metrics: dict[str, float]) -> str:
    """``loss 0.0412  accuracy 98.71%`` style text for a metrics dict."""
    parts = []
    for name, value in metrics.items():
        if name in ("accuracy", "precision", "recall", "f1", "auc"):
            parts.append(f"{name} {100 * value:.2f}%")
        else:
            parts.append(f"{name} {value:.4g}")
    return "  ".join(parts)


class Reporter:
    """Progress output for one ``fit`` call; prints nothing when ``quiet``."""

    def __init__(self, *, quiet: bool, name: str) -> None:
        self.quiet = quiet
        self.name = name
        self.out = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, epochs: int, steps_per_epoch: int, *, resumed_from: int = 0) -> None:
        """Announce the run and open the live bar."""
        if self.quiet:
            return
        note = f", resuming after epoch {resumed_from}" if resumed_from else ""
        self.out.print(
            f"[bold]training {self.name}[/] for {epochs} epochs of {steps_per_epoch} steps{note}"
        )
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=True,
            refresh_per_second=2,  # a redraw thread that wakes less steals less from training
        )
        self._progress.start()

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        """Reset the bar for a new epoch."""
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(f"epoch {epoch}/{epochs}", total=steps, stats="")

    def update(self, step: int, loss: float) -> None:
        """Move the bar to ``step`` (within the epoch) and show the running loss."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=step, stats=f"loss {loss:.4f}")

    def end_epoch(self, record: EpochRecord, epochs: int) -> None:
        """Print the epoch's line."""
        if self.quiet:
            return
        line = f"epoch {record.epoch:>3}/{epochs}  train {format_metrics(record.train)}"
        if record.val:
            line += f"  |  val {format_metrics(record.val)}"
        line += f"  |  lr {record.lr:.3g}  {record.seconds:.1f}s"
        self.out.print(line)

    def close(self) -> None:
        """Close the live bar (always call, also on errors)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
