"""IdentityMetrics speed (>= 300 images) and the dlib copycat-band calibration.

    python benchmarks/metrics.py                 # 3 references + 320 augmented lisa/london candidates
    python benchmarks/metrics.py --per-source 30 --workers 2
    python benchmarks/metrics.py --calibrate     # similarity of same/other-person pairs on the shared photos

Prints images/s of the whole run, the face-analysis floor measured in the same run (face analysis alone), and
the overhead of statistics + t-SNE + HTML/CSV/JSON on top of that floor (target <= 15 %).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FACES = Path(
    os.environ.get("IDENTITYLOCK_FACES_DIR", Path(__file__).resolve().parents[2] / "shared/data/faces")
)
LISA = [f"lisa_{i}.jpg" for i in (1, 2, 3, 4)]
LONDON = [f"london{p}_{k}.jpg" for p in ("001", "004", "005", "006", "025", "042") for k in (1, 2)]


def augmentations(img: np.ndarray, n: int) -> list[np.ndarray]:
    """Up to n variants: flip x crop x brightness, then small rotations; long side 640 (a typical generation)."""
    import cv2

    h, w = img.shape[:2]
    s = 640 / max(h, w)
    img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    crops = [(0, 0, w, h), (w // 12, h // 12, w - w // 12, h - h // 20), (0, h // 10, w - w // 10, h)]
    out = []
    for flip, (x0, y0, x1, y1), gain in itertools.product((False, True), crops, (0.8, 1.0, 1.2)):
        v = img[y0:y1, x0:x1]
        v = v[:, ::-1] if flip else v
        out.append(np.clip(v.astype(np.float32) * gain, 0, 255).astype(np.uint8))
    for angle in (-8, 8, -4, 4):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        out.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    return out[:n]


def prepare(root: Path, per_source: int) -> tuple[Path, dict[str, Path]]:
    from identitylock.core.images import load_image
    from PIL import Image

    ref = root / "reference"
    ref.mkdir()
    for n in LISA[:3]:
        Image.fromarray(load_image(FACES / n)).save(ref / n, quality=92)
    groups = {"lisa_aug": root / "lisa_aug", "london_aug": root / "london_aug"}
    for name, sources in (("lisa_aug", LISA), ("london_aug", LONDON)):
        groups[name].mkdir()
        for src in sources:
            for k, v in enumerate(augmentations(load_image(FACES / src), per_source)):
                Image.fromarray(v).save(groups[name] / f"{Path(src).stem}_{k:02d}.jpg", quality=90)
    return ref, groups


def bench(per_source: int, workers: int | None, keep: Path | None) -> None:
    from identitylock.core.images import iter_image_files
    from identitylock.core.metrics import analyze_items, build_metrics
    from identitylock.core.metrics.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ref_dir, group_dirs = prepare(root, per_source)
        ref_files = list(iter_image_files([ref_dir]))
        group_files = {k: list(iter_image_files([d])) for k, d in group_dirs.items()}
        files = ref_files + [f for fs in group_files.values() for f in fs]
        n = len(files)
        print(f"{n} images ({len(ref_files)} reference, "
              + ", ".join(f"{k} {len(v)}" for k, v in group_files.items()) + f"), workers={workers or os.cpu_count()}")  # fmt: skip
        t0 = time.perf_counter()
        analyzed = analyze_items(files, backend="dlib", workers=workers)
        t1 = time.perf_counter()
        reference, k, groups = analyzed[: len(ref_files)], len(ref_files), {}
        for name, fs in group_files.items():
            groups[name] = analyzed[k : k + len(fs)]
            k += len(fs)
        result = build_metrics(reference, groups)
        t2 = time.perf_counter()
        out = keep or root / "report"
        paths = write_report(result, out)
        t3 = time.perf_counter()
    floor, stats, report = t1 - t0, t2 - t1, t3 - t2
    total = t3 - t0
    print(result.summary_text())
    print(f"face-analysis floor : {floor:7.2f} s  {n / floor:6.2f} images/s")
    print(f"statistics + t-SNE  : {stats:7.2f} s")
    print(f"HTML + CSV + JSON   : {report:7.2f} s  (html {paths['html'].stat().st_size / 1e6:.1f} MB)" if keep else
          f"HTML + CSV + JSON   : {report:7.2f} s")  # fmt: skip
    print(f"whole run           : {total:7.2f} s  {n / total:6.2f} images/s")
    print(f"report overhead     : {100 * (stats + report) / floor:5.1f} % of the floor (target <= 15 %)")


def calibrate() -> None:
    """Cosine similarity of same-person and other-person pairs with dlib (the copycat band calibration)."""
    import csv

    from identitylock.core.faces import analyze, analyze_file, get_engine
    from identitylock.core.images import load_image

    eng = get_engine("dlib")
    labels = list(csv.DictReader(open(FACES / "labels.csv")))
    rows = [r for r in labels if r["faces_expected"] == "1"]
    vec = {}
    for r in rows:
        res = analyze_file(FACES / r["file"], eng)
        if res.found:
            vec[r["file"]] = (r["identity"], res.primary.embedding)
    same, other = [], []
    for (_, (ia, va)), (_, (ib, vb)) in itertools.combinations(vec.items(), 2):
        (same if ia == ib else other).append(float(va @ vb))
    q = [0, 0.05, 0.5, 0.95, 1]
    print(f"{len(vec)} faces; {len(same)} same-person pairs, {len(other)} other-person pairs")
    print("same-person  quantiles", np.round(np.quantile(same, q), 3))
    print("other-person quantiles", np.round(np.quantile(other, q), 3))
    flips = []
    for n in ("lisa_1.jpg", "london001_1.jpg", "obama_1.jpg"):
        res = analyze(np.ascontiguousarray(load_image(FACES / n)[:, ::-1]), eng)
        flips.append(float(res.primary.embedding @ vec[n][1]))
    print("mirrored copy vs original", np.round(flips, 4))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--per-source", type=int, default=20, help="augmented copies per source photo (16 sources)"
    )
    p.add_argument("--workers", type=int, default=0, help="face-analysis processes (0 = all cores)")
    p.add_argument("--keep", type=Path, help="write the report here instead of a temporary folder")
    p.add_argument("--calibrate", action="store_true", help="print the dlib band calibration instead")
    a = p.parse_args()
    if not (FACES / "labels.csv").exists():
        print(f"shared face photos not found at {FACES} (set IDENTITYLOCK_FACES_DIR)", file=sys.stderr)
        return 2
    if a.calibrate:
        calibrate()
    else:
        bench(a.per_source, a.workers or None, a.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
