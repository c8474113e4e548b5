"""The ``curate`` pipeline: folder of generated images -> scored, de-duplicated, clustered portfolio on disk.

The work is split by concern: ``records`` (read, analyze and measure each image on the worker pool),
``selection`` (duplicates, clusters, picks), ``portfolio_catalogs`` (the three JSON documents and the curated
images). This module checks the inputs and the output folder *before* the work, runs the stages, and replaces a
previous run only once the new one is complete: the new portfolio is built in a staging folder inside the
output folder (same file system, so the final renames are atomic), then the old files are renamed away, the new
ones renamed in, and the old ones deleted. An interrupted run leaves the previous portfolio intact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import write_json
from .cluster import FALLBACK_NAME, ClipEmbedder
from .errors import IdentityLockError
from .fileio import check_output_dir, write_text_atomic
from .portfolio_catalogs import R_IDENTITY, build_catalogs, selection_log
from .quality import QualityConfig
from .records import (
    ImageRecord,
    analysis_options,
    collect_files,
    collect_inputs,
    iter_records,
    process_path,
    record_from_array,
    score_paths,
    scores_document,
)
from .selection import Selection, identity_drift, select_records

__all__ = [
    "LINK_MODES",
    "OUTPUT_NAMES",
    "R_IDENTITY",
    "CurateResult",
    "ImageRecord",
    "Selection",
    "build_catalogs",
    "collect_files",
    "curate",
    "identity_drift",
    "iter_records",
    "process_path",
    "record_from_array",
    "score_paths",
    "scores_document",
    "select_records",
    "selection_log",
]

LINK_MODES = ("symlink", "hardlink", "copy", "none")
OUTPUT_NAMES = ("master_image_catalog.json", "selection_report.json", "selection_log.txt", "curated")
STAGING_PREFIX = ".identitylock-staging-"


@dataclass
class CurateResult:
    out_dir: Path
    records: list[ImageRecord]
    selection: Selection
    report: dict[str, Any]
    master: dict[str, Any]
    curated: dict[str, Any]


def check_portfolio_out(out: Path, overwrite: bool) -> None:
    """Before any work: the output folder is writable and holds no earlier run (unless ``overwrite``)."""
    check_output_dir(out, what="output folder")
    existing = [n for n in OUTPUT_NAMES if os.path.lexists(out / n)]
    if existing and not overwrite:
        raise IdentityLockError(
            f"{out} already holds a curation run ({', '.join(existing)}); re-running into it would mix old and new "
            "results. Choose a new --out folder or pass --overwrite to replace that run."
        )


def _swap_in(staging: Path, out: Path) -> None:
    """Replace the previous run's files in ``out`` by the complete new ones in ``staging`` (renames only)."""
    old = out / f".identitylock-old-{uuid.uuid4().hex[:8]}"
    moved_away: list[str] = []
    moved_in: list[str] = []
    try:
        for name in OUTPUT_NAMES:
            if os.path.lexists(out / name):
                old.mkdir(exist_ok=True)
                os.rename(out / name, old / name)
                moved_away.append(name)
        for name in OUTPUT_NAMES:
            if os.path.lexists(staging / name):
                os.rename(staging / name, out / name)
                moved_in.append(name)
    except BaseException:  # put the previous run back as it was
        for name in moved_in:
            with contextlib.suppress(OSError):
                os.rename(out / name, staging / name)
        for name in moved_away:
            with contextlib.suppress(OSError):
                os.rename(old / name, out / name)
        raise
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


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
    files, bad_inputs = collect_inputs(inputs, exclude=out)
    if not files:
        raise IdentityLockError(
            f"no images found in {', '.join(map(str, inputs))} (looked recursively for .png .jpg .jpeg .webp .bmp .tif .gif)"
        )
    check_portfolio_out(out, overwrite)
    staging = Path(out) / f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        return _run(
            files,
            bad_inputs,
            inputs,
            out,
            staging,
            target=target,
            k=k,
            strategy=strategy,
            config=config,
            link_mode=link_mode,
            workers=workers,
            engine_kwargs=engine_kwargs,
            analyze_kwargs=analyze_kwargs,
            clip=clip,
            dedup=dedup,
            max_hamming=max_hamming,
            max_drift=max_drift,
            progress=progress,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run(
    files: list[Path],
    bad_inputs: list[ImageRecord],
    inputs: Sequence[str | os.PathLike],
    out: Path,
    staging: Path,
    *,
    target: int,
    k: int | str,
    strategy: str,
    config: QualityConfig,
    link_mode: str,
    workers: int | None,
    engine_kwargs: dict[str, Any] | None,
    analyze_kwargs: dict[str, Any] | None,
    clip: ClipEmbedder | None,
    dedup: bool,
    max_hamming: int,
    max_drift: float | None,
    progress: Callable[[int, int], None] | None,
) -> CurateResult:
    """The stages of :func:`curate`, writing into ``staging``; the complete result is swapped into ``out``."""
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    engine_kwargs = dict(engine_kwargs or {"backend": "dlib"})
    options = analysis_options(config, workers, engine_kwargs, analyze_kwargs, progress)
    records = bad_inputs + list(iter_records(files, **options))
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
        records, sel, run_id, [str(p) for p in inputs], settings, staging, link_mode
    )
    timings["write_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    report["timings"] = {k2: round(v, 3) for k2, v in timings.items()}
    write_json(staging / "master_image_catalog.json", master)
    write_json(staging / "curated" / "curated_catalog.json", curated)
    write_json(staging / "selection_report.json", report)
    write_text_atomic(staging / "selection_log.txt", selection_log(report))
    _swap_in(staging, out)
    return CurateResult(out, records, sel, report, master, curated)


def _clip_embed_files(paths: Sequence[str], clip: ClipEmbedder, batch: int = 32) -> np.ndarray:
    """CLIP embeddings of passing files, decoded in batches (second read; only for the optional CLIP path)."""
    from .images import load_image, resize_long_side

    out = []
    for i in range(0, len(paths), batch):
        imgs = [resize_long_side(load_image(p), 512)[0] for p in paths[i : i + batch]]
        out.append(clip.embed(imgs))
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)
