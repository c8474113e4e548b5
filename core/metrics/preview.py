"""A small PNG-style preview plot (similarity per group) drawn with PIL, for the node's IMAGE output.

No plotting dependency: points per group (failed detections counted under the axis), median bar with its
bootstrap CI, the lock line and the copycat bands as a background.
"""

from __future__ import annotations

import numpy as np

from .copycat import BAND_COLORS
from .results import MetricsResult

PALETTE = ["#b07cff", "#4fc3f7", "#ff8a65", "#81c784", "#f06292", "#ffd54f", "#4db6ac", "#9575cd"]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _rgb(hex_color: str, alpha: float = 1.0, bg=(21, 23, 28)) -> tuple[int, int, int]:
    c = [int(hex_color[i : i + 2], 16) for i in (1, 3, 5)]
    return tuple(int(alpha * c[k] + (1 - alpha) * bg[k]) for k in range(3))


def render_preview(result: MetricsResult, width: int = 960, height: int = 540) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]``: similarity to the reference centroid per group."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (21, 23, 28))
    d = ImageDraw.Draw(img)
    f_small, f_big = _font(13), _font(17)
    left, right, top, bottom = 70, 20, 44, 92
    sims = [r.similarity for r in result.rows if r.similarity is not None]
    lock = 1.0 - result.lock_threshold
    lo = min(sims + [lock, result.bands[0]]) - 0.01 if sims else lock - 0.1
    hi = 1.0
    y_of = lambda v: top + (hi - v) / (hi - lo) * (height - top - bottom)  # noqa: E731
    # band background
    edges = [lo, *result.bands, hi]
    for name, a, b in zip(("low", "ok", "watch", "danger"), edges[:-1], edges[1:]):
        a, b = max(a, lo), min(b, hi)
        if b > a:
            d.rectangle([left, y_of(b), width - right, y_of(a)], fill=_rgb(BAND_COLORS[name], 0.13))
            d.text(
                (width - right - 4, y_of(b) + 2),
                name,
                fill=_rgb(BAND_COLORS[name], 0.8),
                font=f_small,
                anchor="ra",
            )
    # axis + grid
    for k in range(6):
        v = lo + (hi - lo) * k / 5
        y = y_of(v)
        d.line([left, y, width - right, y], fill=(50, 53, 60))
        d.text((left - 6, y), f"{v:.3f}", fill=(170, 170, 170), font=f_small, anchor="rm")
    d.line([left, y_of(lock), width - right, y_of(lock)], fill=(229, 115, 115), width=2)
    d.text(
        (left + 4, y_of(lock) - 2),
        f"lock (drift {result.lock_threshold:.2f})",
        fill=(229, 115, 115),
        font=f_small,
        anchor="ld",
    )
    d.text(
        (left, 12),
        f"Similarity to the reference centroid ({result.backend})",
        fill=(230, 230, 230),
        font=f_big,
    )
    names = list(result.groups)
    slot = (width - left - right) / max(1, len(names))
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        g = result.groups[name]
        cx = left + slot * (i + 0.5)
        color = PALETTE[i % len(PALETTE)]
        vals = [r.similarity for r in result.rows if r.group == name and r.similarity is not None]
        for v in vals:
            x = cx + rng.uniform(-0.25, 0.25) * slot
            y = y_of(v)
            d.ellipse([x - 3.5, y - 3.5, x + 3.5, y + 3.5], fill=_rgb(color, 0.85))
        if g.median is not None:
            if g.median_ci:
                y0, y1 = y_of(g.median_ci[1]), y_of(g.median_ci[0])
                d.rectangle([cx - 0.3 * slot, y0, cx + 0.3 * slot, y1], outline=_rgb(color), width=2)
            d.line(
                [cx - 0.34 * slot, y_of(g.median), cx + 0.34 * slot, y_of(g.median)],
                fill=(255, 255, 255),
                width=3,
            )
        label = name if len(name) <= 22 else name[:21] + "…"
        d.text((cx, height - bottom + 10), label, fill=_rgb(color), font=f_small, anchor="ma")
        med = "no face" if g.median is None else f"median {g.median:.3f}"
        d.text((cx, height - bottom + 28), med, fill=(200, 200, 200), font=f_small, anchor="ma")
        fails = g.n_failed + g.n_errors
        extra = (
            f"n={g.n}" + (f", {fails} failed" if fails else "") + ("  OVERTRAINED?" if g.overtraining else "")
        )
        d.text(
            (cx, height - bottom + 46),
            extra,
            fill=(240, 180, 41) if fails or g.overtraining else (150, 150, 150),
            font=f_small,
            anchor="ma",
        )
    return np.asarray(img, dtype=np.uint8)
