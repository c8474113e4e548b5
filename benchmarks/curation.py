"""Curation benchmark: whole ``curate`` run vs. the face-analysis floor on N generated 768x768 images.

    python benchmarks/curation.py                 # 1,500 images, cache in /tmp/identitylock_bench/curation_768
    python benchmarks/curation.py --n 200 --workers 2
    python benchmarks/curation.py --selection-only --n 1500,10000,50000 [--embedding-dim 512]

``--selection-only`` times the stage after face analysis (identity drift, near-duplicates, K-Means, silhouette,
picks, the three catalogs written as JSON) on synthetic records: 326-D layout features in 24 families, pHashes
in families with 0-12 flipped bits (about 5 % within the default 6 bits of another), 128-D identity vectors
with 1 % other people, 10 % failing quality, one seed per 5 images; ``--embedding-dim`` adds CLIP-like
embeddings (the cosine near-duplicate test too). Each size runs in its own process, so each peak RSS is its own.

The images are made once (and reused) from the shared lisa_/london photos: random crops, flips, blur,
brightness/contrast changes, seed-named files (10 seed groups, some PNGs with a ComfyUI ``prompt`` chunk),
plus no-face textures, two-face collages and recompressed near-duplicates. Peak RSS is sampled every 0.1 s as
the sum over this process and all its children (the worker pool).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("IDENTITYLOCK_FACES_DIR", REPO / "tests" / "fixtures" / "faces"))
SIDE = 768


def _prompt_chunk(seed: int) -> str:
    return json.dumps(
        {
            "3": {
                "class_type": "KSampler",
                "inputs": {"seed": seed, "steps": 30, "cfg": 7.0, "positive": ["6", 0]},
            },
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": f"portrait photo, variation {seed}"}},
        }
    )


def generate(out: Path, n: int, seed: int = 0) -> list[Path]:
    """Make (or reuse) ``n`` benchmark images in ``out``."""
    import cv2
    from identitylock.core.images import load_image, save_png

    marker = out / f".complete_{n}"
    if marker.exists():
        return sorted(p for p in out.iterdir() if p.suffix in (".jpg", ".png"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sources = [load_image(p) for p in sorted(FACES.glob("lisa_*.jpg")) + sorted(FACES.glob("london*.jpg"))]
    if not sources:
        raise SystemExit(f"no lisa_/london photos in {FACES}")
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    made: list[np.ndarray] = []

    def aug(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        s = rng.uniform(0.72, 1.0) * min(h, w)
        cx = w / 2 + rng.uniform(-0.08, 0.08) * w
        cy = h / 2 + rng.uniform(-0.08, 0.08) * h
        x0 = int(np.clip(cx - s / 2, 0, w - s))
        y0 = int(np.clip(cy - s / 2, 0, h - s))
        crop = cv2.resize(img[y0 : y0 + int(s), x0 : x0 + int(s)], (SIDE, SIDE), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.4:
            crop = cv2.GaussianBlur(crop, (0, 0), rng.uniform(0.8, 3.0))
        gain, bias = rng.uniform(0.6, 1.3), rng.uniform(-30, 30)
        return np.clip(crop.astype(np.float32) * gain + bias + (1 - gain) * 110, 0, 255).astype(np.uint8)

    for i in range(n):
        group_seed = 966983 + (i % 10)
        kind = rng.random()
        if kind < 0.04:  # no face: smooth texture with shapes
            img = np.zeros((SIDE, SIDE, 3), np.uint8)
            img[:] = rng.integers(0, 255, 3)
            for _ in range(12):
                c = tuple(int(v) for v in rng.integers(0, 255, 3))
                p = rng.integers(0, SIDE, 4)
                cv2.rectangle(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), c, -1)
            img = cv2.GaussianBlur(img, (0, 0), 4)
            name = f"bench_seed_{group_seed}_{i:05d}_noface"
        elif kind < 0.07:  # two faces side by side
            a, b = (aug(sources[j]) for j in rng.choice(len(sources), 2, replace=False))
            img = np.concatenate([cv2.resize(a, (SIDE // 2, SIDE)), cv2.resize(b, (SIDE // 2, SIDE))], axis=1)
            name = f"bench_seed_{group_seed}_{i:05d}_two"
        elif kind < 0.10 and made:  # near-duplicate of an earlier image
            img = made[int(rng.integers(0, len(made)))]
            name = f"bench_seed_{group_seed}_{i:05d}_dup"
        else:
            img = aug(sources[int(rng.integers(0, len(sources)))])
            name = f"bench_seed_{group_seed}_{i:05d}"
            if len(made) < 50:
                made.append(img)
        if i % 10 == 0:
            paths.append(save_png(img, out / f"{name}.png", {"prompt": _prompt_chunk(group_seed)}))
        else:
            p = out / f"{name}.jpg"
            cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            paths.append(p)
    marker.write_text("ok")
    return sorted(paths)


class PeakRSS:
    """Peak of (this process + all descendants) resident memory, sampled in a thread."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            total = 0
            try:
                procs = [self._proc, *self._proc.children(recursive=True)]
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except Exception:
                        pass
            except Exception:
                pass
            self.peak = max(self.peak, total)
            self._stop.wait(interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def synthetic_records(n: int, seed: int = 0, embedding_dim: int = 0) -> tuple[list, np.ndarray | None]:
    """Records as the worker pool returns them (no pixels), with the structure described in the module doc."""
    from identitylock.core.quality import ImageMetrics, QualityResult
    from identitylock.core.records import ImageRecord

    rng = np.random.default_rng(seed)
    layouts = rng.normal(size=(24, 326)).astype(np.float32)
    roots = [int(x) for x in rng.integers(0, 2**63, size=max(1, n // 3))]
    person = rng.normal(size=128)
    fam = rng.integers(0, 24, n)
    feats = layouts[fam] + rng.normal(size=(n, 326)).astype(np.float32) * 0.6
    ids = person + rng.normal(size=(n, 128)) * np.where(rng.random((n, 1)) < 0.01, 3.0, 0.3)
    ids /= np.linalg.norm(ids, axis=1, keepdims=True)
    records = []
    for i in range(n):
        h = roots[int(rng.integers(0, len(roots)))]
        for b in rng.choice(64, size=int(rng.integers(0, 13)), replace=False):
            h ^= 1 << int(b)
        ok = rng.random() > 0.1
        metrics = ImageMetrics(
            768, 768, 1, 1, 120.0, 150.0, 55.0, 0.9, 0.3, 0.0, [200.0, 180.0, 560.0, 590.0]
        )
        scores = {"sharpness": 70.0, "contrast": 60.0, "confidence": 90.0, "face_size": 50.0}
        q = QualityResult(metrics, scores, float(rng.uniform(30, 95)), ok, [] if ok else ["blur"])
        records.append(
            ImageRecord(
                path=f"/gen/bench_seed_{i // 5}_{i:06d}.png",
                meta={"seed": i // 5},
                quality=q,
                features=feats[i],
                phash=h,
                identity=ids[i].astype(np.float32),
                pose={"yaw": 0.0, "pitch": 0.0, "roll": 0.0},
            )
        )
    emb = None
    if embedding_dim:
        centres = rng.normal(size=(24, embedding_dim)).astype(np.float32)
        emb = centres[fam] + rng.normal(size=(n, embedding_dim)).astype(np.float32) * 0.8
    return records, emb


def selection_only(n: int, embedding_dim: int, target: int) -> tuple[float, int, str]:
    """Seconds and peak RSS (bytes) of the selection stage on ``n`` synthetic records, and a summary line."""
    import tempfile

    from identitylock.core.catalog import write_json
    from identitylock.core.curate import build_catalogs, select_records

    records, emb = synthetic_records(n, embedding_dim=embedding_dim)
    passing = [i for i, r in enumerate(records) if r.passed]
    with PeakRSS() as mem, tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        sel = select_records(
            records,
            target=target,
            k=8,
            embeddings=None if emb is None else emb[passing],
            embedding_index=None if emb is None else passing,
            max_drift=0.5,
        )
        settings = {"target": target, "k": 8, "strategy": "balanced", "quality": {"thresholds": {}},
                    "embedding": "synthetic"}  # fmt: skip
        master, curated, report = build_catalogs(records, sel, "bench", ["/gen"], settings, None)
        for name, doc in (("master", master), ("curated", curated), ("report", report)):
            write_json(Path(tmp) / f"{name}.json", doc)
        wall = time.perf_counter() - t
    line = (f"{len(sel.duplicates)} duplicates, {len(sel.identity_outliers)} identity outliers, k {sel.k}, "
            f"silhouette {sel.silhouette:.3f}, {len(sel.selected)} selected")  # fmt: skip
    return wall, mem.peak, line


def main_selection_only(args: argparse.Namespace, sizes: list[int]) -> int:
    """One child process per size; then the growth ratios and the targets."""
    import subprocess

    if args.child:
        wall, peak, line = selection_only(sizes[0], args.embedding_dim, args.target)
        print(json.dumps({"n": sizes[0], "wall": wall, "peak": peak, "line": line}))
        return 0
    rows = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--selection-only", "--child", "--n", str(n),
               "--embedding-dim", str(args.embedding_dim), "--target", str(args.target)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        r = rows[-1]
        print(
            f"n {n:>6}: {r['wall']:7.2f} s  peak RSS {r['peak'] / 2**20:6.0f} MiB  ({r['line']})", flush=True
        )
    emb = (
        f"CLIP-like {args.embedding_dim}-D embeddings + pHash"
        if args.embedding_dim
        else "layout features + pHash"
    )
    print(f"selection stage on synthetic records ({emb})")
    for a, b in zip(rows, rows[1:]):
        print(
            f"time({b['n']}) / time({a['n']}) = {b['wall'] / a['wall']:.2f}  (n grew {b['n'] / a['n']:.2f}x)"
        )
    print("targets: time(50000) / time(10000) <= 6, peak RSS <= 2048 MiB at 50000")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="1500", help="images; with --selection-only a comma list of sizes")
    ap.add_argument("--selection-only", action="store_true", help="time selection on synthetic records")
    ap.add_argument(
        "--embedding-dim", type=int, default=0, help="with --selection-only: CLIP-like embeddings"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache", default="/tmp/identitylock_bench/curation_768")
    ap.add_argument("--out", default="/tmp/identitylock_bench/portfolio")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--target", type=int, default=70)
    ap.add_argument(
        "--quality", default="C", help="quality strategy for the curate run (default C: see docs)"
    )
    ap.add_argument("--skip-floor", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in str(args.n).split(",")]
    if args.selection_only:
        return main_selection_only(args, sizes)
    args.n = sizes[0]

    from identitylock.core.curate import curate, selection_log
    from identitylock.core.faces import analyze_many
    from identitylock.core.quality import QualityConfig

    t = time.perf_counter()
    cache = Path(args.cache) / str(args.n)
    paths = generate(cache, args.n)
    print(
        f"images: {len(paths)} x {SIDE}^2 in {cache} (ready in {time.perf_counter() - t:.1f} s)", flush=True
    )
    rows = {}
    if not args.skip_floor:
        with PeakRSS() as mem:
            t = time.perf_counter()
            res = analyze_many(paths, workers=args.workers, engine_kwargs={"backend": "dlib"})
            wall = time.perf_counter() - t
        found = sum(1 for a, e in res if a is not None and a.found)
        rows["face-analysis floor"] = (wall, mem.peak)
        print(
            f"floor: analyze_many dlib, {args.workers} workers: {wall:.1f} s, {len(paths) / wall:.2f} img/s, "
            f"peak RSS {mem.peak / 2**20:.0f} MiB, faces found in {found}",
            flush=True,
        )
    with PeakRSS() as mem:
        t = time.perf_counter()
        result = curate(
            [cache],
            args.out,
            target=args.target,
            k=8,
            config=QualityConfig.for_strategy(args.quality),
            overwrite=True,
            workers=args.workers,
            engine_kwargs={"backend": "dlib"},
        )
        wall = time.perf_counter() - t
    rows["curate (whole run)"] = (wall, mem.peak)
    print(selection_log(result.report))
    print(f"{'run':<22}{'wall s':>9}{'img/s':>8}{'peak RSS MiB':>14}")
    for name, (w, peak) in rows.items():
        print(f"{name:<22}{w:>9.1f}{len(paths) / w:>8.2f}{peak / 2**20:>14.0f}")
    if "face-analysis floor" in rows:
        ratio = rows["curate (whole run)"][0] / rows["face-analysis floor"][0]
        print(f"curate / floor = {ratio:.3f} (target <= 1.25); peak RSS target <= 2048 MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
