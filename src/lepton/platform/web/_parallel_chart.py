"""A tuning study's parallel-coordinates plot, drawn on the server as SVG: one axis per
parameter and one for the objective, one line per complete trial (the scales, colours
and frame are :mod:`lepton.platform.web._study_charts`')."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lepton.platform.web._study_charts import (
    BETTER,
    SL,
    ST,
    WORSE,
    _mix,
    _points,
    _Scale,
    _svg_open,
)

__all__ = ["parallel_chart"]


@dataclass(frozen=True)
class _Axis:
    """One axis of a parallel-coordinates plot: numeric (a scale) or categorical (its
    values' labels, evenly spaced)."""

    name: str
    scale: _Scale | None
    categories: tuple[str, ...] = ()

    @classmethod
    def of(cls, name: str, values: Sequence[Any]) -> _Axis:
        if values and all(_is_number(v) for v in values):
            return cls(name, _Scale.of((float(v) for v in values), margin=0))
        return cls(name, None, tuple(sorted({str(v) for v in values})))

    def unit(self, value: Any) -> float:
        if self.scale is not None:
            return self.scale.unit(float(value))
        if len(self.categories) < 2:
            return 0.5
        return self.categories.index(str(value)) / (len(self.categories) - 1)

    def ticks(self) -> list[tuple[float, str]]:
        """``(position 0..1, label)`` of the axis' labelled ticks."""
        if self.scale is None:
            return [(self.unit(c), c) for c in self.categories]
        return [(self.scale.unit(t), f"{t:.3g}") for t in self.scale.ticks()]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parallel_chart(
    trials: Sequence[tuple[int, Mapping[str, Any], float]],
    params: Sequence[str],
    *,
    objective: str = "objective",
    direction: str = "minimize",
) -> str:
    """A parallel-coordinates plot: one vertical axis per parameter and one for the
    objective, one line per complete trial coloured from worse (amber) to better (blue).

    Numeric axes are linear, or logarithmic for positive values spanning more than two
    decades; a categorical axis has its values as evenly spaced ticks. A trial without a
    (conditional) parameter skips that axis: its line joins the axes it has.

    Args:
        trials: ``(number, params, objective value)`` of the complete trials.
        params: The parameter axes, left to right.
        objective: The objective's name (the last axis).
        direction: ``"minimize"`` or ``"maximize"`` (which end of the ramp is better).

    Returns:
        SVG markup, safe to put in a page as is.
    """
    rows = [(n, p, v) for n, p, v in trials if math.isfinite(v)]
    axes = [_Axis.of(name, [p[name] for _, p, _ in rows if name in p]) for name in params]
    goal = _Axis(f"{objective} ({direction[:3]})", _Scale.of((v for *_, v in rows), margin=0))
    axes.append(goal)
    width, height = max(1100, SL + 110 * (len(axes) - 1) + 100), 320
    gap = (width - SL - 100) / max(len(axes) - 1, 1)
    top, bottom = ST + 36, height - 16
    out = _svg_open(width, height, "parameters of every complete trial")
    out.append(
        f'<text x="{width - 10}" y="16" class="tick" text-anchor="end">'
        f'<tspan fill="{WORSE}">■</tspan> worse <tspan fill="{BETTER}">■</tspan> better</text>'
    )

    def x_of(i: int) -> float:
        return SL + gap * i

    def y_of(axis: _Axis, value: Any) -> float:
        return bottom - axis.unit(value) * (bottom - top)

    def goodness(value: float) -> float:
        t = goal.unit(value)
        return t if direction == "maximize" else 1 - t

    out += [
        f'<line x1="{x_of(i):.1f}" y1="{top}" x2="{x_of(i):.1f}" y2="{bottom}" stroke="#9ca3af"/>'
        for i in range(len(axes))
    ]
    for number, values, value in sorted(rows, key=lambda r: goodness(r[2])):  # best on top
        xy = [
            (x_of(i), y_of(a, values[a.name])) for i, a in enumerate(axes[:-1]) if a.name in values
        ]
        xy.append((x_of(len(axes) - 1), y_of(goal, value)))
        out.append(
            f'<polyline points="{_points(xy)}" fill="none" stroke="{_mix(goodness(value))}" '
            f'stroke-width="1.5" stroke-opacity="0.8"><title>trial {number}: {value:.6g}'
            f"</title></polyline>"
        )
    halo = 'stroke="#fff" stroke-width="3" paint-order="stroke"'  # readable over the lines
    for i, axis in enumerate(axes):  # labels last, over the lines
        x = x_of(i)
        short = axis.name if len(axis.name) <= 18 else axis.name[:17] + "…"
        log = " (log)" if axis.scale is not None and axis.scale.log else ""
        out.append(
            f'<text x="{x:.1f}" y="{top - 14}" class="tick" text-anchor="middle">'
            f"<title>{html.escape(axis.name)}</title>{html.escape(short + log)}</text>"
        )
        for position, label in axis.ticks():
            y = bottom - position * (bottom - top)
            tip = "" if len(label) <= 14 else f"<title>{html.escape(label)}</title>"
            out.append(
                f'<text x="{x - 5:.1f}" y="{y + 3:.1f}" class="tick" text-anchor="end" {halo}>'
                f"{tip}{html.escape(label[:13] + '…' if tip else label)}</text>"
            )
    if not rows:
        out.append(
            f'<text x="{width / 2}" y="{height / 2}" class="tick" text-anchor="middle">'
            "no complete trial yet</text>"
        )
    out.append("</svg>")
    return "\n".join(out)
