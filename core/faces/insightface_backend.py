"""The insightface-package engine: the same packs run through insightface's own FaceAnalysis code.

Kept as the reference implementation that :mod:`.arcface_onnx` (onnxruntime only, the default for the
``insightface`` backend) is tested against, and for the speed comparison in benchmarks/face_engine.py. Select it
with ``backend="insightface-package"``; it needs ``pip install insightface`` (in the test extra only).
Pack discovery lives in :mod:`.packs`.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from ..errors import ModelNotFoundError
from .arcface_onnx import scrfd_face
from .packs import (
    ENV_DIR,
    PACK_PREFERENCE,
    engine_info,
    find_packs,
    onnx_providers,
    resolve_pack,
    search_roots,
)
from .packs import RUNG_SETTINGS as _RUNG_SETTINGS
from .types import RUNG_DIRECT, Face, unit_vector

__all__ = ["ENV_DIR", "PACK_PREFERENCE", "InsightFaceEngine", "find_packs", "onnx_providers", "resolve_pack"]
_search_roots = search_roots  # older name, used by doctor before the move


class InsightFaceEngine:
    """SCRFD detection + 5 keypoints, ArcFace identity vectors (512-D), optional 3-D landmarks / age / sex."""

    backend = "insightface"
    engine = "insightface-package"

    def __init__(
        self,
        pack: str | os.PathLike | None = None,
        extra_dirs: list[str | os.PathLike] | None = None,
        providers: list[str] | None = None,
    ):
        try:
            from insightface.app.common import Face as IFFace
            from insightface.model_zoo import model_zoo
        except ImportError as exc:  # pragma: no cover - depends on the user's install
            raise ModelNotFoundError(
                "the insightface-package engine needs the insightface package (pip install insightface); "
                "backend='insightface' runs the same packs without it"
            ) from exc
        self._IFFace = IFFace
        self.pack_dir = resolve_pack(pack, extra_dirs)
        self.model = self.pack_dir.name
        self.providers_requested = providers or onnx_providers()
        self._models: dict[str, Any] = {}
        for onnx_file in sorted(self.pack_dir.glob("*.onnx")):
            m = model_zoo.get_model(str(onnx_file), providers=self.providers_requested)
            if m is None or m.taskname in self._models:
                continue
            self._models[m.taskname] = m
        if "detection" not in self._models or "recognition" not in self._models:
            raise ModelNotFoundError(
                f"{self.pack_dir} must hold a detection (SCRFD) and a recognition (ArcFace) .onnx model; "
                f"found tasks: {sorted(self._models) or 'none'}"
            )
        det = self._models["detection"]
        det.prepare(0 if "CUDAExecutionProvider" in self.providers_requested else -1, input_size=(640, 640))
        rec = self._models["recognition"]
        self.dim = int(rec.session.get_outputs()[0].shape[1])
        self._lock = threading.Lock()

    @property
    def providers_active(self) -> list[str]:
        """Execution providers onnxruntime actually uses for the detector (CUDA may fall back to CPU)."""
        return list(self._models["detection"].session.get_providers())

    def detect(self, image: np.ndarray, rung: str = RUNG_DIRECT) -> list[Face]:
        size, thresh = _RUNG_SETTINGS.get(rung, _RUNG_SETTINGS[RUNG_DIRECT])
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        h, w = image.shape[:2]
        with self._lock:
            det = self._models["detection"]
            bboxes, kpss = det.detect(bgr, input_size=(size, size), det_thresh=thresh)
            faces = []
            for i in range(bboxes.shape[0]):
                if_face = self._IFFace(
                    bbox=bboxes[i, :4], kps=kpss[i] if kpss is not None else None, det_score=bboxes[i, 4]
                )
                lmk = ga = None
                if "landmark_3d_68" in self._models:
                    lmk = self._models["landmark_3d_68"].get(bgr, if_face)
                if "genderage" in self._models:
                    ga = self._models["genderage"].get(bgr, if_face)
                face = scrfd_face(bboxes[i], kpss[i] if kpss is not None else None, (w, h), lmk, ga)
                face._if_face = if_face  # type: ignore[attr-defined]
                faces.append(face)
        return faces

    def embed(self, image: np.ndarray, faces: list[Face]) -> None:
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        rec = self._models["recognition"]
        with self._lock:
            for f in faces:
                if_face = getattr(f, "_if_face", None)
                if if_face is None or if_face.kps is None:
                    raise ValueError(
                        "InsightFaceEngine.embed needs faces (with keypoints) from its own detect()"
                    )
                f.embedding = unit_vector(rec.get(bgr, if_face))

    def info(self) -> dict[str, Any]:
        return engine_info(self)
