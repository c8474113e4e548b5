"""Face-engine throughput and memory: detect + landmarks + identity vector on 768x768 photos.

Prints, in one run:
- the compute floor: single-image detector + landmark + descriptor time (one core), divided by the cores used;
- images/s and peak RSS (this process + workers) for the embedded dlib backend with a FacePool on all cores,
  steady state (pool already warm) and end-to-end (including pool start);
- the CNN/MMOD detector (the rescue rung) per image;
- insightface, when a real buffalo_l / antelopev2 pack is found (IDENTITYLOCK_INSIGHTFACE_DIR or ~/.insightface).

Target (issue #2): dlib HOG throughput within 1.3x of the floor.

    .venv/bin/python benchmarks/face_engine.py [--images 160] [--workers 2]

``--backend arcface-onnx`` (issue #17) instead compares, at 640x640, the onnxruntime-only ArcFace engine with
the insightface-package engine on the same ONNX files: detect + 68 landmarks + gender/age + align + embed, one
process per engine (peak RSS = that process's ru_maxrss), rounds alternating. Files: the test stand-ins (built
here, random weights: a one-face detector and a random-conv detector that reports ~20 faces per photo) or a real
pack with ``--pack DIR``. Target: the onnxruntime path no slower.

    .venv/bin/python benchmarks/face_engine.py --backend arcface-onnx [--images 40] [--rounds 3] [--pack DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("IDENTITYLOCK_FACES_DIR", REPO.parent / "shared" / "data" / "faces"))
SOURCES = [
    "lisa_1",
    "lisa_2",
    "lisa_4",
    "london001_1",
    "london001_2",
    "london004_1",
    "london004_2",
    "london005_1",
    "london005_2",
    "london006_1",
    "london006_2",
    "london025_1",
    "london025_2",
    "london042_1",
    "london042_2",
]


class PeakRSS:
    """Samples the summed RSS of this process and its children every 200 ms (cheap: it must not steal CPU)."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            total = 0
            try:
                total = self.proc.memory_info().rss + sum(
                    c.memory_info().rss for c in self.proc.children(recursive=True)
                )
            except Exception:
                pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def make_photos(folder: Path, count: int, side: int = 768) -> list[Path]:
    """side x side JPEG photos: square crops of the consented lisa/london photos at varying offsets."""
    from PIL import Image

    paths = []
    for i in range(count):
        src = Image.open(FACES / f"{SOURCES[i % len(SOURCES)]}.jpg").convert("RGB")
        side = min(src.size)
        jitter = (i // len(SOURCES)) % 5 * 0.02
        x0 = int((src.width - side) / 2 + jitter * side)
        y0 = int((src.height - side) / 2)
        crop = src.crop(
            (max(0, x0 - int(jitter * side)), y0, max(0, x0 - int(jitter * side)) + side, y0 + side)
        ).resize((side, side))
        p = folder / f"photo_{i:04d}.jpg"
        crop.save(p, quality=92)
        paths.append(p)
    return paths


def floor_dlib(paths: list[Path]) -> dict[str, float]:
    """Median single-image stage times (seconds) of the dlib pipeline, measured on one core."""
    from identitylock.core.faces import get_engine
    from identitylock.core.images import load_image

    eng = get_engine("dlib")
    det_t, lm_t, desc_t, decode_t = [], [], [], []
    for p in paths[:30]:
        t0 = time.perf_counter()
        img = load_image(p)
        t1 = time.perf_counter()
        rects, _, _ = eng._hog.run(img, 0, 0.0)
        t2 = time.perf_counter()
        shape = eng._sp5(img, rects[0])
        t3 = time.perf_counter()
        eng._rec.compute_face_descriptor(img, shape)
        t4 = time.perf_counter()
        decode_t.append(t1 - t0)
        det_t.append(t2 - t1)
        lm_t.append(t3 - t2)
        desc_t.append(t4 - t3)
    return {
        "decode": statistics.median(decode_t),
        "detect": statistics.median(det_t),
        "landmarks": statistics.median(lm_t),
        "descriptor": statistics.median(desc_t),
    }


def cnn_time(paths: list[Path]) -> float:
    from identitylock.core.faces import RUNG_SLOW, get_engine
    from identitylock.core.images import load_image

    eng = get_engine("dlib")
    times = []
    for p in paths[:3]:
        img = load_image(p)
        t = time.perf_counter()
        eng.detect(img, RUNG_SLOW)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_pool(paths: list[Path], workers: int, engine_kwargs: dict) -> dict[str, float]:
    from identitylock.core.faces import FacePool

    with PeakRSS() as rss:
        t0 = time.perf_counter()
        with FacePool(workers, engine_kwargs) as pool:
            t1 = time.perf_counter()
            results = pool.map(paths)
            t2 = time.perf_counter()
    found = sum(1 for r, _ in results if r is not None and r.found)
    return {
        "pool_start_s": t1 - t0,
        "steady_s": t2 - t1,
        "end_to_end_s": t2 - t0,
        "found": found,
        "peak_rss_mb": rss.peak / 2**20,
    }


ONNX_ENGINES = ("arcface-onnx", "insightface-package")


def _one_engine(engine: str, pack: str, photo_dir: str) -> None:
    """Child process: load one engine, warm it up, time detect + embed over the photos, print JSON."""
    import json
    import resource

    from identitylock.core.faces import get_engine
    from identitylock.core.images import load_image

    images = [load_image(p) for p in sorted(Path(photo_dir).glob("*.jpg"))]
    eng = get_engine(engine, insightface_pack=pack, providers=["CPUExecutionProvider"])
    for img in images[:2]:
        eng.embed(img, eng.detect(img))
    faces = 0
    t0 = time.perf_counter()
    for img in images:
        found = eng.detect(img)
        eng.embed(img, found)
        faces += len(found)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"images_per_s": len(images) / dt, "faces": faces, "peak_rss_mb": peak}))


def bench_arcface_onnx(args) -> int:
    """The onnxruntime-only engine next to the insightface-package engine, same files, 640x640 photos."""
    import importlib.util
    import json
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = tmp / "photos"
        photos.mkdir()
        make_photos(photos, args.images, side=640)
        if args.pack:
            packs = {"your pack": Path(args.pack)}
        else:
            spec = importlib.util.spec_from_file_location(
                "standins", REPO / "tests" / "insightface_standins.py"
            )
            standins = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(standins)
            packs = {
                "stand-in, one face": standins.make_pack(tmp / "one" / "buffalo_l"),
                "stand-in, random conv (~20 faces per photo)": standins.make_random_pack(
                    tmp / "random" / "buffalo_l"
                ),
            }
        print(
            f"{args.images} photos of 640x640, {args.rounds} alternating rounds, {os.cpu_count()} cores, CPU provider"
        )
        for label, pack in packs.items():
            runs: dict[str, list[dict]] = {e: [] for e in ONNX_ENGINES}
            for _ in range(args.rounds):
                for engine in ONNX_ENGINES:
                    out = subprocess.run(
                        [sys.executable, __file__, "--_one", engine, str(pack), str(photos)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    runs[engine].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"\n{label} ({pack}):")
            best = {}
            for engine in ONNX_ENGINES:
                rates = [r["images_per_s"] for r in runs[engine]]
                best[engine] = statistics.median(rates)
                print(
                    f"  {engine:20s} {best[engine]:7.2f} images/s (median; runs {', '.join(f'{r:.2f}' for r in rates)})"
                    f"  faces {runs[engine][0]['faces']}  peak RSS {max(r['peak_rss_mb'] for r in runs[engine]):.0f} MB"
                )
            ratio = best["arcface-onnx"] / best["insightface-package"]
            print(
                f"  arcface-onnx / insightface-package: {ratio:.2f}x ({'no slower' if ratio >= 0.97 else 'SLOWER'})"
            )
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--_one":
        _one_engine(*sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None, help="photos (default 160; 40 with arcface-onnx)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--backend", choices=("dlib", "arcface-onnx"), default="dlib")
    ap.add_argument("--rounds", type=int, default=3, help="arcface-onnx: alternating rounds per engine")
    ap.add_argument("--pack", help="arcface-onnx: a real pack folder instead of the stand-ins")
    args = ap.parse_args()
    if not FACES.exists():
        print(f"face photos not found at {FACES}; set IDENTITYLOCK_FACES_DIR", file=sys.stderr)
        return 2
    if args.backend == "arcface-onnx":
        args.images = args.images or 40
        return bench_arcface_onnx(args)
    args.images = args.images or 160
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(Path(tmp), args.images)
        print(f"{len(paths)} photos of 768x768, {args.workers} worker process(es), {os.cpu_count()} cores\n")
        f = floor_dlib(paths)
        single = f["detect"] + f["landmarks"] + f["descriptor"]
        floor_rate = args.workers / single
        print("dlib (embedded default), one image on one core (median):")
        print(
            f"  decode {f['decode'] * 1000:6.1f} ms | HOG detect {f['detect'] * 1000:6.1f} ms | 5-pt landmarks "
            f"{f['landmarks'] * 1000:5.1f} ms | descriptor {f['descriptor'] * 1000:6.1f} ms"
        )
        print(
            f"  compute floor: {single * 1000:.1f} ms / {args.workers} cores = {single / args.workers * 1000:.1f} ms per image "
            f"= {floor_rate:.2f} images/s"
        )
        r = run_pool(paths, args.workers, {"backend": "dlib"})
        steady_rate = len(paths) / r["steady_s"]
        e2e_rate = len(paths) / r["end_to_end_s"]
        print(f"\nFacePool dlib HOG, {args.workers} workers: found {r['found']}/{len(paths)} faces")
        print(
            f"  steady state: {steady_rate:.2f} images/s ({r['steady_s']:.1f} s) -> {floor_rate / steady_rate:.2f}x the floor "
            f"(target <= 1.30x)"
        )
        print(f"  end to end incl. pool start ({r['pool_start_s']:.1f} s): {e2e_rate:.2f} images/s")
        print(f"  peak RSS (main + workers): {r['peak_rss_mb']:.0f} MB")
        print(
            f"\ndlib CNN/MMOD rescue detector at 512 px: {cnn_time(paths) * 1000:.0f} ms per image (one core)"
        )
        from identitylock.core.faces.packs import find_packs

        packs = find_packs()
        if packs:
            name = next(iter(packs))
            r = run_pool(paths, args.workers, {"backend": "insightface"})
            print(
                f"\ninsightface {name}: {len(paths) / r['steady_s']:.2f} images/s steady, peak RSS {r['peak_rss_mb']:.0f} MB"
            )
        else:
            print(
                "\ninsightface: no buffalo_l / antelopev2 pack on this machine (set IDENTITYLOCK_INSIGHTFACE_DIR); skipped"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
