"""Where the quality defaults come from: measured distributions of sharp and degraded real photos.

    PYTHONPATH=... python benchmarks/quality_defaults.py            # prints the tables and chosen thresholds
    PYTHONPATH=... python benchmarks/quality_defaults.py --json out.json

Sharp set: the studio/portrait photos ``lisa_*`` and ``london*`` of tests/fixtures/faces, resized to 512, 768
and 1024 px on the long side. Degraded sets: the same images blurred (Gaussian, sigma 3 and 5 px at that size)
and with contrast cut to 0.15 (``mean + 0.15 * (pixel - mean)``). Render-like set (a stand-in for generated
images, which are smoother than camera photos): an edge-preserving bilateral filter plus JPEG q=70 of the sharp
images; they must pass. Measures (see core/quality.py): face-region Laplacian variance at 192x192, grey
standard deviation at 768 px, dlib detection confidence.

The chosen minimums sit between the worst sharp/render-like image (with a margin) and the best degraded one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FACES = REPO / "tests" / "fixtures" / "faces"
SIZES = (512, 768, 1024)


def sharp_sources() -> list[Path]:
    return sorted(FACES.glob("lisa_*.jpg")) + sorted(FACES.glob("london*.jpg"))


def resize_long(img: np.ndarray, side: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = side / max(h, w)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, (round(w * s), round(h * s)), interpolation=interp)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (0, 0), sigma)


def cut_contrast(img: np.ndarray, factor: float = 0.15) -> np.ndarray:
    f = img.astype(np.float32)
    mean = f.mean(axis=(0, 1), keepdims=True)
    return np.clip(mean + factor * (f - mean), 0, 255).astype(np.uint8)


def render_like(img: np.ndarray) -> np.ndarray:
    import cv2

    smooth = cv2.bilateralFilter(img, 9, 40, 5)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 70])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


VARIANTS = {
    "sharp": lambda im: im,
    "render_like": render_like,
    "blur_3": lambda im: blur(im, 3.0),
    "blur_5": lambda im: blur(im, 5.0),
    "contrast_0.15": cut_contrast,
}
GOOD = ("sharp", "render_like")


def measure_all() -> list[dict]:
    from identitylock.core.faces import analyze, get_engine
    from identitylock.core.images import load_image
    from identitylock.core.quality import measure

    engine = get_engine("dlib")
    rows = []
    for path in sharp_sources():
        base = load_image(path)
        for side in SIZES:
            img = resize_long(base, side)
            for name, fn in VARIANTS.items():
                im = fn(img)
                m = measure(im, analyze(im, engine, embed=False))
                rows.append(
                    {
                        "file": path.name,
                        "side": side,
                        "variant": name,
                        "faces": m.faces,
                        "sharpness": m.sharpness,
                        "sharpness_face": m.sharpness_face,
                        "contrast": m.contrast,
                        "confidence": m.confidence,
                    }
                )
    return rows


def _stats(values: list[float]) -> str:
    if not values:
        return "n=0"
    v = np.asarray(values, float)
    p = np.percentile(v, [0, 10, 50, 90, 100])
    return f"n={len(v):3d} min {p[0]:8.2f} p10 {p[1]:8.2f} median {p[2]:8.2f} p90 {p[3]:8.2f} max {p[4]:8.2f}"


def _metrics(r: dict):
    from identitylock.core.quality import ImageMetrics

    return ImageMetrics(
        0,
        0,
        r["faces"],
        r["faces"],
        r["sharpness"],
        r["sharpness_face"],
        r["contrast"],
        r["confidence"],
        0.3,
        0.0,
    )


def report(rows: list[dict]) -> dict:
    from identitylock.core.quality import STRATEGIES, QualityConfig, score

    out: dict = {"distributions": {}}
    for measure_name in ("sharpness_face", "sharpness", "contrast", "confidence"):
        print(f"\n{measure_name}")
        for variant in VARIANTS:
            for side in (*SIZES, None):
                vals = [
                    r[measure_name]
                    for r in rows
                    if r["variant"] == variant
                    and (side is None or r["side"] == side)
                    and r[measure_name] is not None
                ]
                label = f"{variant:14s} {'all' if side is None else side:>5}"
                print(f"  {label} {_stats(vals)}")
                if side is None:
                    out["distributions"][f"{measure_name}/{variant}"] = [round(x, 3) for x in vals]
    found = {v: sum(1 for r in rows if r["variant"] == v and r["faces"] == 1) for v in VARIANTS}
    total = {v: sum(1 for r in rows if r["variant"] == v) for v in VARIANTS}
    print("\nsingle face found: " + ", ".join(f"{v} {found[v]}/{total[v]}" for v in VARIANTS))
    print("\nstrategy outcome (images with one face found; current quality.py defaults):")
    for t in STRATEGIES.values():
        cfg = QualityConfig(thresholds=t)
        line = []
        for variant in VARIANTS:
            sel = [r for r in rows if r["variant"] == variant and r["faces"] == 1]
            passed = sum(score(_metrics(r), cfg).passed for r in sel)
            line.append(f"{variant} {passed}/{len(sel)}")
        print(
            f"  {t.name:16s} sharpness>={t.min_sharpness:g} contrast>={t.min_contrast:g} "
            f"confidence>={t.min_confidence:g} score>={t.min_score:g}: passed " + ", ".join(line)
        )
    totals = [score(_metrics(r), QualityConfig()).total for r in rows if r["variant"] in GOOD]
    print(f"\nweighted total of sharp + render-like images with the default curves: {_stats(totals)}")
    good = [r for r in rows if r["variant"] in GOOD and r["faces"] == 1]
    blurred = [r for r in rows if r["variant"].startswith("blur") and r["faces"] == 1]
    flat = [r for r in rows if r["variant"].startswith("contrast") and r["faces"] == 1]
    out["bounds"] = {
        "good_min_sharpness_face": min(r["sharpness_face"] for r in good),
        "blurred_max_sharpness_face": max((r["sharpness_face"] for r in blurred), default=None),
        "good_min_contrast": min(r["contrast"] for r in good),
        "flat_max_contrast": max((r["contrast"] for r in flat), default=None),
        "good_min_confidence": min(r["confidence"] for r in good),
    }
    print(
        "\nbounds: " + json.dumps({k: None if v is None else round(v, 3) for k, v in out["bounds"].items()})
    )
    return out


def _r(x: float, step: float, down: bool = False) -> float:
    q = np.floor(x / step) if down else np.round(x / step)
    return round(float(q * step), 4)


def choose(rows: list[dict]) -> dict:
    """The rules that turn the measurements into defaults (B), with A and C at fixed offsets from B."""
    from identitylock.core.quality import DEFAULT_CURVES, Curve, QualityConfig, Thresholds, score

    def col(variants, key):
        return np.array([r[key] for r in rows if r["variant"] in variants and r["faces"] == 1], float)

    good_sharp, blur3 = col(GOOD, "sharpness_face"), col(("blur_3",), "sharpness_face")
    sharp = col(("sharp",), "sharpness_face")
    curve = (
        _r(np.median(col(("blur_5",), "sharpness_face")), 5),  # very poor -> 10
        _r(blur3.max(), 5),  # poor -> 40: the sharpest 3 px blur
        _r(np.median(sharp), 10),  # good -> 80: the median sharp photo
        _r(np.percentile(sharp, 90), 10),  # excellent -> 100
    )
    b_sharp = _r(np.sqrt(blur3.max() * good_sharp.min()), 5)  # geometric middle of the gap
    b_contrast = _r(np.sqrt(col(("contrast_0.15",), "contrast").max() * col(GOOD, "contrast").min()), 5)
    b_conf = _r(col(GOOD, "confidence").min() - 0.15, 0.05, down=True)
    curves = dict(DEFAULT_CURVES, sharpness=Curve.from_points(*curve))
    cfg = QualityConfig(curves=curves, thresholds=Thresholds("none", 0, 0, 0, 0))
    good_totals = [score(_metrics(r), cfg).total for r in rows if r["variant"] in GOOD and r["faces"] == 1]
    b_score = _r(min(good_totals) - 5, 5, down=True)
    return {
        "sharpness_curve_points": curve,
        "A": (_r(b_sharp * 1.75, 5), _r(b_contrast * 1.75, 5), round(b_conf + 0.2, 2), b_score + 15),
        "B": (b_sharp, b_contrast, b_conf, b_score),
        "C": (_r(b_sharp * 0.55, 5), _r(b_contrast * 0.75, 5), round(b_conf - 0.1, 2), b_score - 10),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the rows and distributions here")
    ap.add_argument("--rows", help="re-use the rows of an earlier --json (no measuring)")
    args = ap.parse_args(argv)
    rows = json.loads(Path(args.rows).read_text())["rows"] if args.rows else measure_all()
    out = report(rows)
    from identitylock.core.quality import DEFAULT_CURVES, STRATEGIES

    chosen = choose(rows)
    out["chosen"] = chosen
    print("\nchosen (min_sharpness, min_contrast, min_confidence, min_score) and what quality.py has:")
    print(
        f"  sharpness curve points {chosen['sharpness_curve_points']}: quality.py {tuple(x for x, _ in DEFAULT_CURVES['sharpness'].to_list()[1:])}"
    )
    for key in "ABC":
        t = STRATEGIES[key]
        have = (t.min_sharpness, t.min_contrast, t.min_confidence, t.min_score)
        print(
            f"  {key}: chosen {chosen[key]}  quality.py {have}  {'same' if tuple(chosen[key]) == have else 'DIFFERENT'}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, **out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
