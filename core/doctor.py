"""Self-check: which face backends work here, which model files were found, which runtimes are installed.

Answers the top install questions of face-related ComfyUI packs (wrong onnxruntime flavour, CUDA provider not
active, insightface models in the wrong folder, numpy ABI mismatches) in one printout.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def check(model_dirs: list[str] | None = None) -> dict[str, Any]:
    """Collect the facts; never raises (each failure is reported as text)."""
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {
            d: _version(d)
            for d in (
                "numpy",
                "opencv-python-headless",
                "opencv-python",
                "dlib-bin",
                "dlib",
                "face-recognition-models",
                "insightface",
                "onnxruntime",
                "onnxruntime-gpu",
                "torch",
                "diffusers",
                "peft",
                "open-clip-torch",
                "rembg",
            )
        },
    }
    flavours = [
        d
        for d in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-silicon")
        if _version(d)
    ]
    report["onnxruntime_flavours"] = flavours
    problems: list[str] = []
    if len(flavours) > 1:
        problems.append(
            f"several onnxruntime flavours are installed ({', '.join(flavours)}): they overwrite each other. "
            "Uninstall all of them, then install exactly one."
        )
    if _version("opencv-python") and _version("opencv-python-headless"):
        problems.append(
            "both opencv-python and opencv-python-headless are installed (the insightface package pulls the "
            "former; IdentityLock does not need that package); "
            "on a server without a display keep only the headless one."
        )
    try:
        import onnxruntime as ort

        report["onnxruntime_providers_available"] = ort.get_available_providers()
    except Exception as exc:  # noqa: BLE001 - doctor reports everything
        report["onnxruntime_providers_available"] = f"import failed: {exc}"
        problems.append(f"onnxruntime does not import: {exc}")
    backends: dict[str, Any] = {}
    from .faces import dlib_backend

    try:
        backends["dlib"] = {"ok": True, **dlib_backend.DlibEngine().info()}
    except Exception as exc:  # noqa: BLE001
        backends["dlib"] = {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"}
        problems.append(f"embedded dlib backend unavailable: {exc}")
    from .faces import packs as ifp

    found_packs = ifp.find_packs(model_dirs)
    report["insightface_search_roots"] = [str(p) for p in ifp.search_roots(model_dirs)]
    report["insightface_packs_found"] = {k: str(v) for k, v in found_packs.items()}
    if found_packs:
        try:
            from .faces.arcface_onnx import ArcFaceOnnxEngine

            info = ArcFaceOnnxEngine(extra_dirs=model_dirs).info()
            backends["insightface"] = {"ok": True, **info}
            gpu = [p for p in info["providers_requested"] if p != "CPUExecutionProvider"]
            if gpu and info["provider"] == "CPUExecutionProvider":
                problems.append(
                    f"onnxruntime offers {', '.join(gpu)} but the ArcFace models ran on the CPU: that provider "
                    "failed to load (for CUDA: a cuDNN/CUDA version that matches this onnxruntime-gpu)."
                )
        except Exception as exc:  # noqa: BLE001
            backends["insightface"] = {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"}
            problems.append(f"insightface pack found but not usable: {exc}")
    else:
        backends["insightface"] = {"ok": False, "error": "no buffalo_l / antelopev2 pack found (optional)"}
    report["backends"] = backends
    report["auto_backend"] = "insightface" if backends["insightface"].get("ok") else "dlib"
    from .background import find_matting_model, matting_search_dirs

    found = find_matting_model(model_dirs)
    report["background_removal"] = (
        f"{found[0]} ({found[1]})"
        if found
        else "GrabCut (embedded); no u2net/isnet model in "
        + ", ".join(str(d) for d in matting_search_dirs(model_dirs))
    )
    report["hf_hub_offline"] = os.environ.get("HF_HUB_OFFLINE", "")
    report["problems"] = problems
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"IdentityLock doctor — Python {report['python']} on {report['platform']}", "", "Packages:"]
    for name, ver in report["versions"].items():
        if ver:
            lines.append(f"  {name:24s} {ver}")
    lines.append(f"  onnxruntime flavour(s):  {', '.join(report['onnxruntime_flavours']) or 'none'}")
    lines.append(f"  onnxruntime providers:   {report['onnxruntime_providers_available']}")
    lines.append("")
    lines.append("Face backends:")
    for name, info in report["backends"].items():
        if info.get("ok"):
            extra = info.get("pack_dir") or info.get("models_dir")
            lines.append(
                f"  [ok] {name}: {info['model']} ({info['dim']}-D), provider {info.get('provider')} — {extra}"
            )
            if info.get("engine") == "arcface-onnx":
                lines.append(
                    "       arcface-onnx: onnxruntime only, without the insightface package; models ran on "
                    + ", ".join(f"{t} {p[0] if p else '?'}" for t, p in info["providers_by_task"].items())
                )
        else:
            lines.append(f"  [--] {name}: {info.get('error')}")
    lines.append(f"  auto -> {report['auto_backend']}")
    lines.append("  insightface search roots: " + ", ".join(report["insightface_search_roots"]))
    lines.append(f"Background removal: {report['background_removal']}")
    lines.append("")
    if report["problems"]:
        lines.append("Problems:")
        lines.extend(f"  ! {p}" for p in report["problems"])
    else:
        lines.append("No problems found.")
    return "\n".join(lines)
