"""The streaming curation pipeline: folder of generated images -> scored, de-duplicated, clustered portfolio.

Cost model: face analysis (~0.2 s per 768 px image with dlib, seconds for a miss that climbs the rescue ladder)
is the floor. Everything else per image (metadata, sharpness, contrast, fallback embedding, perceptual hash,
~10 ms) runs in the *same* worker process on the *same* decoded image, so each file is read and decoded once.
Workers return small records (numbers, a 326-D feature vector, a 128/512-D identity vector), never pixels: the
main process holds no decoded image, whatever the folder size. Work is submitted through a bounded window, so
memory stays flat and both cores stay busy even when one image is slow.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .catalog import metadata_from_text, write_json
from .cluster import (
    FALLBACK_NAME,
    Candidate,
    ClipEmbedder,
    cluster,
    fallback_features,
    near_duplicates,
    phash,
    select,
)
from .errors import IdentityLockError, ImageInputError
from .quality import QualityConfig, QualityResult, assess, tiers_for_rank

_log = logging.getLogger("IdentityLock")

R_IDENTITY = "identity_outlier"
LINK_MODES = ("symlink", "hardlink", "copy", "none")
OUTPUT_NAMES = ("master_image_catalog.json", "selection_report.json", "selection_log.txt", "curated")


@dataclass
class ImageRecord:
    """What one worker pass learns about one image (no pixels)."""

    path: str
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    quality: QualityResult | None = None
    features: np.ndarray | None = None
    phash: int | None = None
    identity: np.ndarray | None = None  # face identity vector of the main face
    pose: dict[str, Any] | None = None
    backend: str | None = None
    seconds: float = 0.0

    @property
    def filename(self) -> str:
        return Path(self.path).name

    @property
    def passed(self) -> bool:
        return self.error is None and self.quality is not None and self.quality.passed

    @property
    def seed(self) -> int | None:
        return self.meta.get("seed")


def record_from_array(
    image: np.ndarray,
    analysis: Any,
    config: QualityConfig,
    *,
    path: str = "",
    meta: dict[str, Any] | None = None,
) -> ImageRecord:
    """Quality, fallback features and hash of a decoded image whose face analysis is known."""
    q = assess(image, analysis, config)
    main = analysis.primary if analysis is not None and analysis.found else None
    return ImageRecord(
        path=path,
        meta=dict(meta or {}),
        quality=q,
        features=fallback_features(image, analysis),
        phash=phash(image),
        identity=None if main is None or main.embedding is None else np.asarray(main.embedding, np.float32),
        pose=main.pose.to_dict() if main is not None and main.pose is not None else None,
        backend=getattr(analysis, "backend", None),
    )


def process_path(
    path: str | os.PathLike, engine: Any, config: QualityConfig, analyze_kwargs: dict
) -> ImageRecord:
    """Read (once), analyse faces and measure one file. Never raises for a bad file: the record says why."""
    from PIL import Image, UnidentifiedImageError

    from .faces import analyze
    from .images import check_size, pil_to_rgb_array

    t0 = time.perf_counter()
    path = str(path)
    try:
        with Image.open(path) as img:
            text = {k: v for k, v in getattr(img, "text", {}).items() if isinstance(v, str)}
            img.load()
            check_size(img.width, img.height, name=path)
            rgb = pil_to_rgb_array(img, name=path)
        meta = metadata_from_text(path, text)
        analysis = analyze(rgb, engine, **analyze_kwargs)
        rec = record_from_array(rgb, analysis, config, path=path, meta=meta)
    except ImageInputError as exc:
        rec = ImageRecord(path=path, error=str(exc), meta=metadata_from_text(path, None))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        rec = ImageRecord(path=path, error=f"not a readable image ({exc.__class__.__name__}: {exc})")
        rec.meta = metadata_from_text(path, None)
    except Exception as exc:  # a broken file must never stop a 1,500-image run
        rec = ImageRecord(path=path, error=f"analysis failed ({exc.__class__.__name__}: {exc})")
        rec.meta = metadata_from_text(path, None)
    rec.seconds = time.perf_counter() - t0
    return rec


_w_engine: Any = None
_w_config: QualityConfig | None = None
_w_kwargs: dict[str, Any] = {}


def _worker_init(engine_kwargs: dict, config_dict: dict, analyze_kwargs: dict) -> None:
    global _w_engine, _w_config, _w_kwargs
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover
        pass
    from .faces import get_engine

    _w_engine = get_engine(**engine_kwargs)
    _w_config = QualityConfig.from_dict(config_dict)
    _w_kwargs = dict(analyze_kwargs)


def _worker_run(path: str) -> ImageRecord:
    return process_path(path, _w_engine, _w_config, _w_kwargs)


def iter_records(
    paths: Sequence[str | os.PathLike],
    *,
    config: QualityConfig | None = None,
    workers: int | None = None,
    engine_kwargs: dict[str, Any] | None = None,
    analyze_kwargs: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    window: int = 64,
) -> Iterator[ImageRecord]:
    """Yield one record per path, in order, from a process pool (``workers`` default: all cores).

    At most ``window`` files are in flight, so memory does not grow with the folder.
    """
    config = config or QualityConfig()
    engine_kwargs = dict(engine_kwargs or {"backend": "dlib"})
    analyze_kwargs = dict(analyze_kwargs or {})
    paths = [str(p) for p in paths]
    total = len(paths)
    workers = workers or min(os.cpu_count() or 1, max(1, total))
    if workers <= 1 or total <= 1:
        _worker_init(engine_kwargs, config.to_dict(), analyze_kwargs)
        for i, p in enumerate(paths):
            yield _worker_run(p)
            if progress:
                progress(i + 1, total)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        workers,
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(engine_kwargs, config.to_dict(), analyze_kwargs),
    ) as pool:
        pending: deque = deque()
        it = iter(paths)
        done = 0
        for p in it:
            pending.append(pool.submit(_worker_run, p))
            if len(pending) >= window:
                break
        while pending:
            rec = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_worker_run, nxt))
            done += 1
            if progress:
                progress(done, total)
            yield rec


# -- selection on records (shared by the CLI pipeline and the ComfyUI node) ---------------------------------------
@dataclass
class Selection:
    selected: list[int]  # record indices, best first
    duplicates: dict[int, int]  # record index -> index of the image it duplicates
    clusters: dict[int, int]  # record index -> cluster id (passing, non-duplicate images)
    ranks: dict[int, int]  # record index -> rank among passing non-duplicates by quality
    k: int
    silhouette: float | None
    drift: dict[int, float]
    identity_outliers: list[int]
    notes: list[str]


def identity_drift(records: Sequence[ImageRecord], indices: Iterable[int]) -> dict[int, float]:
    """1 - cosine to the centroid of the identity vectors of ``indices`` (an outlier = another person)."""
    idx = [i for i in indices if records[i].identity is not None]
    if len(idx) < 3:
        return {}
    dims = Counter(records[i].identity.shape[0] for i in idx)
    dim = dims.most_common(1)[0][0]
    idx = [i for i in idx if records[i].identity.shape[0] == dim]
    v = np.stack([records[i].identity for i in idx]).astype(np.float64)
    c = v.mean(axis=0)
    c /= max(np.linalg.norm(c), 1e-12)
    return {i: float(1.0 - v[j] @ c) for j, i in enumerate(idx)}


def select_records(
    records: Sequence[ImageRecord],
    *,
    target: int = 70,
    k: int | str = 8,
    strategy: str = "balanced",
    embeddings: np.ndarray | None = None,
    embedding_index: Sequence[int] | None = None,
    dedup: bool = True,
    max_hamming: int = 6,
    min_cosine: float = 0.97,
    max_drift: float | None = None,
) -> Selection:
    """Near-duplicate removal, K-Means and seed-diverse selection over the records that passed quality.

    ``embeddings`` (optional, e.g. CLIP) are rows for ``embedding_index`` (record indices); otherwise each
    record's fallback features are used.
    """
    notes: list[str] = []
    passing = [i for i, r in enumerate(records) if r.passed]
    drift = identity_drift(records, passing)
    outliers: list[int] = []
    if max_drift is not None and drift:
        outliers = [i for i in passing if drift.get(i, 0.0) > max_drift]
        passing = [i for i in passing if i not in set(outliers)]
        if outliers:
            notes.append(f"{len(outliers)} image(s) rejected as identity outliers (drift > {max_drift})")
    if embeddings is not None:
        row = {
            int(i): j
            for j, i in enumerate(embedding_index if embedding_index is not None else range(len(records)))
        }
        missing = [i for i in passing if i not in row]
        if missing:
            raise ValueError(f"embeddings missing for {len(missing)} passing image(s)")
        emb = {i: np.asarray(embeddings[row[i]], np.float32) for i in passing}
    else:
        emb = {i: records[i].features for i in passing}
    duplicates: dict[int, int] = {}
    if dedup and len(passing) > 1:
        local = near_duplicates(
            [records[i].quality.total for i in passing],
            hashes=[records[i].phash or 0 for i in passing],
            embeddings=np.stack([emb[i] for i in passing]) if embeddings is not None else None,
            max_hamming=max_hamming,
            min_cosine=min_cosine,
        )
        duplicates = {passing[a]: passing[b] for a, b in local.items()}
    unique = [i for i in passing if i not in duplicates]
    ranks = {i: r for r, i in enumerate(sorted(unique, key=lambda i: (-records[i].quality.total, i)))}
    if not unique:
        return Selection(
            [], duplicates, {}, ranks, 0, None, drift, outliers, notes + ["no image passed quality"]
        )
    cl = cluster(np.stack([emb[i] for i in unique]), k)
    notes.extend(cl.notes)
    clusters = {i: int(label) for i, label in zip(unique, cl.labels)}
    cands = [Candidate(i, records[i].quality.total, clusters[i], records[i].seed) for i in unique]
    chosen = select(cands, target, strategy)
    if len(chosen) < target:
        notes.append(
            f"target {target} but only {len(unique)} image(s) passed quality and de-duplication; selected "
            f"{len(chosen)}. Loosen the quality strategy (C), calibrate on good images, or generate more."
        )
    return Selection(chosen, duplicates, clusters, ranks, cl.k, cl.silhouette, drift, outliers, notes)


# -- the on-disk portfolio -------------------------------------------------------------------------------------------
@dataclass
class CurateResult:
    out_dir: Path
    records: list[ImageRecord]
    selection: Selection
    report: dict[str, Any]
    master: dict[str, Any]
    curated: dict[str, Any]


def _prepare_out(out: Path, overwrite: bool) -> None:
    existing = [n for n in OUTPUT_NAMES if (out / n).exists()]
    if existing and not overwrite:
        raise IdentityLockError(
            f"{out} already holds a curation run ({', '.join(existing)}); re-running into it would mix old and new "
            "results. Choose a new --out folder or pass --overwrite to replace that run."
        )
    for n in existing:
        p = out / n
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _place(src: Path, dst: Path, mode: str) -> str:
    """Link or copy one image; falls back to a copy when links are not possible (other drive, Windows)."""
    if mode == "symlink":
        try:
            os.symlink(os.path.abspath(src), dst)
            return "symlink"
        except OSError:
            pass
    if mode == "hardlink":
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:
            pass
    shutil.copy2(src, dst)
    return "copy"


def collect_files(inputs: Sequence[str | os.PathLike], exclude: Path | None = None) -> list[Path]:
    from .images import iter_image_files

    for p in inputs:
        if not Path(p).exists():
            raise IdentityLockError(f"{p}: no such file or folder")
    excl = exclude.resolve() if exclude is not None else None
    files = []
    for f in iter_image_files(inputs, recursive=True):
        if excl is not None and (excl == f.resolve().parent or excl in f.resolve().parents):
            continue
        files.append(f)
    return files


def curate(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    target: int = 70,
    k: int | str = 8,
    strategy: str = "balanced",
    config: QualityConfig | None = None,
    link_mode: str = "symlink",
    overwrite: bool = False,
    workers: int | None = None,
    engine_kwargs: dict[str, Any] | None = None,
    analyze_kwargs: dict[str, Any] | None = None,
    clip: ClipEmbedder | None = None,
    dedup: bool = True,
    max_hamming: int = 6,
    max_drift: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CurateResult:
    """Score every image, remove near-duplicates, cluster, select ``target`` and write the portfolio."""
    if link_mode not in LINK_MODES:
        raise IdentityLockError(f"link mode must be one of {', '.join(LINK_MODES)}, got {link_mode!r}")
    if int(target) < 1:
        raise IdentityLockError(f"target must be at least 1, got {target}")
    out = Path(out_dir)
    config = config or QualityConfig()
    files = collect_files(inputs, exclude=out)
    if not files:
        raise IdentityLockError(
            f"no images found in {', '.join(map(str, inputs))} (looked recursively for .png .jpg .jpeg .webp .bmp .tif .gif)"
        )
    _prepare_out(out, overwrite)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    engine_kwargs = dict(engine_kwargs or {"backend": "dlib"})
    records = list(
        iter_records(
            files,
            config=config,
            workers=workers,
            engine_kwargs=engine_kwargs,
            analyze_kwargs=analyze_kwargs,
            progress=progress,
        )
    )
    timings["analysis_s"] = time.perf_counter() - t0
    embeddings = emb_index = None
    embedding_name = FALLBACK_NAME
    if clip is not None:
        t1 = time.perf_counter()
        emb_index = [i for i, r in enumerate(records) if r.passed]
        embeddings = _clip_embed_files([records[i].path for i in emb_index], clip)
        embedding_name = clip.name
        timings["clip_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    sel = select_records(
        records,
        target=target,
        k=k,
        strategy=strategy,
        embeddings=embeddings,
        embedding_index=emb_index,
        dedup=dedup,
        max_hamming=max_hamming,
        max_drift=max_drift,
    )
    timings["select_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    settings = {
        "target": int(target),
        "k": k,
        "strategy": strategy,
        "quality": config.to_dict(),
        "embedding": embedding_name,
        "link_mode": link_mode,
        "dedup": {"enabled": dedup, "max_hamming": max_hamming},
        "max_drift": max_drift,
        "face_engine": engine_kwargs,
        "analyze": dict(analyze_kwargs or {}),
    }
    master, curated, report = build_catalogs(
        records, sel, run_id, [str(p) for p in inputs], settings, out, link_mode
    )
    timings["write_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    report["timings"] = {k2: round(v, 3) for k2, v in timings.items()}
    write_json(out / "master_image_catalog.json", master)
    write_json(out / "curated" / "curated_catalog.json", curated)
    write_json(out / "selection_report.json", report)
    (out / "selection_log.txt").write_text(selection_log(report), encoding="utf-8")
    return CurateResult(out, records, sel, report, master, curated)


def _clip_embed_files(paths: Sequence[str], clip: ClipEmbedder, batch: int = 32) -> np.ndarray:
    """CLIP embeddings of passing files, decoded in batches (second read; only for the optional CLIP path)."""
    from .images import load_image, resize_long_side

    out = []
    for i in range(0, len(paths), batch):
        imgs = [resize_long_side(load_image(p), 512)[0] for p in paths[i : i + batch]]
        out.append(clip.embed(imgs))
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def _status(i: int, rec: ImageRecord, sel: Selection, chosen: set[int]) -> str:
    if rec.error is not None:
        return "unreadable"
    if i in chosen:
        return "selected"
    if i in sel.duplicates:
        return "duplicate"
    if rec.passed and i not in sel.identity_outliers:
        return "passed"
    return "rejected"


def build_catalogs(
    records: Sequence[ImageRecord],
    sel: Selection,
    run_id: str,
    inputs: list[str],
    settings: dict[str, Any],
    out: Path | None,
    link_mode: str = "none",
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The three JSON documents (see catalog.py for their schemas); places curated images when ``out`` is set."""
    chosen = set(sel.selected)
    entries = []
    for i, r in enumerate(records):
        status = _status(i, r, sel, chosen)
        q = r.quality.to_dict() if r.quality is not None else None
        if q is not None and i in sel.identity_outliers:
            q["passed"], q["reason"] = False, R_IDENTITY
            q["reasons"] = [R_IDENTITY]
        e: dict[str, Any] = {
            "filename": r.filename,
            "path": r.path,
            "seed": r.seed,
            "seed_source": r.meta.get("seed_source"),
            "status": status,
            "cluster": sel.clusters.get(i),
            "rank": sel.ranks.get(i),
            "quality_score": None if r.quality is None else round(r.quality.total, 2),
            "training_tiers": tiers_for_rank(sel.ranks[i]) if i in sel.ranks else [],
            "identity_drift": None if i not in sel.drift else round(sel.drift[i], 4),
            "pose": r.pose,
            "quality": q,
        }
        if isinstance(r.meta.get("prompt"), str):
            e["prompt"] = r.meta["prompt"]
        if r.error is not None:
            e["error"] = r.error
        if i in sel.duplicates:
            e["duplicate_of"] = records[sel.duplicates[i]].filename
        entries.append(e)
    counts = {
        "total": len(records),
        "unreadable": sum(1 for r in records if r.error is not None),
        "rejected": sum(1 for e in entries if e["status"] == "rejected"),
        "passed": len(sel.ranks),
        "duplicates": len(sel.duplicates),
        "selected": len(sel.selected),
    }
    master = {
        "schema": "identitylock.master_image_catalog/1",
        "session_info": {
            "run_id": run_id,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "input": inputs,
            "identitylock_version": __version__,
        },
        "settings": settings,
        "counts": counts,
        "catalog": entries,
    }
    curated_entries = []
    used_names: set[str] = set()
    images_dir = None if out is None else out / "curated" / "images"
    if images_dir is not None:
        images_dir.mkdir(parents=True, exist_ok=True)
    placed = Counter()
    for i in sel.selected:
        r = records[i]
        name = r.filename
        stem, ext = os.path.splitext(name)
        n = 2
        while name.lower() in used_names:  # same name from different sub-folders
            name = f"{stem}_{n}{ext}"
            n += 1
        used_names.add(name.lower())
        if images_dir is not None and link_mode != "none":
            placed[_place(Path(r.path), images_dir / name, link_mode)] += 1
        ce = {
            "filename": name,
            "source": r.path,
            "image": f"images/{name}",
            "seed": r.seed,
            "cluster": sel.clusters[i],
            "rank": sel.ranks[i],
            "quality_score": round(r.quality.total, 2),
            "training_tiers": tiers_for_rank(sel.ranks[i]),
        }
        if isinstance(r.meta.get("prompt"), str):
            ce["prompt"] = r.meta["prompt"]
        curated_entries.append(ce)
    from .quality import TIERS

    curated = {
        "schema": "identitylock.curated_catalog/1",
        "run_id": run_id,
        "strategy": settings["strategy"],
        "target": settings["target"],
        "k": sel.k,
        "embedding": settings["embedding"],
        "link_mode": link_mode,
        "tiers": {
            f"tier_{t}": sum(1 for e in curated_entries if f"tier_{t}" in e["training_tiers"]) for t in TIERS
        },
        "catalog": curated_entries,
    }
    rejections = Counter()
    for e in entries:
        if e["status"] == "rejected" and e["quality"]:
            rejections[e["quality"]["reason"]] += 1
    cluster_rows = []
    for c in range(sel.k):
        members = [i for i, cc in sel.clusters.items() if cc == c]
        picked = [i for i in sel.selected if sel.clusters.get(i) == c]
        cluster_rows.append(
            {
                "cluster": c,
                "size": len(members),
                "selected": len(picked),
                "best_score": round(max((records[i].quality.total for i in members), default=0.0), 2),
                "seeds": len({records[i].seed for i in picked}),
            }
        )
    seeds_all = Counter(records[i].seed for i in sel.ranks if records[i].seed is not None)
    seeds_sel = Counter(records[i].seed for i in sel.selected if records[i].seed is not None)
    scores = [records[i].quality.total for i in sel.ranks]
    report = {
        "schema": "identitylock.selection_report/1",
        "run_id": run_id,
        "settings": {k2: v for k2, v in settings.items() if k2 != "quality"},
        "quality_thresholds": settings["quality"]["thresholds"],
        "counts": counts,
        "rejections": dict(rejections),
        "unreadable": [{"path": r.path, "error": r.error} for r in records if r.error is not None],
        "duplicates": [
            {"path": records[a].path, "duplicate_of": records[b].path}
            for a, b in sorted(sel.duplicates.items())
        ],
        "identity_outliers": [records[i].path for i in sel.identity_outliers],
        "clusters": cluster_rows,
        "k": sel.k,
        "silhouette": None if sel.silhouette is None else round(sel.silhouette, 4),
        "seeds": {
            "with_seed": sum(1 for r in records if r.seed is not None),
            "distinct_passing": len(seeds_all),
            "distinct_selected": len(seeds_sel),
            "max_selected_per_seed": max(seeds_sel.values(), default=0),
            "selected_without_seed": sum(1 for i in sel.selected if records[i].seed is None),
        },
        "score_distribution": {
            "passing_min": round(min(scores), 2) if scores else None,
            "passing_median": round(float(np.median(scores)), 2) if scores else None,
            "passing_max": round(max(scores), 2) if scores else None,
        },
        "placed": dict(placed),
        "warnings": list(sel.notes),
        "timings": {},
    }
    return master, curated, report


def selection_log(report: dict[str, Any]) -> str:
    """Human-readable summary of a selection report (also what the CLI and node print)."""
    c = report["counts"]
    s = report["settings"]
    lines = [
        f"IdentityLock curation run {report['run_id']}",
        f"strategy {s['strategy']}, target {s['target']}, k {report['k']} (requested {s['k']}), embedding {s['embedding']}",
        f"quality thresholds: {report['quality_thresholds']}",
        "",
        f"images found      {c['total']}",
        f"unreadable        {c['unreadable']}",
        f"rejected          {c['rejected']}  "
        + ", ".join(f"{k}: {v}" for k, v in sorted(report["rejections"].items())),
        f"passed (unique)   {c['passed']}",
        f"near-duplicates   {c['duplicates']}",
        f"selected          {c['selected']}",
        f"seeds: {report['seeds']['distinct_selected']} distinct among selected "
        f"(max {report['seeds']['max_selected_per_seed']} per seed), {report['seeds']['distinct_passing']} among passing",
        "",
        "cluster  size  selected  best  seeds",
    ]
    for row in report["clusters"]:
        lines.append(
            f"{row['cluster']:>7}  {row['size']:>4}  {row['selected']:>8}  {row['best_score']:>4.0f}  {row['seeds']:>5}"
        )
    if report["unreadable"]:
        lines += ["", "unreadable files:"] + [f"  {u['path']}: {u['error']}" for u in report["unreadable"]]
    if report["warnings"]:
        lines += ["", "notes:"] + [f"  {w}" for w in report["warnings"]]
    if report.get("timings"):
        lines += ["", "timings: " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings"].items())]
    return "\n".join(lines) + "\n"


def score_paths(
    inputs: Sequence[str | os.PathLike],
    *,
    config: QualityConfig | None = None,
    workers: int | None = None,
    engine_kwargs: dict[str, Any] | None = None,
    analyze_kwargs: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[ImageRecord], dict[str, Any]]:
    """Quality of every image (the ``identitylock quality`` command); returns records and the scores document."""
    config = config or QualityConfig()
    files = collect_files(inputs)
    if not files:
        raise IdentityLockError(f"no images found in {', '.join(map(str, inputs))}")
    records = list(
        iter_records(
            files,
            config=config,
            workers=workers,
            engine_kwargs=engine_kwargs,
            analyze_kwargs=analyze_kwargs,
            progress=progress,
        )
    )
    return records, scores_document(records, config)


def scores_document(records: Sequence[ImageRecord], config: QualityConfig) -> dict[str, Any]:
    reasons = Counter(r.quality.reason for r in records if r.quality is not None and not r.quality.passed)
    images = []
    for r in records:
        e: dict[str, Any] = {
            "filename": r.filename,
            "path": r.path,
            "seed": r.seed,
            "quality": None if r.quality is None else r.quality.to_dict(),
        }
        if r.error:
            e["error"] = r.error
        images.append(e)
    return {
        "schema": "identitylock.quality_scores/1",
        "config": config.to_dict(),
        "counts": {
            "total": len(records),
            "passed": sum(1 for r in records if r.passed),
            "unreadable": sum(1 for r in records if r.error is not None),
            "rejected": dict(reasons),
        },
        "images": images,
    }
