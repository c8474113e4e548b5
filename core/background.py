"""Background removal: local matting models when the user has them, GrabCut otherwise (no download ever).

Order for ``method="auto"``:
1. ``u2net`` / ``isnet-general-use`` ONNX files (permissive licences) found in the given folders, in
   ``$U2NET_HOME`` or ``~/.u2net`` — run directly with onnxruntime, so rembg's downloader is never involved.
   BRIA RMBG-2.0 (rembg's new default) is non-commercial and deliberately not picked automatically.
2. GrabCut seeded from the face box (OpenCV, embedded): the face box and the region below it are "probably
   foreground", the image border is "background". Good on plain studio backgrounds, rougher on clutter
   (see docs/prep.md for measured figures).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

# name -> (file name, input side, mean, std)
MATTING_MODELS = {
    "isnet-general-use": ("isnet-general-use.onnx", 1024, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)),
    "u2net": ("u2net.onnx", 320, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "u2netp": ("u2netp.onnx", 320, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
METHODS = ("auto", "matting", "grabcut", "none")

_sessions: dict[str, object] = {}
_sessions_lock = threading.Lock()


def matting_search_dirs(extra_dirs: list[str | os.PathLike] | None = None) -> list[Path]:
    dirs = [Path(d) for d in (extra_dirs or [])]
    if os.environ.get("U2NET_HOME"):
        dirs.append(Path(os.environ["U2NET_HOME"]))
    dirs.append(Path.home() / ".u2net")
    return dirs


def find_matting_model(extra_dirs: list[str | os.PathLike] | None = None) -> tuple[str, Path] | None:
    """First permissive matting model present locally, as (name, path)."""
    for d in matting_search_dirs(extra_dirs):
        for name, (filename, *_rest) in MATTING_MODELS.items():
            if (d / filename).is_file():
                return name, d / filename
    return None


def _session(path: Path):
    import onnxruntime as ort

    key = str(path)
    with _sessions_lock:
        if key not in _sessions:
            _sessions[key] = ort.InferenceSession(key, providers=["CPUExecutionProvider"])
        return _sessions[key]


def matting_mask(image: np.ndarray, name: str, path: Path) -> np.ndarray:
    """Foreground probability (float32 HxW, 0..1) from a U2-Net-family ONNX model."""
    import cv2

    _file, side, mean, std = MATTING_MODELS[name]
    h, w = image.shape[:2]
    x = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = (x - np.array(mean, np.float32)) / np.array(std, np.float32)
    x = x.transpose(2, 0, 1)[None]
    sess = _session(path)
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    pred = np.asarray(out, dtype=np.float32).reshape(out.shape[-2], out.shape[-1])
    lo, hi = float(pred.min()), float(pred.max())
    pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
    return cv2.resize(pred, (w, h), interpolation=cv2.INTER_LINEAR)


def grabcut_mask(
    image: np.ndarray, face_box: np.ndarray, work_side: int = 384, iterations: int = 4
) -> np.ndarray:
    """Foreground mask (float32 HxW, 0..1) by GrabCut seeded from the face box, run at reduced size."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    small = cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    sh, sw = small.shape[:2]
    x0, y0, x1, y1 = (np.asarray(face_box, float) * scale).tolist()
    fw, fh = x1 - x0, y1 - y0
    mask = np.full((sh, sw), cv2.GC_PR_BGD, np.uint8)
    # Head (generous around the face box) and body below it: probably foreground.
    hx0, hx1 = int(max(0, x0 - 0.35 * fw)), int(min(sw, x1 + 0.35 * fw))
    hy0, hy1 = int(max(0, y0 - 0.6 * fh)), int(min(sh, y1 + 0.2 * fh))
    mask[hy0:hy1, hx0:hx1] = cv2.GC_PR_FGD
    bx0, bx1 = int(max(0, x0 - 1.0 * fw)), int(min(sw, x1 + 1.0 * fw))
    mask[int(min(sh, y1)) :, bx0:bx1] = cv2.GC_PR_FGD
    # The inner face is surely foreground.
    ix0, ix1 = int(x0 + 0.2 * fw), int(x1 - 0.2 * fw)
    iy0, iy1 = int(y0 + 0.15 * fh), int(y1 - 0.1 * fh)
    if ix1 > ix0 and iy1 > iy0:
        mask[iy0:iy1, ix0:ix1] = cv2.GC_FGD
    # A thin border is background, except where the body leaves the frame at the bottom.
    b = max(2, int(0.02 * max(sh, sw)))
    mask[:b, :] = cv2.GC_BGD
    mask[:, :b][: int(min(sh, y1)), :] = cv2.GC_BGD
    mask[:, -b:][: int(min(sh, y1)), :] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # cv2.error (e.g. too few foreground samples for its color model) propagates: foreground_mask reports it.
    cv2.grabCut(small, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    fg = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 1.0, 0.0).astype(np.float32)
    # Keep the component connected to the face; smooth the edge.
    num, labels = cv2.connectedComponents((fg > 0).astype(np.uint8))
    cx, cy = int(min(sw - 1, (x0 + x1) / 2)), int(min(sh - 1, (y0 + y1) / 2))
    if num > 2 and labels[cy, cx] > 0:
        fg = (labels == labels[cy, cx]).astype(np.float32)
    fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
    k = max(3, int(0.01 * max(h, w)) | 1)
    return np.clip(cv2.GaussianBlur(fg, (k, k), 0), 0.0, 1.0)


#: Plausibility limits for a foreground mask (see mask_problem). On the 28 committed face photos GrabCut keeps
#: 29-84 % of the crop and 84-100 % of the face box (size 256, face_fraction 0.4 and 0.95), see docs/prep.md.
MIN_FOREGROUND = 0.001
MIN_FACE_KEPT = 0.5
MAX_FOREGROUND = 0.995


def mask_problem(mask: np.ndarray, face_box: np.ndarray, valid: np.ndarray | None = None) -> str | None:
    """Why a foreground mask is unusable, or None when it looks like a person was separated.

    A method can "succeed" and still return nothing useful: an empty mask (the output would be a blank
    canvas), a mask that drops the face the crop is built around, or a mask that keeps everything (nothing was
    removed). ``valid`` (1 = real photo pixels) keeps padding outside the photo out of the last test.
    """
    m = np.asarray(mask, np.float32)
    if m.size == 0 or not np.isfinite(m).all():
        return "the mask is empty or not finite"
    fg = m > 0.5
    area = fg.mean()
    if area < MIN_FOREGROUND:
        return f"the mask kept {area:.1%} of the image"
    h, w = m.shape[:2]
    x0, y0, x1, y1 = np.asarray(face_box, float).tolist()
    fx0, fx1 = int(np.clip(np.floor(x0), 0, w)), int(np.clip(np.ceil(x1), 0, w))
    fy0, fy1 = int(np.clip(np.floor(y0), 0, h)), int(np.clip(np.ceil(y1), 0, h))
    if fx1 > fx0 and fy1 > fy0:
        face = float(m[fy0:fy1, fx0:fx1].mean())
        if face < MIN_FACE_KEPT:
            return f"the mask removed the face (kept {face:.0%} of the face box)"
    inside = fg if valid is None else fg[np.asarray(valid) > 0.5]
    if inside.size and inside.mean() > MAX_FOREGROUND:
        return f"nothing was separated (the mask kept {inside.mean():.0%} of the photo)"
    return None


def foreground_mask(
    image: np.ndarray,
    face_box: np.ndarray,
    method: str = "auto",
    model_dirs: list[str | os.PathLike] | None = None,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """Foreground mask (float32 0..1) and the method actually used ("isnet-general-use", "grabcut", "none").

    A method that fails (raises, or gives a mask that :func:`mask_problem` rejects) is never reported as used:
    ``auto`` goes on to the next method, and when none worked the result is the unmasked image with a method
    such as ``"none (grabcut failed: the mask removed the face ...)"`` — callers warn when it starts with
    ``"none ("`` (see :func:`failed`).
    """
    if method not in METHODS:
        raise ValueError(f"background method must be one of {METHODS}")
    if method == "none":
        return np.ones(image.shape[:2], np.float32), "none"
    failures: list[str] = []
    if method in ("auto", "matting"):
        found = find_matting_model(model_dirs)
        if found is not None:
            name, path = found
            mask, why = _attempt(lambda: matting_mask(image, name, path), face_box, valid)
            if why is None:
                return mask, name
            failures.append(f"{name} failed: {why}")
        elif method == "matting":
            from .errors import ModelNotFoundError

            where = ", ".join(str(d) for d in matting_search_dirs(model_dirs))
            raise ModelNotFoundError(
                f"no u2net / isnet-general-use .onnx file found in {where}; use background='grabcut' (embedded)"
            )
    if method in ("auto", "grabcut"):
        mask, why = _attempt(lambda: grabcut_mask(image, face_box), face_box, valid)
        if why is None:
            return mask, "grabcut"
        failures.append(f"grabcut failed: {why}")
    return np.ones(image.shape[:2], np.float32), f"none ({'; '.join(failures)})"


def _attempt(run, face_box: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray | None, str | None]:
    """Run one mask method; (mask, None) when usable, else (None, why)."""
    try:
        mask = run()
    except Exception as exc:  # cv2.error, onnxruntime errors: a failed method, reported, never a crash
        text = " ".join(str(exc).split())[:160]
        return None, f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    why = mask_problem(mask, face_box, valid)
    return (None, why) if why else (mask, None)


def failed(method: str) -> bool:
    """True when foreground_mask's method string says background removal was asked for and failed."""
    return method.startswith("none (")


def composite_on_color(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    m = mask[:, :, None].astype(np.float32)
    bg = np.array(color, np.float32)[None, None, :]
    return np.clip(image.astype(np.float32) * m + bg * (1 - m) + 0.5, 0, 255).astype(np.uint8)
