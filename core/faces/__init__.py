"""Face analysis: one protocol, two real backends, and the detection rescue ladder.

>>> from identitylock.core.faces import analyze_file
>>> result = analyze_file("photo.jpg")            # backend "auto": insightface if its models exist, else dlib
>>> result.primary.embedding, result.primary.pose.yaw, result.rescue

Backends: ``dlib`` (embedded default, works after pip install) and ``insightface`` (buffalo_l / antelopev2 ONNX
packs the user has). ``auto`` picks insightface when a pack is found, otherwise dlib. Engines are created once
per process (per configuration) and are safe to call from several threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IdentityLockError, ModelNotFoundError
from ..images import array_to_uint8_rgb, load_image
from .pose import Pose, pose_from_landmarks
from .types import (
    RESCUE_LADDER,
    RUNG_DIRECT,
    RUNG_PAD,
    RUNG_PAD_SLOW,
    RUNG_SLOW,
    RUNG_UPSAMPLE,
    Face,
    FaceAnalysis,
    FaceEngine,
)

__all__ = [
    "BACKENDS",
    "Face",
    "FaceAnalysis",
    "FacePool",
    "FaceEngine",
    "Pose",
    "RESCUE_LADDER",
    "RUNG_DIRECT",
    "RUNG_PAD",
    "RUNG_PAD_SLOW",
    "RUNG_SLOW",
    "RUNG_UPSAMPLE",
    "analyze",
    "analyze_file",
    "analyze_many",
    "get_engine",
    "pad_image",
    "pose_from_landmarks",
]

BACKENDS = ("auto", "insightface", "dlib")
PAD_FRACTION = 0.35  # each side, for close-ups that fill the frame

_engines: dict[tuple, FaceEngine] = {}
_engines_lock = threading.Lock()


def get_engine(
    backend: str = "auto",
    *,
    landmarks: int = 5,
    insightface_pack: str | os.PathLike | None = None,
    model_dirs: Sequence[str | os.PathLike] | None = None,
    providers: Sequence[str] | None = None,
) -> FaceEngine:
    """Return the (cached) engine for a backend.

    ``model_dirs`` are extra insightface search roots (the ComfyUI nodes pass ComfyUI's registered folders).
    ``landmarks`` (dlib only): 5 (default, permissive licence) or 68 (opt-in, non-commercial iBUG weights).
    """
    if backend not in BACKENDS:
        raise IdentityLockError(f"unknown face backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    dirs = tuple(str(d) for d in (model_dirs or ()))
    key = (backend, landmarks, str(insightface_pack or ""), dirs, tuple(providers or ()))
    with _engines_lock:
        engine = _engines.get(key)
        if engine is not None:
            return engine
        engine = _create_engine(backend, landmarks, insightface_pack, list(dirs), providers)
        _engines[key] = engine
        return engine


def _create_engine(backend, landmarks, pack, dirs, providers) -> FaceEngine:
    if backend in ("auto", "insightface"):
        from .insightface_backend import InsightFaceEngine, find_packs

        if backend == "insightface" or pack or find_packs(dirs):
            try:
                return InsightFaceEngine(
                    pack=pack, extra_dirs=dirs, providers=list(providers) if providers else None
                )
            except ModelNotFoundError:
                if backend == "insightface":
                    raise
    from .dlib_backend import DlibEngine

    return DlibEngine(landmarks=landmarks)


def clear_engine_cache() -> None:
    """Forget loaded engines (tests; after the user adds model files)."""
    with _engines_lock:
        _engines.clear()


def pad_image(image: np.ndarray, fraction: float = PAD_FRACTION) -> tuple[np.ndarray, int, int]:
    """Pad every side by ``fraction`` of the size with the image's mean colour; returns (image, dx, dy)."""
    h, w = image.shape[:2]
    dy, dx = int(round(h * fraction)), int(round(w * fraction))
    colour = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    out = np.empty((h + 2 * dy, w + 2 * dx, 3), dtype=np.uint8)
    out[:] = colour
    out[dy : dy + h, dx : dx + w] = image
    return out, dx, dy


def analyze(
    image: np.ndarray,
    engine: FaceEngine | None = None,
    *,
    backend: str = "auto",
    rescue: bool = True,
    embed: bool = True,
    max_faces: int | None = None,
) -> FaceAnalysis:
    """Detect faces (largest first), with landmarks, pose and identity vectors.

    When nothing is found, climb the rescue ladder: HOG upsampling / larger detector input, padding around the
    image (close-ups that fill the frame), then the slower detector at reduced size, alone and with padding.
    The rung that worked is recorded on the result and on each face. A miss is ``result.found == False``.
    """
    engine = engine or get_engine(backend)
    image = array_to_uint8_rgb(image, check=False)
    h, w = image.shape[:2]
    ladder = RESCUE_LADDER if rescue else (RUNG_DIRECT,)
    tried: list[str] = []
    for rung in ladder:
        tried.append(rung)
        if rung in (RUNG_PAD, RUNG_PAD_SLOW):
            work, dx, dy = pad_image(image)
            det_rung = RUNG_DIRECT if rung == RUNG_PAD else RUNG_SLOW
        else:
            work, dx, dy = image, 0, 0
            det_rung = rung
        faces = engine.detect(work, det_rung)
        if not faces:
            continue
        faces.sort(key=lambda f: f.area, reverse=True)
        if max_faces is not None:
            faces = faces[:max_faces]
        if embed:
            engine.embed(work, faces)
        mapped = []
        for f in faces:
            f.rescue = rung
            g = f.transformed(1.0, -dx, -dy) if (dx or dy) else f
            if (dx or dy) and g.landmarks is not None and g.landmark_scheme:
                g.pose = pose_from_landmarks(g.landmarks, g.landmark_scheme, (w, h)) or g.pose
            mapped.append(g)
        return FaceAnalysis(mapped, (w, h), engine.backend, engine.model, tuple(tried), rung)
    return FaceAnalysis([], (w, h), engine.backend, engine.model, tuple(tried), None)


def analyze_file(path: str | os.PathLike, engine: FaceEngine | None = None, **kwargs: Any) -> FaceAnalysis:
    """``analyze`` on an image file (any mode; see images.load_image for what is rejected)."""
    return analyze(load_image(path), engine, **kwargs)


# -- parallel analysis (dlib holds the GIL, so several cores need processes: core/workers.py) ---------------
CRASH_MESSAGE = "the face analyzer crashed on this image"


def _face_setup(engine_kwargs: dict[str, Any], analyze_kwargs: dict[str, Any]) -> tuple[FaceEngine, dict]:
    """Worker context: this pool's engine (loaded once per worker) and the analyse options."""
    return get_engine(**engine_kwargs), dict(analyze_kwargs)


def _face_task(context: tuple[FaceEngine, dict], item: Any) -> tuple[FaceAnalysis | None, str | None]:
    engine, analyze_kwargs = context
    try:
        image = load_image(item) if isinstance(item, (str, Path)) else item
        return analyze(image, engine, **analyze_kwargs), None
    except IdentityLockError as exc:
        return None, str(exc)


def _face_crashed(item: Any, reason: str) -> tuple[None, str]:
    return None, f"{CRASH_MESSAGE} ({reason})"


class FacePool:
    """Worker processes, each holding its own engine, for analysing many images on every core.

    Creating the pool costs about a second per worker (imports + model load), paid once: keep one pool for a
    whole job. Built on :class:`~identitylock.core.workers.WorkerPool` (``spawn``, safe inside ComfyUI): an image
    that kills its worker is reported as ``(None, "the face analyzer crashed on this image ...")`` and every
    other result is kept.
    """

    def __init__(
        self,
        workers: int | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        warm: bool = True,
        **analyze_kwargs: Any,
    ):
        from ..workers import WorkerPool

        self._pool = WorkerPool(
            _face_task,
            _face_setup,
            (dict(engine_kwargs or {}), analyze_kwargs),
            workers=max(1, workers or (os.cpu_count() or 1)),
            crashed=_face_crashed,
        )
        self.workers = self._pool.workers
        if warm:  # start every worker and load its engine now, not inside the first timed batch
            self._pool.warm()

    def map(
        self,
        items: Iterable[str | os.PathLike | np.ndarray],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[tuple[FaceAnalysis | None, str | None]]:
        items = [Path(i) if isinstance(i, (str, os.PathLike)) else i for i in items]
        return self._pool.map(items, progress)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> FacePool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def analyze_many(
    items: Iterable[str | os.PathLike | np.ndarray],
    *,
    workers: int | None = None,
    engine_kwargs: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    **analyze_kwargs: Any,
) -> list[tuple[FaceAnalysis | None, str | None]]:
    """Analyse many images (paths or arrays), in order, using ``workers`` processes (default: all cores).

    Returns ``(analysis, None)`` or ``(None, error message)`` per item: one unreadable file, or one that
    crashes the analyzer, never stops a batch. With ``workers=1`` everything runs in this process (what
    ComfyUI nodes use by default).
    """
    from ..workers import default_workers

    items = list(items)
    with FacePool(default_workers(len(items), workers), engine_kwargs, warm=False, **analyze_kwargs) as pool:
        return pool.map(items, progress)
