"""ArcFace engine on onnxruntime alone: insightface-layout packs without the insightface package.

Runs the pack's SCRFD detector (``det_10g.onnx``, ``scrfd_10g_bnkps.onnx``), ArcFace recognition
(``w600k_r50.onnx``, ``glintr100.onnx``, AuraFace...) and, when present, the 68-point 3-D landmark and
gender/age models, with the same pre/post-processing as insightface's FaceAnalysis (see
:mod:`.onnx_models`): identical boxes, keypoints and vectors for the same files, so identity references made by
either are interchangeable (``backend == "insightface"``: the vectors' family, not the Python package).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelNotFoundError
from .onnx_models import ArcFace, CropModel, OnnxModel, Scrfd, route
from .packs import RUNG_SETTINGS, engine_info, onnx_providers, resolve_pack
from .pose import pose_from_landmarks
from .types import RUNG_DIRECT, Face, unit_vector

KEYPOINT_NAMES = ("eye_fl", "eye_fr", "nose", "mouth_fl", "mouth_fr")


def scrfd_face(
    det_row: np.ndarray,
    kps: np.ndarray | None,
    image_size: tuple[int, int],
    landmarks68: np.ndarray | None = None,
    gender_age: tuple[int, float] | None = None,
) -> Face:
    """A :class:`Face` from one SCRFD detection (+ optional 68 landmarks and gender/age); pose from the
    68 points when there are, else from the five keypoints."""
    keypoints: dict[str, tuple[float, float]] = {}
    landmarks, scheme = None, None
    if kps is not None:
        landmarks, scheme = np.asarray(kps, dtype=np.float64), "kps5"
        keypoints = {n: (float(kps[j, 0]), float(kps[j, 1])) for j, n in enumerate(KEYPOINT_NAMES)}
    if landmarks68 is not None:
        landmarks, scheme = np.asarray(landmarks68[:, :2], dtype=np.float64), "dlib68"
    age = sex = None
    if gender_age is not None:
        sex, age = ("M" if int(gender_age[0]) == 1 else "F"), float(gender_age[1])
    return Face(
        bbox=np.asarray(det_row[:4], dtype=np.float64),
        det_score=float(det_row[4]),
        detector="scrfd",
        keypoints=keypoints,
        landmarks=landmarks,
        landmark_scheme=scheme,
        pose=pose_from_landmarks(landmarks, scheme, image_size) if landmarks is not None else None,
        age=age,
        sex=sex,
    )


def load_pack_models(pack_dir: Path, providers: list[str]) -> dict[str, OnnxModel]:
    """One model per task from the pack's .onnx files (sorted by name; the first of each task wins)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # a CUDA provider that cannot load is reported by doctor, not spammed
    models: dict[str, OnnxModel] = {}
    for onnx_file in sorted(pack_dir.glob("*.onnx")):
        try:
            session = ort.InferenceSession(str(onnx_file), sess_options=options, providers=providers)
            model = route(onnx_file, session)
        except ModelNotFoundError:
            raise
        except Exception as exc:  # onnxruntime raises several types for a damaged file
            first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise ModelNotFoundError(
                f"{onnx_file} is not a usable ONNX model ({first}); replace it with the pack's original file"
            ) from None
        if model is not None and model.taskname not in models:
            models[model.taskname] = model
    if "detection" not in models or "recognition" not in models:
        raise ModelNotFoundError(
            f"{pack_dir} must hold a detection (SCRFD) and a recognition (ArcFace) .onnx model; "
            f"found tasks: {sorted(models) or 'none'}"
        )
    return models


class ArcFaceOnnxEngine:
    """SCRFD detection + 5 keypoints, ArcFace identity vectors; 68 landmarks / age / sex when the pack has them.

    Thread-safe: onnxruntime sessions may be run from several threads, and nothing here is mutated per call
    except the detector's anchor cache (filled with identical values by whoever gets there first).
    """

    backend = "insightface"  # the vector family: references made with the insightface package still compare
    engine = "arcface-onnx"

    def __init__(
        self,
        pack: str | os.PathLike | None = None,
        extra_dirs: list[str | os.PathLike] | None = None,
        providers: list[str] | None = None,
    ):
        self.pack_dir = resolve_pack(pack, extra_dirs)
        self.model = self.pack_dir.name
        self.providers_requested = list(providers) if providers else onnx_providers()
        self._models = load_pack_models(self.pack_dir, self.providers_requested)
        self.det: Scrfd = self._models["detection"]  # type: ignore[assignment]
        self.rec: ArcFace = self._models["recognition"]  # type: ignore[assignment]
        self.dim = self.rec.dim
        self._lmk: CropModel | None = self._models.get("landmark_3d_68")  # type: ignore[assignment]
        self._ga: CropModel | None = self._models.get("genderage")  # type: ignore[assignment]

    @property
    def providers_active(self) -> list[str]:
        """Execution providers onnxruntime really uses for the detector (a CUDA that fails to load is absent)."""
        return self.det.providers

    def detect(self, image: np.ndarray, rung: str = RUNG_DIRECT) -> list[Face]:
        size, thresh = RUNG_SETTINGS.get(rung, RUNG_SETTINGS[RUNG_DIRECT])
        img = np.ascontiguousarray(image)
        bboxes, kpss = self.det.detect(img, size, thresh)
        h, w = img.shape[:2]
        faces = []
        for i in range(bboxes.shape[0]):
            lmk = self._lmk.landmarks(img, bboxes[i]) if self._lmk is not None else None
            ga = self._ga.gender_age(img, bboxes[i]) if self._ga is not None else None
            face = scrfd_face(bboxes[i], kpss[i] if kpss is not None else None, (w, h), lmk, ga)
            face._kps = None if kpss is None else kpss[i]  # type: ignore[attr-defined]
            faces.append(face)
        return faces

    def embed(self, image: np.ndarray, faces: list[Face]) -> None:
        kpss = [getattr(f, "_kps", None) for f in faces]
        if any(k is None for k in kpss):
            raise ValueError("ArcFaceOnnxEngine.embed needs faces (with keypoints) from its own detect()")
        if not faces:
            return
        vectors = self.rec.embed(np.ascontiguousarray(image), kpss)
        for f, v in zip(faces, vectors):
            f.embedding = unit_vector(v)

    def info(self) -> dict[str, Any]:
        return {
            **engine_info(self),
            "files": {task: m.path.name for task, m in sorted(self._models.items())},
            "recognition_input": {
                "size": self.rec.input_size,
                "mean": self.rec.input_mean,
                "std": self.rec.input_std,
            },
            "insightface_package": "not used",
            "providers_by_task": {task: m.providers for task, m in sorted(self._models.items())},
        }
