"""InsightFace backend: buffalo_l / antelopev2 ONNX packs the user already has (no download, ever).

Packs are looked up in, in order: explicit directories, ``$IDENTITYLOCK_INSIGHTFACE_DIR``, directories handed
in by the host (ComfyUI's registered ``insightface`` folders), and ``~/.insightface``. Each root may hold the
pack as ``models/<name>/``, ``<name>/``, the nested ``<name>/<name>/`` layout that antelopev2's zip unpacks to,
or be the pack folder itself.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelNotFoundError
from .pose import pose_from_landmarks
from .types import RUNG_DIRECT, RUNG_PAD_SLOW, RUNG_SLOW, RUNG_UPSAMPLE, Face, unit_vector

PACK_PREFERENCE = ("buffalo_l", "antelopev2")
ENV_DIR = "IDENTITYLOCK_INSIGHTFACE_DIR"

# Detector input size and threshold per rescue rung.
_RUNG_SETTINGS = {
    RUNG_DIRECT: (640, 0.5),
    RUNG_UPSAMPLE: (1024, 0.5),
    RUNG_SLOW: (640, 0.3),
    RUNG_PAD_SLOW: (640, 0.3),
}


def _search_roots(extra_dirs: list[str | os.PathLike] | None) -> list[Path]:
    roots: list[Path] = [Path(d) for d in (extra_dirs or [])]
    if os.environ.get(ENV_DIR):
        roots.append(Path(os.environ[ENV_DIR]))
    roots.append(Path.home() / ".insightface")
    return roots


def _is_pack(folder: Path) -> bool:
    return folder.is_dir() and len(list(folder.glob("*.onnx"))) >= 2


def find_packs(extra_dirs: list[str | os.PathLike] | None = None) -> dict[str, Path]:
    """Map pack name -> folder holding its .onnx files, over every search root (first hit wins)."""
    found: dict[str, Path] = {}
    for root in _search_roots(extra_dirs):
        if not root.is_dir():
            continue
        if _is_pack(root):
            found.setdefault(root.name, root)
        for base in (root / "models", root):
            if not base.is_dir():
                continue
            for sub in sorted(p for p in base.iterdir() if p.is_dir()):
                for candidate in (sub / sub.name, sub):  # nested antelopev2/antelopev2 first
                    if _is_pack(candidate):
                        found.setdefault(sub.name, candidate)
                        break
    return found


def resolve_pack(
    pack: str | os.PathLike | None = None, extra_dirs: list[str | os.PathLike] | None = None
) -> Path:
    """Find the pack folder: an explicit path, a pack name, or the first of PACK_PREFERENCE."""
    if pack is not None and Path(pack).is_dir():
        p = Path(pack)
        nested = p / p.name
        if _is_pack(nested):
            return nested
        if _is_pack(p):
            return p
        raise ModelNotFoundError(f"{p} holds no insightface .onnx models")
    packs = find_packs(extra_dirs)
    names = [str(pack)] if pack else list(PACK_PREFERENCE) + sorted(packs)
    for name in names:
        if name in packs:
            return packs[name]
    where = ", ".join(str(r) for r in _search_roots(extra_dirs))
    raise ModelNotFoundError(
        f"no insightface model pack {'named ' + str(pack) if pack else '(buffalo_l / antelopev2)'} found in: "
        f"{where}. Put the unzipped pack in ComfyUI/models/insightface/models/<name>/ or set {ENV_DIR}; "
        "or use backend='dlib' (needs no download)."
    )


def onnx_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when this onnxruntime build and machine offer it, CPU always as fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"] if prefer_gpu else ["CPUExecutionProvider"]
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


class InsightFaceEngine:
    """SCRFD detection + 5 keypoints, ArcFace identity vectors (512-D), optional 3-D landmarks / age / sex."""

    backend = "insightface"

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
                "the insightface backend needs the insightface package: pip install 'identitylock[insightface]'"
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
                kps = kpss[i].astype(np.float64) if kpss is not None else None
                if_face = self._IFFace(
                    bbox=bboxes[i, :4], kps=kpss[i] if kpss is not None else None, det_score=bboxes[i, 4]
                )
                landmarks, scheme = kps, "kps5"
                if "landmark_3d_68" in self._models:
                    lmk = self._models["landmark_3d_68"].get(bgr, if_face)
                    landmarks, scheme = np.asarray(lmk[:, :2], dtype=np.float64), "dlib68"
                age = sex = None
                if "genderage" in self._models:
                    g, a = self._models["genderage"].get(bgr, if_face)
                    age, sex = float(a), ("M" if int(g) == 1 else "F")
                keypoints = {}
                if kps is not None:
                    names = ("eye_fl", "eye_fr", "nose", "mouth_fl", "mouth_fr")
                    keypoints = {n: (float(kps[j, 0]), float(kps[j, 1])) for j, n in enumerate(names)}
                pose = pose_from_landmarks(landmarks, scheme, (w, h)) if landmarks is not None else None
                face = Face(
                    bbox=bboxes[i, :4].astype(np.float64),
                    det_score=float(bboxes[i, 4]),
                    detector="scrfd",
                    keypoints=keypoints,
                    landmarks=landmarks,
                    landmark_scheme=scheme,
                    pose=pose,
                    age=age,
                    sex=sex,
                )
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
        import onnxruntime as ort

        return {
            "backend": self.backend,
            "model": self.model,
            "dim": self.dim,
            "pack_dir": str(self.pack_dir),
            "tasks": sorted(self._models),
            "onnxruntime": ort.__version__,
            "providers_requested": self.providers_requested,
            "provider": self.providers_active[0] if self.providers_active else "unknown",
            "providers_active": self.providers_active,
        }
