"""One record per image: read and decode once, analyze the face, measure quality, hash and describe it.

Cost model: face analysis (~0.2 s per 768 px image with dlib, seconds for a miss that climbs the rescue ladder)
is the floor. Everything else per image (metadata, sharpness, contrast, fallback embedding, perceptual hash,
~10 ms) runs in the *same* worker process on the *same* decoded image, so each file is read and decoded once.
Workers return small records (numbers, a 326-D feature vector, a 128/512-D identity vector), never pixels: the
main process holds no decoded image, whatever the folder size. Work goes through the one pool of
``core/workers.py`` with a bounded window, so memory stays flat, both cores stay busy even when one image is
slow, and an image that crashes the face analyzer is reported as unreadable instead of losing the run.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import metadata_from_text
from .cluster import fallback_features, phash
from .errors import IdentityLockError, ImageInputError
from .quality import QualityConfig, QualityResult, assess

_log = logging.getLogger("IdentityLock")

CRASH_MESSAGE = "the face analyzer crashed on this image"


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


def failed_record(path: str | os.PathLike, error: str) -> ImageRecord:
    """A record for an input that could not be used (unreadable file or folder, analyzer crash)."""
    return ImageRecord(path=str(path), error=error, meta=metadata_from_text(path, None))


def process_path(
    path: str | os.PathLike, engine: Any, config: QualityConfig, analyze_kwargs: dict
) -> ImageRecord:
    """Read (once), analyze faces and measure one file. Never raises for a bad file: the record says why."""
    from PIL import Image, UnidentifiedImageError

    from .faces import analyze
    from .images import check_size, pil_to_rgb_array

    t0 = time.perf_counter()
    path = str(path)
    try:
        with Image.open(path) as img:
            check_size(img.width, img.height, name=path)  # from the header, before decoding any pixel
            text = {k: v for k, v in getattr(img, "text", {}).items() if isinstance(v, str)}
            img.load()
            rgb = pil_to_rgb_array(img, name=path)
        meta = metadata_from_text(path, text)
        analysis = analyze(rgb, engine, **analyze_kwargs)
        rec = record_from_array(rgb, analysis, config, path=path, meta=meta)
    except ImageInputError as exc:
        rec = failed_record(path, str(exc))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        rec = failed_record(path, f"not a readable image ({exc.__class__.__name__}: {exc})")
    except Exception as exc:  # a broken file must never stop a 1,500-image run
        rec = failed_record(path, f"analysis failed ({exc.__class__.__name__}: {exc})")
    rec.seconds = time.perf_counter() - t0
    return rec


# -- the worker side (see core/workers.py for why a context, not module globals) --------------------------------
def _records_setup(engine_kwargs: dict, config_dict: dict, analyze_kwargs: dict) -> tuple:
    from .faces import get_engine

    return get_engine(**engine_kwargs), QualityConfig.from_dict(config_dict), dict(analyze_kwargs)


def _records_task(context: tuple, path: str) -> ImageRecord:
    engine, config, analyze_kwargs = context
    return process_path(path, engine, config, analyze_kwargs)


def _records_crashed(path: str, reason: str) -> ImageRecord:
    _log.warning("IdentityLock: %s: %s (%s); the other images go on", path, CRASH_MESSAGE, reason)
    return failed_record(path, f"{CRASH_MESSAGE} ({reason})")


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
    """Yield one record per path, in order, from the worker pool (``workers`` default: all cores).

    At most ``window`` files are in flight, so memory does not grow with the folder.
    """
    from .workers import WorkerPool, default_workers

    config = config or QualityConfig()
    setup_args = (dict(engine_kwargs or {"backend": "dlib"}), config.to_dict(), dict(analyze_kwargs or {}))
    paths = [str(p) for p in paths]
    with WorkerPool(
        _records_task,
        _records_setup,
        setup_args,
        workers=default_workers(len(paths), workers),
        crashed=_records_crashed,
        window=window,
    ) as pool:
        yield from pool.imap(paths, progress)


# -- inputs ---------------------------------------------------------------------------------------------------
def collect_inputs(
    inputs: Sequence[str | os.PathLike], exclude: Path | None = None
) -> tuple[list[Path], list[ImageRecord]]:
    """Image files under ``inputs`` (recursive, sorted) and a failed record per folder that cannot be read.

    A folder without read permission used to vanish silently; now it is reported (a warning, and a bad input
    that makes the command exit 2) and the walk goes on.
    """
    from .images import iter_image_files

    for p in inputs:
        if not Path(p).exists():
            raise IdentityLockError(f"{p}: no such file or folder")
    excl = exclude.resolve() if exclude is not None else None
    files: list[Path] = []
    bad: list[ImageRecord] = []

    def excluded(f: str | Path) -> bool:
        r = Path(f).resolve()
        return excl is not None and (r == excl or excl in r.parents)

    def add(f: Path) -> None:
        """Regular files go to the work; a broken link or a FIFO/socket/device is reported, never opened."""
        if excluded(f.parent) or excluded(f):
            return
        try:
            regular = stat.S_ISREG(f.stat().st_mode)
        except OSError as exc:
            bad.append(failed_record(f, f"not a readable image ({exc.strerror or exc}: a broken link?)"))
            return
        if regular:
            files.append(f)
        else:
            bad.append(failed_record(f, "not a readable image (not a regular file)"))

    # One folder walk for the whole pack (core/images.iter_image_files): it reports unreadable folders and
    # non-regular files instead of skipping them in silence; here each becomes a failed record.
    problems: list[str] = []
    for f in iter_image_files(inputs, problems=problems):
        add(f)
    for problem in problems:
        where = getattr(problem, "path", str(problem))
        if excluded(where):
            continue
        _log.warning("IdentityLock: %s", problem)
        bad.append(failed_record(where, getattr(problem, "reason", str(problem))))
    return files, bad


def collect_files(inputs: Sequence[str | os.PathLike], exclude: Path | None = None) -> list[Path]:
    """Image files under ``inputs`` (recursive, sorted); see :func:`collect_inputs` for unreadable folders."""
    return collect_inputs(inputs, exclude)[0]


# -- the ``quality`` command's document -----------------------------------------------------------------------
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
    files, bad = collect_inputs(inputs)
    if not files:
        raise IdentityLockError(f"no images found in {', '.join(map(str, inputs))}")
    records = bad + list(
        iter_records(files, **analysis_options(config, workers, engine_kwargs, analyze_kwargs, progress))
    )
    return records, scores_document(records, config)


def analysis_options(config, workers, engine_kwargs, analyze_kwargs, progress) -> dict[str, Any]:
    """The keyword arguments of :func:`iter_records`, shared by ``quality`` and ``curate``."""
    return {
        "config": config,
        "workers": workers,
        "engine_kwargs": engine_kwargs,
        "analyze_kwargs": analyze_kwargs,
        "progress": progress,
    }


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
