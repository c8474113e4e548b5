"""The embedded default backend: dlib with the weights shipped in the PyPI package face-recognition-models.

Works straight after ``pip install`` with no download. Defaults follow the licences of those weights:
- detection: dlib's HOG detector (fast; the CNN/MMOD detector is used only as a rescue, at reduced size);
- alignment + identity vector: the 5-point landmark model and dlib's ResNet (128-D), both permissive;
- the 68-point model is trained on iBUG 300-W, which is **non-commercial**: it is used only when the user opts
  in with ``landmarks=68`` (better pose, needed for expression cues).
"""

from __future__ import annotations

import importlib.util
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageInputError, ModelNotFoundError
from ..images import resize_long_side
from .pose import pose_from_landmarks
from .types import (
    DETECT_MAX_ASPECT,
    DETECT_MIN_SIDE,
    RUNG_DIRECT,
    RUNG_PAD_SLOW,
    RUNG_SLOW,
    RUNG_UPSAMPLE,
    Face,
    unit_vector,
)

MODEL_FILES = {
    "sp5": "shape_predictor_5_face_landmarks.dat",
    "sp68": "shape_predictor_68_face_landmarks.dat",
    "resnet": "dlib_face_recognition_resnet_model_v1.dat",
    "mmod": "mmod_human_face_detector.dat",
}

# The CNN detector is slow on CPU (3.7 s at 768 px, 0.84 s at 384 px): as a rescue it runs at this size.
SLOW_DETECTOR_SIDE = 512
# HOG cost grows with pixels; detect on at most this long side and map boxes back.
MAX_DETECT_SIDE = 1600


def models_dir() -> Path:
    """Folder of the face-recognition-models weights, found without importing the package.

    ``import face_recognition_models`` fails on modern setuptools (it needs pkg_resources), so we locate its
    files through the import system instead.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the embedded face models are missing: pip install face-recognition-models "
            "(it ships dlib's weights; no download at run time)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models"
    missing = [f for f in MODEL_FILES.values() if not (path / f).exists()]
    if missing:
        raise ModelNotFoundError(
            f"face-recognition-models at {path} lacks {', '.join(missing)}; reinstall it"
        )
    return path


def check_detector_input(image: np.ndarray, min_side: int = DETECT_MIN_SIDE) -> None:
    """Refuse what dlib must never see: dlib's CNN detector corrupts memory (double free, segfault) on very
    thin inputs, taking the whole process and every other image of a batch with it. ``faces.analyze``
    letterboxes images first, so this only fires for a caller that skips it."""
    h, w = image.shape[:2]
    if min(h, w) < min_side or max(h, w) > DETECT_MAX_ASPECT * 1.01 * min(h, w) + 1:
        raise ImageInputError(
            f"a {w}x{h} px image cannot go to dlib's detector (each side >= {min_side} px and aspect ratio "
            f"<= {DETECT_MAX_ASPECT:g} needed): use faces.analyze, which letterboxes it"
        )


def hog_confidence(score: float) -> float:
    """Map HOG's SVM margin (0 at the default threshold, ~3 for a clear frontal face) to 0..1."""
    return float(1.0 - math.exp(-max(0.0, score + 0.5)))


class DlibEngine:
    """dlib HOG/CNN detection, 5-point (or opt-in 68-point) landmarks, 128-D ResNet identity vectors."""

    backend = "dlib"
    dim = 128

    def __init__(self, landmarks: int = 5):
        if landmarks not in (5, 68):
            raise ValueError("landmarks must be 5 or 68")
        import dlib

        self._dlib = dlib
        self.landmarks = landmarks
        self.model = f"dlib_resnet_v1/sp{landmarks}"
        self._dir = models_dir()
        self._hog = dlib.get_frontal_face_detector()
        self._sp5 = dlib.shape_predictor(str(self._dir / MODEL_FILES["sp5"]))
        self._sp68 = dlib.shape_predictor(str(self._dir / MODEL_FILES["sp68"])) if landmarks == 68 else None
        self._rec = dlib.face_recognition_model_v1(str(self._dir / MODEL_FILES["resnet"]))
        self._cnn = None
        # dlib objects are not documented as thread-safe; ComfyUI may call from several threads.
        self._lock = threading.Lock()

    # -- detection -----------------------------------------------------------------------------------
    def _cnn_detector(self):
        if self._cnn is None:
            self._cnn = self._dlib.cnn_face_detection_model_v1(str(self._dir / MODEL_FILES["mmod"]))
        return self._cnn

    def _boxes(self, image: np.ndarray, rung: str) -> list[tuple[np.ndarray, float, str]]:
        if rung in (RUNG_SLOW, RUNG_PAD_SLOW):
            small, scale = resize_long_side(image, SLOW_DETECTOR_SIDE)
            check_detector_input(small, min_side=SLOW_DETECTOR_SIDE // int(2 * DETECT_MAX_ASPECT))
            dets = self._cnn_detector()(small, 1 if max(small.shape[:2]) < 400 else 0)
            return [
                (
                    np.array([d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()], float) / scale,
                    float(min(1.0, max(0.0, d.confidence))),
                    "dlib-cnn",
                )
                for d in dets
            ]
        work, scale = resize_long_side(image, MAX_DETECT_SIDE)
        check_detector_input(work)
        upsample = 1 if rung == RUNG_UPSAMPLE else 0
        rects, scores, _ = self._hog.run(work, upsample, 0.0)
        return [
            (
                np.array([r.left(), r.top(), r.right(), r.bottom()], float) / scale,
                hog_confidence(s),
                "dlib-hog",
            )
            for r, s in zip(rects, scores)
        ]

    def detect(self, image: np.ndarray, rung: str = RUNG_DIRECT) -> list[Face]:
        dlib = self._dlib
        h, w = image.shape[:2]
        with self._lock:
            boxes = self._boxes(image, rung)
            faces = []
            for bbox, score, detector in boxes:
                rect = dlib.rectangle(*[int(round(v)) for v in bbox])
                shape5 = self._sp5(image, rect)
                pts5 = np.array([(p.x, p.y) for p in shape5.parts()], dtype=np.float64)
                keypoints = {
                    "eye_fl": tuple((pts5[2] + pts5[3]) / 2),
                    "eye_fr": tuple((pts5[0] + pts5[1]) / 2),
                    "nose": tuple(pts5[4]),
                }
                landmarks, scheme = pts5, "dlib5"
                if self._sp68 is not None:
                    shape68 = self._sp68(image, rect)
                    landmarks = np.array([(p.x, p.y) for p in shape68.parts()], dtype=np.float64)
                    scheme = "dlib68"
                    keypoints["mouth_fl"] = tuple(landmarks[48])
                    keypoints["mouth_fr"] = tuple(landmarks[54])
                pose = pose_from_landmarks(landmarks, scheme, (w, h))
                face = Face(
                    bbox=bbox,
                    det_score=score,
                    detector=detector,
                    keypoints={k: (float(v[0]), float(v[1])) for k, v in keypoints.items()},
                    landmarks=landmarks,
                    landmark_scheme=scheme,
                    pose=pose,
                )
                face._shape5 = pts5  # type: ignore[attr-defined]  # alignment points for embed()
                faces.append(face)
        return faces

    # -- identity ------------------------------------------------------------------------------------
    def embed(self, image: np.ndarray, faces: list[Face]) -> None:
        dlib = self._dlib
        if not faces:
            return
        shapes = dlib.full_object_detections()
        for f in faces:
            pts5 = getattr(f, "_shape5", None)
            if pts5 is None:
                raise ValueError("DlibEngine.embed needs faces from DlibEngine.detect on the same image")
            rect = dlib.rectangle(*[int(round(v)) for v in f.bbox])
            shapes.append(dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in pts5]))
        with self._lock:
            vectors = self._rec.compute_face_descriptor(image, shapes)
        for f, v in zip(faces, vectors):
            f.embedding = unit_vector(v)

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "dim": self.dim,
            "dlib_version": self._dlib.__version__,
            "models_dir": str(self._dir),
            "detector": f"HOG (CNN/MMOD as rescue at {SLOW_DETECTOR_SIDE} px)",
            "landmarks": f"{self.landmarks}-point"
            + (" (iBUG 300-W: non-commercial)" if self.landmarks == 68 else ""),
            "provider": "CPU (dlib)",
        }
