"""The face-engine protocol: what every backend returns, whatever model made it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .pose import Pose


def unit_vector(values: Any) -> np.ndarray:
    """An identity vector as float32 of length 1 (both backends normalise the same way: cosine = dot product)."""
    vec = np.asarray(values, dtype=np.float32).ravel()
    return vec / max(float(np.linalg.norm(vec)), 1e-12)


# Rungs of the detection rescue ladder, in the order they are tried (see faces.analyze).
RUNG_DIRECT = "direct"
RUNG_UPSAMPLE = "upsample"
RUNG_PAD = "pad"
RUNG_SLOW = "slow-detector"
RUNG_PAD_SLOW = "pad+slow-detector"
RESCUE_LADDER = (RUNG_DIRECT, RUNG_UPSAMPLE, RUNG_PAD, RUNG_SLOW, RUNG_PAD_SLOW)

# What a detector may be given (faces.detection_canvas letterboxes anything thinner or smaller first).
DETECT_MIN_SIDE = 80  # dlib's HOG window; dlib's CNN corrupted memory on sides <= 8 px
DETECT_MAX_ASPECT = 4.0  # keeps the slow rung (long side 512 px) at >= 128 px on the short side


@dataclass
class Face:
    """One detected face, in the pixel coordinates of the image that was analyzed.

    ``keypoints`` uses frame-based names (``eye_fl`` = the eye on the frame's left, i.e. the subject's right
    eye): ``eye_fl``, ``eye_fr``, ``nose`` and, when the landmark model has them, ``mouth_fl``, ``mouth_fr``.
    ``landmarks`` is the landmark model's raw array (``landmark_scheme`` says which: dlib5, dlib68, kps5...).
    """

    bbox: np.ndarray  # x0, y0, x1, y1 (float)
    det_score: float
    detector: str
    keypoints: dict[str, tuple[float, float]] = field(default_factory=dict)
    landmarks: np.ndarray | None = None
    landmark_scheme: str | None = None
    pose: Pose | None = None
    embedding: np.ndarray | None = None  # L2-normalised float32
    age: float | None = None
    sex: str | None = None
    rescue: str = RUNG_DIRECT

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        return float(self.bbox[3] - self.bbox[1])

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return float((self.bbox[0] + self.bbox[2]) / 2), float((self.bbox[1] + self.bbox[3]) / 2)

    def transformed(self, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> Face:
        """Map coordinates: new = old * scale + (dx, dy). Used to undo padding and resizing."""

        def pt(p):
            return (float(p[0] * scale + dx), float(p[1] * scale + dy))

        bbox = np.asarray(self.bbox, dtype=np.float64) * scale + np.array([dx, dy, dx, dy])
        lms = None if self.landmarks is None else self.landmarks * scale + np.array([dx, dy])
        return Face(
            bbox=bbox,
            det_score=self.det_score,
            detector=self.detector,
            keypoints={k: pt(v) for k, v in self.keypoints.items()},
            landmarks=lms,
            landmark_scheme=self.landmark_scheme,
            pose=self.pose,
            embedding=self.embedding,
            age=self.age,
            sex=self.sex,
            rescue=self.rescue,
        )

    def to_dict(self, with_embedding: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bbox": [round(float(v), 1) for v in self.bbox],
            "det_score": round(float(self.det_score), 4),
            "detector": self.detector,
            "rescue": self.rescue,
            "keypoints": {k: [round(v[0], 1), round(v[1], 1)] for k, v in self.keypoints.items()},
            "pose": self.pose.to_dict() if self.pose else None,
            "age": self.age,
            "sex": self.sex,
        }
        if with_embedding and self.embedding is not None:
            out["embedding"] = [float(v) for v in self.embedding]
        return out


@dataclass
class FaceAnalysis:
    """All faces found in one image (largest first), and how hard we had to look."""

    faces: list[Face]
    image_size: tuple[int, int]  # (width, height)
    backend: str
    model: str
    tried: tuple[str, ...] = ()
    rescue: str | None = None  # the rung that found the faces; None when nothing was found
    face_count: int | None = None  # faces found, also those dropped by max_faces; defaults to len(faces)

    def __post_init__(self) -> None:
        if self.face_count is None:
            self.face_count = len(self.faces)

    @property
    def found(self) -> bool:
        return bool(self.faces)

    @property
    def primary(self) -> Face | None:
        return self.faces[0] if self.faces else None

    def to_dict(self, with_embedding: bool = False) -> dict[str, Any]:
        return {
            "found": self.found,
            "face_count": self.face_count,
            "rescue": self.rescue,
            "tried": list(self.tried),
            "image_size": list(self.image_size),
            "backend": self.backend,
            "model": self.model,
            "faces": [f.to_dict(with_embedding) for f in self.faces],
        }


@runtime_checkable
class FaceEngine(Protocol):
    """A face-analysis backend. Implementations: DlibEngine (embedded default), InsightFaceEngine."""

    backend: str  # "dlib" | "insightface"
    model: str  # e.g. "dlib_resnet_v1/sp5", "buffalo_l"
    dim: int  # identity vector length

    def detect(self, image: np.ndarray, rung: str = RUNG_DIRECT) -> list[Face]:
        """Faces with bbox, score, landmarks and pose (no embedding) using the detector effort of ``rung``."""
        ...

    def embed(self, image: np.ndarray, faces: list[Face]) -> None:
        """Fill ``face.embedding`` (L2-normalised) for each face, in place."""
        ...

    def info(self) -> dict[str, Any]:
        """Backend, model, file paths and runtime details (execution provider...) for reports and doctor."""
        ...
