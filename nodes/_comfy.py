"""The only place where nodes touch ComfyUI internals; everything degrades gracefully without ComfyUI.

Thin helpers shared by every node: tensor <-> numpy conversion, progress bars, cancel checks, status messages
for the web/ extension, and model-folder registration with ``folder_paths``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

_log = logging.getLogger("IdentityLock")

CATEGORY = "IdentityLock"

# Model folders we read from ComfyUI's models directory (extra_model_paths.yaml works through folder_paths).
MODEL_FOLDERS = {
    "insightface": ({".onnx"}, "insightface"),
    "identitylock": ({".safetensors", ".json"}, "identitylock"),
    "rembg": ({".onnx"}, "rembg"),
}


def _folder_paths():
    try:
        import folder_paths  # type: ignore[import-not-found]
    except ImportError:
        return None
    return folder_paths


def register_model_folders() -> None:
    """Register our model folders with ComfyUI so users can relocate them via extra_model_paths.yaml."""
    fp = _folder_paths()
    if fp is None:
        return
    for name, (extensions, subdir) in MODEL_FOLDERS.items():
        path = os.path.join(fp.models_dir, subdir)
        try:
            fp.add_model_folder_path(name, path)
            known = fp.folder_names_and_paths.get(name)
            if known is not None:
                exts = known[1] if isinstance(known[1], set) else set(known[1])
                exts.update(extensions)
                fp.folder_names_and_paths[name] = (known[0], exts)
        except Exception:  # pragma: no cover - older ComfyUI
            _log.warning("IdentityLock: could not register model folder %s", name, exc_info=True)


def model_folder_paths(name: str) -> list[str]:
    """Folders registered for ``name`` in ComfyUI (empty outside ComfyUI)."""
    fp = _folder_paths()
    if fp is None:
        return []
    try:
        return list(fp.get_folder_paths(name))
    except Exception:
        return []


def output_directory() -> str:
    fp = _folder_paths()
    if fp is not None:
        return fp.get_output_directory()
    return os.path.abspath("output")


def image_to_numpy(image: Any, name: str = "image") -> list[np.ndarray]:
    """ComfyUI IMAGE ([B,H,W,C] float 0..1) -> list of uint8 RGB arrays (checked, NaN rejected)."""
    from ..core.errors import ImageInputError
    from ..core.images import array_to_uint8_rgb

    if image is None:
        raise ImageInputError(f"{name}: no image connected")
    arr = image.detach().cpu().float().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ImageInputError(f"{name}: expected an IMAGE tensor [B,H,W,C], got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise ImageInputError(f"{name}: the image batch is empty")
    return [array_to_uint8_rgb(arr[i], name=f"{name}[{i}]") for i in range(arr.shape[0])]


def numpy_to_image(images: list[np.ndarray]):
    """List of uint8/float RGB arrays of one size -> ComfyUI IMAGE tensor [B,H,W,3] float32 0..1."""
    import torch

    if not images:  # an empty batch, never a black placeholder that downstream nodes would count or save
        return torch.zeros((0, 64, 64, 3), dtype=torch.float32)
    stack = np.stack([_as_float(img) for img in images], axis=0)
    return torch.from_numpy(np.ascontiguousarray(stack))


def numpy_to_mask(masks: list[np.ndarray]):
    """List of HxW masks (uint8 0..255 or float 0..1) -> ComfyUI MASK tensor [B,H,W] float32."""
    import torch

    if not masks:
        return torch.zeros((0, 64, 64), dtype=torch.float32)
    stack = np.stack([_as_float(m) for m in masks], axis=0)
    return torch.from_numpy(np.ascontiguousarray(stack))


def _as_float(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return arr.astype(np.float32)


FALLBACK_SAMPLERS = [
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "lms",
    "dpmpp_2m",
    "dpmpp_sde",
    "ddim",
    "uni_pc",
]
FALLBACK_SCHEDULERS = ["simple", "normal", "karras", "exponential", "sgm_uniform", "beta"]


def sampler_choices() -> tuple[list[str], list[str]]:
    """ComfyUI's live sampler and scheduler lists (a representative fallback outside ComfyUI, for tests)."""
    try:
        import comfy.samplers  # type: ignore[import-not-found]

        return list(comfy.samplers.KSampler.SAMPLERS), list(comfy.samplers.KSampler.SCHEDULERS)
    except ImportError:
        return list(FALLBACK_SAMPLERS), list(FALLBACK_SCHEDULERS)


def check_interrupted() -> None:
    """Honour ComfyUI's cancel button (no-op outside ComfyUI)."""
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI ProgressBar when available (with optional preview image), otherwise silent."""

    def __init__(self, total: int):
        self.total = max(1, int(total))
        self.done = 0
        try:
            import comfy.utils  # type: ignore[import-not-found]

            self._bar = comfy.utils.ProgressBar(self.total)
        except ImportError:
            self._bar = None

    def update(self, n: int = 1, preview: np.ndarray | None = None) -> None:
        self.done = min(self.total, self.done + n)
        if self._bar is None:
            return
        if preview is not None:
            from PIL import Image

            self._bar.update_absolute(self.done, self.total, ("JPEG", Image.fromarray(preview), 512))
        else:
            self._bar.update_absolute(self.done, self.total)

    def __call__(self, done: int, total: int, preview: np.ndarray | None = None) -> None:
        """Adapter for core functions that report ``progress(done, total)``; also checks for cancel."""
        self.total = max(1, total)
        self.done = max(0, done - 1)
        self.update(1, preview)
        check_interrupted()


def send_status(event: str, data: dict[str, Any], node_id: str | None = None) -> None:
    """Send a status message to the web/ extension (``identitylock.<event>``); no-op outside ComfyUI."""
    try:
        from server import PromptServer  # type: ignore[import-not-found]
    except ImportError:
        return
    payload = dict(data)
    if node_id is not None:
        payload["node"] = node_id
    try:
        PromptServer.instance.send_sync(f"identitylock.{event}", payload)
    except Exception:  # pragma: no cover - never let the UI channel break a run
        _log.debug("IdentityLock: send_sync failed", exc_info=True)


register_model_folders()


class Blocked:
    """Stand-in for ComfyUI's ExecutionBlocker outside ComfyUI (tests): carries the reason as ``message``."""

    def __init__(self, message: str | None):
        self.message = message


def blocked(reason: str | None) -> Any:
    """An output value that stops every node downstream of it (SaveImage writes nothing) and shows ``reason`` as
    the error of that branch, instead of a placeholder image that would be saved and counted as a result.

    ComfyUI's ``ExecutionBlocker`` (comfy_execution.graph_utils; comfy_execution.graph in older releases); the
    node that returns it still finishes and shows its own report.
    """
    import importlib

    for module in ("comfy_execution.graph_utils", "comfy_execution.graph"):
        try:
            return importlib.import_module(module).ExecutionBlocker(reason)
        except (ImportError, AttributeError):
            continue
    return Blocked(reason)
