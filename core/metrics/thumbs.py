"""Face-centred thumbnails for the dashboard, and which images get one when a large report must stay small."""

from __future__ import annotations

import base64
import io

import numpy as np

from .results import MetricsResult

THUMB_SIDE = 112
FACE_MARGIN = 0.35  # thumbnail crop around the face box, fraction of the box size each side
# Thumbnails embedded per report (data: URIs, ~5 KB each): about 1,200. With plotly.js (~4.8 MB) and the rows
# of 10,000 images (~5 MB) the page stays under 20 MB; the rest of the cards show a placeholder.
THUMB_BYTES = 6_000_000


def thumbnail(pixels: np.ndarray | None, path: str | None, bbox, side: int = THUMB_SIDE) -> str | None:
    """Face-centred JPEG thumbnail as a data: URI (whole image when there is no face); None if unreadable."""
    from PIL import Image

    try:
        if pixels is not None:
            img = Image.fromarray(np.asarray(pixels))
        elif path:
            img = Image.open(path)
            full = img.size
            # JPEG: decode at a reduced scale (much faster) that still leaves >= side px for the crop.
            if bbox is None:
                img.draft("RGB", (side, side))
            else:
                crop = (1 + 2 * FACE_MARGIN) * max(bbox[2] - bbox[0], bbox[3] - bbox[1])
                f = side / max(crop, 1.0)
                img.draft("RGB", (max(1, int(full[0] * f)), max(1, int(full[1] * f))))
            if bbox is not None and img.size != full:
                s = img.size[0] / full[0]
                bbox = [v * s for v in bbox]
            from PIL import ImageOps

            img = ImageOps.exif_transpose(img)
        else:
            return None
        img = img.convert("RGB")
        if bbox is not None:
            x0, y0, x1, y1 = bbox
            m = FACE_MARGIN * max(x1 - x0, y1 - y0)
            img = img.crop((int(x0 - m), int(y0 - m), int(x1 + m), int(y1 + m)))
        img.thumbnail((side, side))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:  # a thumbnail is decoration: never fail the report for it
        return None


def thumb_order(result: MetricsResult) -> list[int]:
    """Row indices by thumbnail priority: references (every card points at one), then the candidates from both
    ends of the copycat scale in turn (closest to a reference, farthest or failed), so a capped report keeps
    the images one looks at first under the default sorts."""
    refs = [i for i, r in enumerate(result.rows) if r.kind == "reference"]
    cands = sorted(
        (i for i, r in enumerate(result.rows) if r.kind != "reference"),
        key=lambda i: (-(result.rows[i].nearest_sim if result.rows[i].nearest_sim is not None else -9.0), i),
    )
    both_ends = [c for pair in zip(cands, reversed(cands)) for c in pair][: len(cands)]
    seen: set[int] = set()
    return refs + [i for i in both_ends if not (i in seen or seen.add(i))]
