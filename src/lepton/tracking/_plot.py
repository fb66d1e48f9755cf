"""Metric curves as a self-contained SVG (no plotting library, no fonts to fetch)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from lepton._fs import atomic_write_bytes

__all__ = ["plot_curves"]

_COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 360, 64, 150, 28, 44


def _ticks(low: float, high: float, n: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def plot_curves(
    series: Sequence[tuple[str, Sequence[tuple[int, float]]]],
    path: str | Path,
    *,
    title: str = "",
    y_label: str = "",
) -> Path:
    """Draw ``(label, [(step, value), ...])`` lines into an SVG file, atomically."""
    points = [p for _, pts in series for p in pts if math.isfinite(p[1])]
    if not points:
        raise ValueError("nothing to plot: every series is empty")
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return PAD_T + (1 - (y - y0) / (y1 - y0)) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{PAD_L}" y="18" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    for y in _ticks(y0, y1):
        out.append(f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
                   f'stroke="#e5e7eb"/>')  # fmt: skip
        out.append(f'<text x="{PAD_L - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.4g}</text>')
    for x in _ticks(x0, x1):
        out.append(f'<text x="{sx(x):.1f}" y="{PAD_T + plot_h + 16}" text-anchor="middle">'
                   f"{x:g}</text>")  # fmt: skip
    out.append(f'<rect x="{PAD_L}" y="{PAD_T}" width="{plot_w}" height="{plot_h}" fill="none" '
               f'stroke="#9ca3af"/>')  # fmt: skip
    out.append(f'<text x="{PAD_L + plot_w / 2}" y="{H - 8}" text-anchor="middle">step</text>')
    out.append(f'<text transform="translate(14 {PAD_T + plot_h / 2}) rotate(-90)" '
               f'text-anchor="middle">{html.escape(y_label)}</text>')  # fmt: skip
    for i, (label, pts) in enumerate(series):
        color = _COLORS[i % len(_COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts if math.isfinite(y))
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        ly = PAD_T + 12 + 16 * i
        out.append(f'<line x1="{W - PAD_R + 12}" x2="{W - PAD_R + 30}" y1="{ly - 4}" y2="{ly - 4}" '
                   f'stroke="{color}" stroke-width="3"/>')  # fmt: skip
        out.append(f'<text x="{W - PAD_R + 36}" y="{ly}">{html.escape(label[:20])}</text>')
    out.append("</svg>")
    return atomic_write_bytes(path, "\n".join(out).encode())
