"""The charts of a tuning study's page, drawn on the server as SVG: the best value so
far, every trial's per-epoch curve (where the pruner stopped it), parameter importances
and, for two objectives, the Pareto front; the parallel-coordinates plot is in
:mod:`lepton.platform.web._parallel_chart`, on this module's scales and frame."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "best_so_far_chart",
    "curves_chart",
    "importance_chart",
    "pareto_chart",
]

# -- tuning studies -------------------------------------------------------------------
# A study's charts share one frame: the plot on the left, a legend on the right. Every
# label a user chose (parameter names, categorical values) goes through html.escape.
SW, SH, SL, SR, ST, SB = 560, 260, 58, 118, 28, 40
BETTER, WORSE = "#1d4ed8", "#f59e0b"  # the two ends of the objective's colour ramp
DOT, FAINT = "#64748b", "#cbd5e1"
LOG_SPAN = 100.0  # positive values spanning more than two decades get a log axis


@dataclass(frozen=True)
class _Scale:
    """A value axis: linear, or logarithmic for positive values spanning > 2 decades."""

    low: float
    high: float
    log: bool = False

    @classmethod
    def of(cls, values: Iterable[float], *, allow_log: bool = True, margin: float = 0.04) -> _Scale:
        """The axis that shows ``values``, with ``margin`` (a share of the span) at each
        end so that no dot sits on the frame."""
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return cls(0.0, 1.0)
        low, high = min(finite), max(finite)
        if allow_log and low > 0 and high / low > LOG_SPAN:
            pad = (high / low) ** margin
            return cls(low / pad, high * pad, log=True)
        if high == low:  # one value: put it in the middle
            pad = abs(low) * 0.1 or 0.5
            return cls(low - pad, high + pad)
        pad = (high - low) * margin
        return cls(low - pad, high + pad)

    def unit(self, value: float) -> float:
        """Where ``value`` lies: 0 at the low end, 1 at the high end."""
        if self.log:
            lo = math.log10(self.low)
            return (math.log10(value) - lo) / (math.log10(self.high) - lo)
        return (value - self.low) / (self.high - self.low)

    def ticks(self, *, integer: bool = False) -> list[float]:
        """Round values inside the axis: powers of ten (log), or 1/2/5 x 10^k steps."""
        if self.log:
            first = math.ceil(math.log10(self.low) - 1e-9)
            last = math.floor(math.log10(self.high) + 1e-9)
            decades = [10.0**k for k in range(first, last + 1)]
            decades = decades[:: max(1, math.ceil(len(decades) / 6))]
            return decades if len(decades) >= 2 else [self.low, self.high]
        raw = (self.high - self.low) / 5
        step = 10.0 ** math.floor(math.log10(raw))
        step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
        step = max(step, 1.0) if integer else step
        start = math.ceil(self.low / step) * step
        return [start + i * step for i in range(int((self.high - start) / step + 1e-9) + 1)]


def _mix(t: float) -> str:
    """The colour ``t`` of the way from WORSE (0) to BETTER (1)."""
    t = min(max(t, 0.0), 1.0)
    a, b = (tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in (WORSE, BETTER))
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b, strict=True))


def _svg_open(width: float, height: float, title: str) -> list[str]:
    label = html.escape(title)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width:.0f} '
        f'{height:.0f}" role="img" aria-label="{label}">',
        f'<text x="{SL}" y="16" class="chart-title">{label}</text>',
    ]


def _frame(
    title: str, x: _Scale, y: _Scale, x_label: str, y_label: str
) -> tuple[list[str], Callable[[float, float], tuple[float, float]]]:
    """The opening of a study chart (title, grid, ticks, axis labels) and the function
    that places a data point in it."""
    pw, ph = SW - SL - SR, SH - ST - SB

    def at(xv: float, yv: float) -> tuple[float, float]:
        return SL + x.unit(xv) * pw, ST + (1 - y.unit(yv)) * ph

    out = _svg_open(SW, SH, title)
    for value in y.ticks():
        _, py = at(x.low, value)
        out.append(f'<line x1="{SL}" y1="{py:.1f}" x2="{SL + pw}" y2="{py:.1f}" class="gridline"/>')
        out.append(
            f'<text x="{SL - 6}" y="{py + 4:.1f}" class="tick" text-anchor="end">{value:.3g}</text>'
        )
    for value in x.ticks(integer=True):
        px, _ = at(value, y.low)
        out.append(
            f'<text x="{px:.1f}" y="{ST + ph + 14}" class="tick" text-anchor="middle">'
            f"{value:g}</text>"
        )
    out.append(
        f'<text x="{SL + pw / 2}" y="{SH - 6}" class="tick" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
    )
    scale = " (log)" if y.log else ""
    out.append(
        f'<text x="12" y="{ST + ph / 2}" class="tick" text-anchor="middle" '
        f'transform="rotate(-90 12 {ST + ph / 2})">{html.escape(y_label[:40] + scale)}</text>'
    )
    return out, at


def _legend(out: list[str], entries: Sequence[tuple[str, str, str]]) -> None:
    """``(kind, colour, label)`` rows at the right; kind ``line`` or ``dot``."""
    x = SW - SR + 14
    for i, (kind, color, label) in enumerate(entries):
        y = ST + 10 + 18 * i
        if kind == "dot":
            out.append(f'<circle cx="{x + 9}" cy="{y - 4}" r="3.5" fill="{color}"/>')
        else:
            out.append(
                f'<line x1="{x}" y1="{y - 4}" x2="{x + 18}" y2="{y - 4}" stroke="{color}" '
                f'stroke-width="3"/>'
            )
        out.append(f'<text x="{x + 24}" y="{y}" class="tick">{html.escape(label)}</text>')


def _points(xy: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)


def best_so_far_chart(
    values: Sequence[tuple[int, float]], *, direction: str, y_label: str = "objective"
) -> str:
    """Each complete trial's value as a dot and the best value so far as a step line.

    Args:
        values: ``(trial number, value)`` of the complete trials.
        direction: ``"minimize"`` or ``"maximize"``.
        y_label: The objective's name.

    Returns:
        SVG markup, safe to put in a page as is.

    Example:
        >>> best_so_far_chart([(0, 3.0), (1, 1.0)], direction="minimize")  # doctest: +ELLIPSIS
        '<svg ...'
    """
    shown = sorted((n, v) for n, v in values if math.isfinite(v))
    x = _Scale.of([float(n) for n, _ in shown], allow_log=False)
    y = _Scale.of(v for _, v in shown)
    out, at = _frame(f"best {y_label} so far", x, y, "trial", y_label)
    if not shown:
        out += [_note("no complete trial yet"), "</svg>"]
        return "\n".join(out)
    better = min if direction == "minimize" else max
    steps: list[tuple[float, float]] = []
    best = shown[0][1]
    for number, value in shown:
        if steps:
            steps.append(at(number, best))
        best = better(best, value)
        steps.append(at(number, best))
    out.append(
        f'<polyline points="{_points(steps)}" fill="none" stroke="{BETTER}" stroke-width="2"/>'
    )
    for number, value in shown:
        px, py = at(number, value)
        out.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{DOT}">'
            f"<title>trial {number}: {value:.6g}</title></circle>"
        )
    _legend(out, [("line", BETTER, "best so far"), ("dot", DOT, "trial value")])
    out.append("</svg>")
    return "\n".join(out)


def _note(text: str) -> str:
    return (
        f'<text x="{SL + (SW - SL - SR) / 2}" y="{ST + (SH - ST - SB) / 2}" class="tick" '
        f'text-anchor="middle">{html.escape(text)}</text>'
    )


def curves_chart(
    curves: Mapping[int, Sequence[float | None]],
    *,
    pruned: Collection[int],
    best: int | None,
    y_label: str = "objective",
) -> str:
    """Every trial's reported value per epoch, one line per trial: a pruned trial's line
    stops at the epoch the pruner stopped it (marked with a dot), the best trial is drawn
    on top.

    Args:
        curves: Trial number -> its values by epoch (``None``: not a finite number).
        pruned: The numbers of the pruned trials.
        best: The best trial's number, if any.
        y_label: The reported metric's name.

    Returns:
        SVG markup, safe to put in a page as is.
    """
    lines = {
        n: [(i + 1, v) for i, v in enumerate(vs) if v is not None and math.isfinite(v)]
        for n, vs in curves.items()
    }
    lines = {n: pts for n, pts in lines.items() if pts}
    x = _Scale.of([float(i) for pts in lines.values() for i, _ in pts], allow_log=False)
    y = _Scale.of(v for pts in lines.values() for _, v in pts)
    out, at = _frame(f"{y_label} per epoch, every trial", x, y, "epoch", y_label)
    if not lines:
        out += [_note("no trial reported per-epoch values"), "</svg>"]
        return "\n".join(out)
    order = sorted(lines, key=lambda n: (n == best, n in pruned, n))
    for number in order:
        xy = [at(i, v) for i, v in lines[number]]
        state = "best" if number == best else "pruned" if number in pruned else "trial"
        color, width = {"best": (BETTER, 2.5), "pruned": (WORSE, 1.5)}.get(state, (DOT, 1.2))
        tip = f"<title>trial {number} ({state}): {len(xy)} epoch(s)</title>"
        out.append(
            f'<polyline points="{_points(xy)}" fill="none" stroke="{color}" '
            f'stroke-width="{width}" stroke-opacity="0.85">{tip}</polyline>'
        )
        if number in pruned or len(xy) == 1:  # where the pruner stopped it
            px, py = xy[-1]
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}">{tip}</circle>')
    legend = [("line", BETTER, "best trial"), ("line", DOT, "complete"), ("dot", WORSE, "pruned")]
    _legend(out, legend if best is not None else legend[1:])
    out.append("</svg>")
    return "\n".join(out)


def importance_chart(importances: Mapping[str, float]) -> str:
    """Parameter importances (shares that sum to 1) as horizontal bars, largest first.

    Returns:
        SVG markup, safe to put in a page as is.
    """
    rows = sorted(importances.items(), key=lambda kv: -kv[1])
    width, label_w, row_h = 380, 124, 22
    bar_w = width - label_w - 52
    out = _svg_open(width, ST + 8 + row_h * max(len(rows), 1), "share of the variance (fANOVA)")
    top = max((share for _, share in rows), default=1.0) or 1.0
    for i, (name, share) in enumerate(rows):
        y = ST + 8 + row_h * i
        short = name if len(name) <= 18 else name[:17] + "…"
        bar = max(share / top * bar_w, 1.0)
        out.append(
            f'<text x="{label_w - 8}" y="{y + 14}" class="tick" text-anchor="end">'
            f"<title>{html.escape(name)}</title>{html.escape(short)}</text>"
        )
        out.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{bar:.1f}" height="{row_h - 8}" '
            f'fill="{BETTER}"/>'
        )
        out.append(
            f'<text x="{label_w + bar + 6:.1f}" y="{y + 14}" class="tick">{share:.0%}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def pareto_chart(
    points: Sequence[tuple[int, float, float]],
    front: Collection[int],
    *,
    x_label: str,
    y_label: str,
) -> str:
    """A two-objective study: every complete trial's two values, the Pareto front in blue.

    Returns:
        SVG markup, safe to put in a page as is.
    """
    shown = [(n, a, b) for n, a, b in points if math.isfinite(a) and math.isfinite(b)]
    x = _Scale.of(a for _, a, _ in shown)
    y = _Scale.of(b for *_, b in shown)
    out, at = _frame("trials by both objectives", x, y, x_label, y_label)
    on_front = sorted((a, b) for n, a, b in shown if n in front)
    if len(on_front) > 1:
        xy = [at(a, b) for a, b in on_front]
        out.append(
            f'<polyline points="{_points(xy)}" fill="none" stroke="{BETTER}" '
            'stroke-dasharray="4 3"/>'
        )
    for number, a, b in sorted(shown, key=lambda r: r[0] in front):
        px, py = at(a, b)
        color = BETTER if number in front else DOT
        out.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{4 if number in front else 3}" '
            f'fill="{color}"><title>trial {number}: {a:.6g}, {b:.6g}</title></circle>'
        )
    _legend(out, [("dot", BETTER, "Pareto front"), ("dot", DOT, "other trials")])
    out.append("</svg>")
    return "\n".join(out)
