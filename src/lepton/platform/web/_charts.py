"""Small SVG charts for the dashboard, drawn on the server (no plotting library).

Run curves come from :func:`lepton.tracking._plot.svg_string`; this module draws the
time series of a deployment (requests per second, latency), whose x axis is time. The
page's script (``static/lepton.js``) redraws the same chart from the metrics endpoint,
with the same geometry, so the first paint and the live updates look alike.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

__all__ = ["nice_max", "time_chart"]

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 480, 200, 52, 12, 26, 30
MARKERS = 60  # samples up to which each one is also drawn as a dot


def nice_max(value: float) -> float:
    """The smallest 1/2/5 x 10^k at or above ``value`` (the top of the y axis)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    step = 10.0 ** math.floor(math.log10(value))
    return float(next(m * step for m in (1, 2, 5, 10) if m * step >= value))


def time_chart(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    unit: str,
    now: float,
    window_s: float = 300.0,
    color: str = "#2563eb",
) -> str:
    """An SVG line chart of ``(unix_time, value)`` over the last ``window_s`` seconds.

    Args:
        points: The samples, oldest first; non-finite values are skipped.
        title: Shown at the top left.
        unit: Appended to the y-axis labels (``"req/s"``, ``"ms"``).
        now: The right edge of the x axis (unix seconds).
        window_s: How much history the x axis spans.
        color: The line's color.

    Returns:
        SVG markup, safe to put in a page as is (the title is escaped).
    """
    shown = [(t, v) for t, v in points if math.isfinite(v) and now - window_s <= t <= now]
    top = nice_max(max((v for _, v in shown), default=0.0))
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def at(t: float, v: float) -> tuple[float, float]:
        return PAD_L + (1 - (now - t) / window_s) * pw, PAD_T + (1 - v / top) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {H}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{PAD_L}" y="16" class="chart-title">{html.escape(title)}</text>',
    ]
    for i in range(5):
        value = top * i / 4
        _, y = at(now, value)
        out.append(
            f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{PAD_L + pw}" y2="{y:.1f}" class="gridline"/>'
        )
        out.append(
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
            f"{value:.3g}</text>"
        )
    for i in range(6):
        ago = window_s * (5 - i) / 5
        x, _ = at(now - ago, 0)
        label = "now" if ago == 0 else f"-{ago / 60:g} min" if ago >= 60 else f"-{ago:g} s"
        out.append(
            f'<text x="{x:.1f}" y="{H - 10}" class="tick" text-anchor="middle">{label}</text>'
        )
    out.append(
        f'<text x="{W - PAD_R}" y="16" class="tick" text-anchor="end">{html.escape(unit)}</text>'
    )
    if shown:
        xy = [at(t, v) for t, v in shown]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        if len(xy) <= MARKERS:  # a few seconds of samples are a few pixels wide: show them
            out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in xy]
    else:
        out.append(
            f'<text x="{PAD_L + pw / 2}" y="{PAD_T + ph / 2}" class="tick" '
            f'text-anchor="middle">no requests yet</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
