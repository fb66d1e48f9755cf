"""Attribution pictures as PNG, drawn with Pillow (as the tracking plots are): no plotting
library is needed, and a served ``/explain`` can draw one without importing matplotlib.

Images get three panels: the input, the attributions over it, and the attributions alone,
on a diverging colormap (blue negative, white zero, red positive) scaled to the 99th
percentile of ``|attribution|`` so that one hot pixel does not wash out the rest. Rows and
token sequences get horizontal bars, red for positive and blue for negative.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["bars_png", "heatmap_png"]

# RdBu reversed: dark blue, blue, white, red, dark red at -1, -0.5, 0, 0.5, 1
_STOPS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
_COLORS = np.array(
    [[5, 48, 97], [67, 147, 195], [247, 247, 247], [214, 96, 77], [103, 0, 31]], dtype=np.float64
)
_INK, _GRID, _POS, _NEG = (17, 24, 39), (209, 213, 219), (214, 96, 77), (67, 147, 195)
_PANEL = 196  # pixels a side an image panel is enlarged to (at least)


def _font(size: int = 12) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font, one size
        return ImageFont.load_default()


def _diverging(values: np.ndarray) -> np.ndarray:
    """``values`` in [-1, 1] -> RGB floats in [0, 255], shape ``values.shape + (3,)``."""
    v = np.clip(values, -1.0, 1.0)
    return np.stack([np.interp(v, _STOPS, _COLORS[:, c]) for c in range(3)], axis=-1)


def _scaled(values: np.ndarray) -> np.ndarray:
    top = float(np.quantile(np.abs(values), 0.99)) if values.size else 0.0
    top = top or float(np.abs(values).max()) or 1.0
    return values / top


def _encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _gray_or_rgb(image: np.ndarray) -> np.ndarray:
    """A ``(H, W, 3)`` float picture in [0, 255] of a ``(C, H, W)`` or ``(H, W)`` input."""
    pixels = image if image.ndim == 3 else image[None]
    if pixels.shape[0] != 3:
        pixels = pixels.mean(axis=0, keepdims=True)
    low, high = float(pixels.min()), float(pixels.max())
    pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    return np.broadcast_to(pixels.transpose(1, 2, 0), (*pixels.shape[1:], 3)) * 255.0


def heatmap_png(image: np.ndarray, values: np.ndarray, title: str) -> bytes:
    """Input, overlay and heatmap side by side, with a colorbar.

    Args:
        image: One input, ``(C, H, W)`` or ``(H, W)``.
        values: Its attributions, the same shape (summed over channels here).
        title: One line drawn above the panels.
    """
    base = _gray_or_rgb(image)
    heat = values.sum(axis=0) if values.ndim == 3 else values
    v = _scaled(heat)
    colors = _diverging(v)
    alpha = np.clip(np.abs(v), 0.0, 1.0)[..., None] * 0.8
    overlay = base * (1.0 - alpha) + colors * alpha
    height, width = heat.shape
    factor = max(1, _PANEL // max(height, width))
    size = (width * factor, height * factor)
    panels = [
        Image.fromarray(p.round().astype(np.uint8), "RGB").resize(size, Image.Resampling.NEAREST)
        for p in (base, overlay, colors)
    ]
    pad, top, caption, bar = 12, 26, 16, 10
    canvas = Image.new(
        "RGB", (pad + 3 * (size[0] + pad), top + caption + size[1] + pad + bar + 24), "white"
    )
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 6), title, fill=_INK, font=_font(13))
    for i, (panel, name) in enumerate(
        zip(panels, ("input", "overlay", "attribution"), strict=True)
    ):
        left = pad + i * (size[0] + pad)
        draw.text((left, top), name, fill=_INK, font=_font(11))
        canvas.paste(panel, (left, top + caption))
    # colorbar under the last two panels: -max .. 0 .. +max
    y = top + caption + size[1] + pad
    left, right = pad + size[0] + pad, canvas.width - pad
    ramp = _diverging(np.linspace(-1.0, 1.0, right - left))[None].repeat(bar, axis=0)
    canvas.paste(Image.fromarray(ramp.round().astype(np.uint8), "RGB"), (left, y))
    draw.text((left, y + bar + 2), "negative", fill=_INK, font=_font(10))
    draw.text(((left + right) // 2 - 3, y + bar + 2), "0", fill=_INK, font=_font(10))
    draw.text((right - 44, y + bar + 2), "positive", fill=_INK, font=_font(10))
    return _encode(canvas)


def bars_png(
    names: Sequence[str],
    values: np.ndarray,
    title: str,
    *,
    errors: np.ndarray | None = None,
) -> bytes:
    """Horizontal bars, one per name, from a zero line (``errors``: whiskers, e.g. a std).

    Args:
        names: One label per bar, top to bottom.
        values: One value per bar.
        title: One line drawn above the bars.
        errors: Optional half-widths of an error bar per value.
    """
    row, pad, label_w, width = 20, 12, 230, 760
    top = 34
    canvas = Image.new("RGB", (width, top + row * len(names) + pad + 14), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), title, fill=_INK, font=_font(13))
    span = np.abs(values) + (errors if errors is not None else 0.0)
    scale = float(span.max()) if span.size and float(span.max()) > 0 else 1.0
    area_left, area_right = pad + label_w, width - pad - 64
    negative = bool((values < 0).any())
    zero = (area_left + area_right) / 2 if negative else area_left
    half = (area_right - zero) if not negative else (area_right - area_left) / 2
    font = _font(11)
    for i, (name, value) in enumerate(zip(names, values.tolist(), strict=True)):
        y = top + i * row
        label = name if len(name) <= 34 else name[:33] + "…"
        draw.text((pad, y + 3), label, fill=_INK, font=font)
        end = zero + value / scale * half
        draw.rectangle(
            (min(zero, end), y + 3, max(zero, end), y + row - 4), fill=_POS if value >= 0 else _NEG
        )
        e = float(errors[i]) / scale * half if errors is not None else 0.0
        if e > 0:
            draw.line((end - e, y + row // 2, end + e, y + row // 2), fill=_INK, width=1)
        if value >= 0:
            text_x = max(zero, end + e) + 4
        else:
            text_x = min(zero, end - e) - 4 - 7 * len(f"{value:.3g}")
        draw.text((max(area_left - 60, text_x), y + 3), f"{value:.3g}", fill=_INK, font=font)
    draw.line((zero, top - 2, zero, top + row * len(names)), fill=_GRID, width=1)
    return _encode(canvas)
