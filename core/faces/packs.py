"""Where insightface-layout ONNX packs live, and which onnxruntime providers to ask for.

Shared by the onnxruntime-only ArcFace engine (:mod:`.arcface_onnx`) and the insightface-package engine
(:mod:`.insightface_backend`). Packs are looked up in, in order: explicit directories,
``$IDENTITYLOCK_INSIGHTFACE_DIR``, directories handed in by the host (ComfyUI's registered ``insightface``
folders, i.e. ``ComfyUI/models/insightface``), and ``~/.insightface``. Each root may hold the pack as
``models/<name>/``, ``<name>/``, the nested ``<name>/<name>/`` layout that antelopev2's zip unpacks to, or be
the pack folder itself. Any pack with the same layout works (buffalo_l, antelopev2, AuraFace...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ModelNotFoundError
from .types import RUNG_DIRECT, RUNG_PAD_SLOW, RUNG_SLOW, RUNG_UPSAMPLE

PACK_PREFERENCE = ("buffalo_l", "antelopev2")
ENV_DIR = "IDENTITYLOCK_INSIGHTFACE_DIR"
# Execution providers in the order we ask for them: the first one this onnxruntime build offers runs.
PROVIDER_ORDER = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "CPUExecutionProvider",
)

# SCRFD detector input size and score threshold per rescue rung (a fixed-size model keeps its own size).
RUNG_SETTINGS = {
    RUNG_DIRECT: (640, 0.5),
    RUNG_UPSAMPLE: (1024, 0.5),
    RUNG_SLOW: (640, 0.3),
    RUNG_PAD_SLOW: (640, 0.3),
}


def search_roots(extra_dirs: list[str | os.PathLike] | None) -> list[Path]:
    """Folders searched for packs, in order."""
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
    for root in search_roots(extra_dirs):
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
    where = ", ".join(str(r) for r in search_roots(extra_dirs))
    raise ModelNotFoundError(
        f"no insightface model pack {'named ' + str(pack) if pack else '(buffalo_l / antelopev2)'} found in: "
        f"{where}. Put the unzipped pack in ComfyUI/models/insightface/models/<name>/ or set {ENV_DIR}; "
        "or use backend='dlib' (needs no download)."
    )


def onnx_providers(prefer_gpu: bool = True, available: list[str] | None = None) -> list[str]:
    """The providers this onnxruntime offers, in PROVIDER_ORDER (CUDA / ROCm / CoreML / DirectML), CPU last.

    onnxruntime uses the first one that loads; which one really ran is ``session.get_providers()``.
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    wanted = PROVIDER_ORDER if prefer_gpu else ("CPUExecutionProvider",)
    chosen = [p for p in wanted if p in available and p != "CPUExecutionProvider"]
    return chosen + ["CPUExecutionProvider"]


def engine_info(engine: Any) -> dict[str, Any]:
    """The ``info()`` fields both pack engines share: what ran, from where, and on which provider really."""
    import onnxruntime as ort

    active = list(engine.providers_active)
    return {
        "backend": engine.backend,
        "engine": engine.engine,
        "model": engine.model,
        "dim": engine.dim,
        "pack_dir": str(engine.pack_dir),
        "tasks": sorted(engine._models),
        "onnxruntime": ort.__version__,
        "providers_requested": engine.providers_requested,
        "provider": active[0] if active else "unknown",
        "providers_active": active,
    }
