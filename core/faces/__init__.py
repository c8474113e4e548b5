"""Face analysis: one protocol, two real backends, and the detection rescue ladder.

>>> from identitylock.core.faces import analyze_file
>>> result = analyze_file("photo.jpg")            # backend "auto": an ArcFace pack if one exists, else dlib
>>> result.primary.embedding, result.primary.pose.yaw, result.rescue

Backends: ``dlib`` (embedded default, works after pip install) and ``insightface`` (alias ``arcface-onnx``:
buffalo_l / antelopev2 / AuraFace ONNX packs the user has, run on onnxruntime alone). ``auto`` picks an ArcFace
pack when one is found, otherwise dlib. Engines are created once
per process (per configuration) and are safe to call from several threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IdentityLockError, ImageInputError, ModelNotFoundError
from ..images import MAX_SIDE, array_to_uint8_rgb, load_image
from .pose import Pose, pose_from_landmarks
from .types import (
    DETECT_MAX_ASPECT,
    DETECT_MIN_SIDE,
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
    "detection_canvas",
    "get_engine",
    "inside_fraction",
    "pad_image",
    "plausible_face",
    "rung_inputs",
    "pose_from_landmarks",
    "select_face",
]

# "insightface" and its explicit name "arcface-onnx": ArcFace packs on onnxruntime alone (no insightface
# package); "insightface-package": the same packs through the insightface package (tests, benchmarks).
BACKENDS = ("auto", "insightface", "arcface-onnx", "dlib", "insightface-package")
PAD_FRACTION = 0.35  # each side, for close-ups that fill the frame
# A detection counts as a face only with this score and this share of its box inside the image (measured on
# the test photos, generated noise and textures: docs/identity.md, benchmarks/face_score_floor.py). The score
# floor is dlib's (HOG/CNN); insightface's SCRFD applies its own per-rung threshold (0.5, 0.3 at slow rungs).
MIN_DET_SCORE = 0.5
MIN_INSIDE_FRACTION = 0.3
ANCHOR_KEYPOINTS = ("eye_fl", "eye_fr", "nose")  # must lie inside the image (a chin or mouth may be cut off)

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
    if backend in ("auto", "insightface", "arcface-onnx", "insightface-package"):
        from .packs import find_packs

        explicit = backend != "auto"
        if explicit or pack or find_packs(dirs):
            if backend == "insightface-package":
                from .insightface_backend import InsightFaceEngine as Engine
            else:
                from .arcface_onnx import ArcFaceOnnxEngine as Engine
            try:
                return Engine(pack=pack, extra_dirs=dirs, providers=list(providers) if providers else None)
            except ModelNotFoundError:
                if explicit:
                    raise
    from .dlib_backend import DlibEngine

    return DlibEngine(landmarks=landmarks)


def clear_engine_cache() -> None:
    """Forget loaded engines (tests; after the user adds model files)."""
    with _engines_lock:
        _engines.clear()


def pad_image(image: np.ndarray, fraction: float = PAD_FRACTION) -> tuple[np.ndarray, int, int]:
    """Pad every side by ``fraction`` of the size with the image's mean color; returns (image, dx, dy)."""
    h, w = image.shape[:2]
    return _pad_to(image, w + 2 * int(round(w * fraction)), h + 2 * int(round(h * fraction)))


def _pad_to(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, int, int]:
    """Centre ``image`` on a ``width`` x ``height`` canvas of its mean color; returns (canvas, dx, dy)."""
    h, w = image.shape[:2]
    dx, dy = (width - w) // 2, (height - h) // 2
    color = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[:] = color
    out[dy : dy + h, dx : dx + w] = image
    return out, dx, dy


def detection_canvas(image: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The image as the detectors may see it: letterboxed so each side is >= ``DETECT_MIN_SIDE`` and the
    aspect ratio is <= ``DETECT_MAX_ASPECT``; returns (canvas, dx, dy), the offset of the image on it.

    Why: dlib's CNN detector corrupts memory (double free, segfault) on very thin inputs — a legal 64x4096
    photo became 8x512 at the slow rung. Ordinary photos pass through unchanged (same pixels, same results).
    """
    h, w = image.shape[:2]
    if max(h, w) > MAX_SIDE:
        raise ImageInputError(
            f"image is {w}x{h} px; the limit is {MAX_SIDE} px on the longest side: downscale it first"
        )
    width = max(w, DETECT_MIN_SIDE, int(np.ceil(h / DETECT_MAX_ASPECT)))
    height = max(h, DETECT_MIN_SIDE, int(np.ceil(width / DETECT_MAX_ASPECT)))
    if (width, height) == (w, h):
        return image, 0, 0
    return _pad_to(image, width, height)


def inside_fraction(bbox: Sequence[float], width: int, height: int) -> float:
    """Share of a box's area that lies inside a ``width`` x ``height`` image (0 for an empty box)."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    area = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    if area <= 0:
        return 0.0
    inter = max(0.0, min(x1, width) - max(x0, 0.0)) * max(0.0, min(y1, height) - max(y0, 0.0))
    return inter / area


def plausible_face(face: Face, width: int, height: int) -> bool:
    """A detection we accept as a face (coordinates of the ``width`` x ``height`` image, after undoing padding):
    a finite score (>= ``MIN_DET_SCORE`` for dlib's detectors), its eyes and nose inside the image, and at least
    ``MIN_INSIDE_FRACTION`` of its box inside (a close-up's box may run past the edges; a box in the padding is
    not a face of the image). Why: a pure-noise render was "found" at the pad rung (docs/identity.md)."""
    score = float(face.det_score)
    if not np.isfinite(score) or (face.detector.startswith("dlib") and score < MIN_DET_SCORE):
        return False
    anchors = [face.keypoints[k] for k in ANCHOR_KEYPOINTS if k in face.keypoints]
    if any(not (0 <= x < width and 0 <= y < height) for x, y in anchors):
        return False
    return inside_fraction(face.bbox, width, height) >= MIN_INSIDE_FRACTION


def rung_inputs(
    image: np.ndarray, ladder: Sequence[str] = RESCUE_LADDER
) -> Iterator[tuple[str, np.ndarray, str, int, int]]:
    """For each rung: ``(rung, detector input, detector rung, dx, dy)``, where (dx, dy) is the offset of
    ``image`` inside the detector input (letterbox + padding), built lazily (padding only if that rung runs)."""
    canvas, ox, oy = detection_canvas(image)
    for rung in ladder:
        if rung in (RUNG_PAD, RUNG_PAD_SLOW):
            work, dx, dy = pad_image(canvas)
            yield rung, work, RUNG_DIRECT if rung == RUNG_PAD else RUNG_SLOW, dx + ox, dy + oy
        else:
            yield rung, canvas, rung, ox, oy


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
    Detections below ``MIN_DET_SCORE`` or mostly outside the image are dropped (noise is not a face).
    ``max_faces`` limits the faces returned (and embedded); ``result.face_count`` still counts all of them.
    """
    engine = engine or get_engine(backend)
    image = array_to_uint8_rgb(image, check=False)
    h, w = image.shape[:2]
    tried: list[str] = []
    for rung, work, det_rung, dx, dy in rung_inputs(image, RESCUE_LADDER if rescue else (RUNG_DIRECT,)):
        tried.append(rung)
        faces = [
            f for f in engine.detect(work, det_rung) if plausible_face(f.transformed(1.0, -dx, -dy), w, h)
        ]
        if not faces:
            continue
        faces.sort(key=lambda f: f.area, reverse=True)
        count = len(faces)
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
        return FaceAnalysis(mapped, (w, h), engine.backend, engine.model, tuple(tried), rung, count)
    return FaceAnalysis([], (w, h), engine.backend, engine.model, tuple(tried), None, 0)


def select_face(analysis: FaceAnalysis, largest: bool = False) -> tuple[Face | None, str | None]:
    """The one face to measure in an analysis, or ``(None, reason)``.

    Exactly one face is required unless ``largest`` (an explicit user choice): a photo of two people must not
    be locked or embedded as if it showed one. Used by embed, drift and the seed search.
    """
    if not analysis.found:
        return None, f"no face found (tried {', '.join(analysis.tried)})"
    if analysis.face_count > 1 and not largest:
        return None, f"{analysis.face_count} faces found, exactly one is needed"
    return analysis.primary, None


def analyze_file(path: str | os.PathLike, engine: FaceEngine | None = None, **kwargs: Any) -> FaceAnalysis:
    """``analyze`` on an image file (any mode; see images.load_image for what is rejected)."""
    return analyze(load_image(path), engine, **kwargs)


# -- parallel analysis (dlib holds the GIL, so several cores need processes: core/workers.py) ---------------
CRASH_MESSAGE = "the face analyzer crashed on this image"


def _face_setup(engine_kwargs: dict[str, Any], analyze_kwargs: dict[str, Any]) -> tuple[FaceEngine, dict]:
    """Worker context: this pool's engine (loaded once per worker) and the analyze options."""
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
    """Worker processes, each holding its own engine, for analyzing many images on every core.

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
    """Analyze many images (paths or arrays), in order, using ``workers`` processes (default: all cores).

    Returns ``(analysis, None)`` or ``(None, error message)`` per item: one unreadable file, or one that
    crashes the analyzer, never stops a batch. With ``workers=1`` everything runs in this process (what
    ComfyUI nodes use by default).
    """
    from ..workers import default_workers

    items = list(items)
    with FacePool(default_workers(len(items), workers), engine_kwargs, warm=False, **analyze_kwargs) as pool:
        return pool.map(items, progress)
