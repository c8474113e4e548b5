"""How the face detector's score floor and box rule were chosen (faces.MIN_DET_SCORE, MIN_INSIDE_FRACTION).

    PYTHONPATH=... .venv/bin/python benchmarks/face_score_floor.py [COUNT]

Runs every rung of the rescue ladder *unfiltered* on (a) every photo of tests/fixtures/faces and (b) COUNT
generated images with no face (tests/hostile_images.py: noise, smooth noise, gradients, textures), and prints
the detector scores and the share of each box inside the image. A good floor lies between the two.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hostile_images import no_face_images  # noqa: E402
from identitylock.core.faces import get_engine, inside_fraction, rung_inputs  # noqa: E402
from identitylock.core.images import load_image  # noqa: E402


def rung_detections(image: np.ndarray, engine) -> list[tuple[str, float, float]]:
    """(rung, score, inside fraction) of every detection at every rung, as analyze would see them."""
    h, w = image.shape[:2]
    out = []
    for rung, work, det_rung, dx, dy in rung_inputs(image):
        for f in engine.detect(work, det_rung):
            g = f.transformed(1.0, -dx, -dy)
            out.append((rung, float(f.det_score), inside_fraction(g.bbox, w, h)))
    return out


def close_up(faces: Path, engine) -> np.ndarray:
    """london004_1 cropped inside its own face box (the face runs off every edge): the `pad` rung's case."""
    from identitylock.core.faces import analyze

    img = load_image(faces / "london004_1.jpg")
    x0, y0, x1, y1 = analyze(img, engine).primary.bbox.astype(int)
    inset = int(0.2 * (x1 - x0))
    return np.ascontiguousarray(img[y0 + inset : y1 - inset // 2, x0 + inset : x1 - inset])


def _per_rung(dets: list[tuple[str, float, float]]) -> str:
    best = {}
    for rung, score, inside in dets:
        if rung not in best or score > best[rung][0]:
            best[rung] = (score, inside, sum(d[0] == rung for d in dets))
    return "  ".join(f"{r} {s:.3f}({i:.2f})x{n}" for r, (s, i, n) in best.items()) or "MISS"


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 48
    faces = ROOT / "tests" / "fixtures" / "faces"
    engine = get_engine("dlib")
    print("real photos: per rung, best score (inside fraction) x detections; expected faces")
    photos = [
        (r["file"], r["faces_expected"], load_image(faces / r["file"]))
        for r in csv.DictReader(open(faces / "labels.csv"))
    ]
    photos.append(("london004_1 close-up", "1", close_up(faces, engine)))
    for name, expected, img in photos:
        print(f"  {name:20} exp {expected:>2}  {_per_rung(rung_detections(img, engine))}")
    worst = []
    for name, img in no_face_images(count=count):
        dets = rung_detections(img, engine)
        if dets:
            rung, score, inside = max(dets, key=lambda d: d[1])
            worst.append((score, inside, rung, name))
    print(f"generated no-face images: {len(worst)}/{count} with any detection at any rung")
    for score, inside, rung, name in sorted(worst, reverse=True):
        print(f"  {score:.3f} (inside {inside:.2f}) {rung:18} {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
