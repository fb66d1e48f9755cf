"""What an ``lp.automl`` search records: one :class:`TrialRow` per trial and the
:class:`Leaderboard` that ranks them (best first, per family, as a table or JSON)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Leaderboard", "TrialRow"]


@dataclass
class TrialRow:
    """One trial of the search.

    Attributes:
        number: Order in which the trial ran (1-based, across families).
        family: ``linear``, ``mlp``, ``hgb`` or ``lightgbm``.
        params: The configuration (``features`` says whether selection was applied).
        score: Mean cross-validated metric (NaN unless ``state == "complete"``).
        std: Its standard deviation over the folds.
        folds: Folds scored.
        seconds: Fit time summed over those folds.
        state: ``complete``, ``pruned``, ``out of time`` or ``failed``.
        note: Why it failed, when it did.
    """

    number: int
    family: str
    params: dict[str, Any]
    score: float = float("nan")
    std: float = float("nan")
    folds: int = 0
    seconds: float = 0.0
    state: str = "complete"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (a score that does not exist is None, not NaN)."""
        out = {k: getattr(self, k) for k in ("number", "family", "params", "score", "std",
                                             "folds", "seconds", "state", "note")}  # fmt: skip
        for key in ("score", "std"):
            out[key] = None if math.isnan(out[key]) else out[key]
        return out


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@dataclass
class Leaderboard:
    """Every trial of an ``lp.automl`` search, best first.

    Attributes:
        metric: The metric (greater is better).
        rows: Every trial, in the order they ran.
        validation: How trials were scored, e.g. ``"5-fold CV"``.
    """

    metric: str
    rows: list[TrialRow] = field(default_factory=list)
    validation: str = "cross-validation"

    @property
    def completed(self) -> list[TrialRow]:
        """Completed trials, best first."""
        return sorted((r for r in self.rows if r.state == "complete"), key=lambda r: -r.score)

    def best_per_family(self) -> list[TrialRow]:
        """The best completed trial of each family, best first."""
        seen: dict[str, TrialRow] = {}
        for row in self.completed:
            seen.setdefault(row.family, row)
        return list(seen.values())

    def counts(self) -> dict[str, dict[str, int]]:
        """Trials per family and state."""
        out: dict[str, dict[str, int]] = {}
        for row in self.rows:
            out.setdefault(row.family, {}).setdefault(row.state, 0)
            out[row.family][row.state] += 1
        return out

    def table(self, per_family: bool = True, limit: int = 20) -> Any:
        """A rich ``Table``: the best trial per family (or the top ``limit`` trials)."""
        from rich.table import Table

        rows = self.best_per_family() if per_family else self.completed[:limit]
        counts = self.counts()
        title = f"leaderboard ({self.metric}, {self.validation})"
        table = Table(title=title, title_justify="left")
        for name in ("#", "family", self.metric, "fit s", "trials", "params"):
            table.add_column(name, justify="left" if name in ("family", "params") else "right")
        for rank, row in enumerate(rows, 1):
            done = counts.get(row.family, {})
            trials = f"{done.get('complete', 0)}/{sum(done.values())}"
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in row.params.items())
            table.add_row(str(rank), row.family, f"{row.score:.4f} ± {row.std:.4f}",
                          f"{row.seconds:.2f}", trials, params)  # fmt: skip
        return table

    def to_dicts(self) -> list[dict[str, Any]]:
        """Every trial, JSON-safe."""
        return [r.to_dict() for r in self.rows]

    def __str__(self) -> str:
        lines = [f"leaderboard ({self.metric}, {self.validation}; best trial per family)",
                 f"{'family':<10} {self.metric:>18} {'fit s':>7}  params"]  # fmt: skip
        for row in self.best_per_family():
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in row.params.items())
            lines.append(f"{row.family:<10} {row.score:>9.4f} ± {row.std:.4f} "
                         f"{row.seconds:>7.2f}  {params}")  # fmt: skip
        return "\n".join(lines)

    def __repr__(self) -> str:
        best = self.completed[0] if self.completed else None
        head = f"best {best.family} {best.score:.4f}" if best else "no completed trial"
        return f"Leaderboard({self.metric}, {len(self.rows)} trials, {head})"
