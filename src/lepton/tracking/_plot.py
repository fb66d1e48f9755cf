"""Metric curves as SVG or PNG, drawn by us (SVG) or Pillow (PNG): no plotting library.

The chart is laid out once as a list of shapes, then written in the format the file
name asks for.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lepton._fs import atomic_write_bytes
from lepton.errors import TrackingError

__all__ = ["plot_curves", "svg_string"]

_COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 360, 64, 150, 28, 44


@dataclass(frozen=True)
class _Shape:
    kind: str  # "line", "polyline", "text", "rect"
    points: tuple[tuple[float, float], ...]
    color: str = "#111827"
    width: float = 1.0
    text: str = ""
    anchor: str = "start"  # start, middle, end
    size: int = 11
    rotate: bool = False


def _ticks(low: float, high: float, n: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _layout(
    series: Sequence[tuple[str, Sequence[tuple[int, float]]]], title: str, y_label: str
) -> list[_Shape]:
    points = [p for _, pts in series for p in pts if math.isfinite(p[1])]
    if not points:
        raise TrackingError("nothing to plot: no finite values (was the metric logged?)")
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1 = x1 if x1 > x0 else x0 + 1
    y0, y1 = (y0, y1) if y1 > y0 else (y0 - 0.5, y1 + 0.5)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def at(x: float, y: float) -> tuple[float, float]:
        return PAD_L + (x - x0) / (x1 - x0) * pw, PAD_T + (1 - (y - y0) / (y1 - y0)) * ph

    shapes = [_Shape("text", ((PAD_L, 18),), text=title, size=13)]
    for y in _ticks(y0, y1):
        _, py = at(x0, y)
        shapes.append(_Shape("line", ((PAD_L, py), (PAD_L + pw, py)), color="#e5e7eb"))
        shapes.append(_Shape("text", ((PAD_L - 6, py + 4),), text=f"{y:.4g}", anchor="end"))
    for x in _ticks(x0, x1):
        px, _ = at(x, y0)
        shapes.append(_Shape("text", ((px, PAD_T + ph + 16),), text=f"{x:g}", anchor="middle"))
    shapes.append(_Shape("rect", ((PAD_L, PAD_T), (PAD_L + pw, PAD_T + ph)), color="#9ca3af"))
    shapes.append(_Shape("text", ((PAD_L + pw / 2, H - 8),), text="step", anchor="middle"))
    shapes.append(
        _Shape("text", ((14, PAD_T + ph / 2),), text=y_label, anchor="middle", rotate=True)
    )
    for i, (label, pts) in enumerate(series):
        color = _COLORS[i % len(_COLORS)]
        line = tuple(at(x, y) for x, y in pts if math.isfinite(y))
        shapes.append(_Shape("polyline", line, color=color, width=2))
        ly = PAD_T + 12 + 16 * i
        shapes.append(
            _Shape(
                "line", ((W - PAD_R + 12, ly - 4), (W - PAD_R + 30, ly - 4)), color=color, width=3
            )
        )
        shapes.append(_Shape("text", ((W - PAD_R + 36, ly),), text=label[:20]))
    return shapes


def _svg(shapes: list[_Shape], *, markers: int = 0) -> bytes:
    """SVG of ``shapes``; lines of at most ``markers`` points also get a dot per point
    (a one-epoch run's single point is otherwise invisible)."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        f'font-family="sans-serif">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
    ]
    for s in shapes:
        (xa, ya), *rest = s.points or ((0.0, 0.0),)
        if s.kind == "text":
            anchor = {"start": "start", "middle": "middle", "end": "end"}[s.anchor]
            turn = f' transform="rotate(-90 {xa:.1f} {ya:.1f})"' if s.rotate else ""
            out.append(
                f'<text x="{xa:.1f}" y="{ya:.1f}" font-size="{s.size}" text-anchor="{anchor}"'
                f"{turn}>{html.escape(s.text)}</text>"
            )
        elif s.kind == "line":
            (xb, yb) = rest[0]
            out.append(
                f'<line x1="{xa:.1f}" y1="{ya:.1f}" x2="{xb:.1f}" y2="{yb:.1f}" '
                f'stroke="{s.color}" stroke-width="{s.width}"/>'
            )
        elif s.kind == "rect":
            (xb, yb) = rest[0]
            out.append(
                f'<rect x="{xa:.1f}" y="{ya:.1f}" width="{xb - xa:.1f}" height="{yb - ya:.1f}" '
                f'fill="none" stroke="{s.color}"/>'
            )
        else:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in s.points)
            out.append(
                f'<polyline points="{coords}" fill="none" stroke="{s.color}" '
                f'stroke-width="{s.width}"/>'
            )
            if len(s.points) <= markers:
                out += [
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s.color}"/>'
                    for x, y in s.points
                ]
    out.append("</svg>")
    return "\n".join(out).encode()


def _png(shapes: list[_Shape]) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(image)
    for s in shapes:
        if s.kind == "text":
            ((x, y),) = s.points
            if s.rotate:
                continue  # Pillow's default font cannot rotate; the SVG has the axis label
            width = draw.textlength(s.text)
            x -= {"start": 0, "middle": width / 2, "end": width}[s.anchor]
            draw.text((x, y - 10), s.text, fill="#111827")
        elif s.kind == "rect":
            draw.rectangle(s.points, outline=s.color)
        elif len(s.points) >= 2:
            draw.line(s.points, fill=s.color, width=round(s.width))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def svg_string(
    series: Sequence[tuple[str, Sequence[tuple[int, float]]]],
    *,
    title: str = "",
    y_label: str = "",
) -> str:
    """The chart :func:`plot_curves` draws, as SVG markup (for a web page).

    Lines of a few points get a dot at each point, so a short run still shows.

    Raises:
        TrackingError: No series has a finite value.
    """
    return _svg(_layout(series, title, y_label), markers=30).decode()


def plot_curves(
    series: Sequence[tuple[str, Sequence[tuple[int, float]]]],
    path: str | Path,
    *,
    title: str = "",
    y_label: str = "",
) -> Path:
    """Draw ``(label, [(step, value), ...])`` lines into ``path`` (``.svg`` or ``.png``).

    Example:
        >>> plot_curves([("run 1", metric_history(1, "val_loss"))], "loss.svg")  # doctest: +SKIP
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".svg", ".png"):
        raise TrackingError(f"plots are written as .svg or .png, not {suffix or 'no suffix'!r}")
    shapes = _layout(series, title, y_label)
    return atomic_write_bytes(target, _svg(shapes) if suffix == ".svg" else _png(shapes))
