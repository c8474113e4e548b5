"""Shared plumbing of scripts/check_families.py (proof harness in a real ComfyUI, never run in CI): result rows,
error locations, sampler recording, KSampler's noise, the face inputs made with the pack's own nodes."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import comfy_toys as toys  # noqa: E402

# the pack under test (set by check_families.main from --pack)
CONTEXT = {"pack": HERE.parent}

PHOTOS = ("lisa_1.jpg", "lisa_2.jpg", "lisa_3.jpg", "lisa_4.jpg")  # generative use: lisa_*/london* only
SCENE = "london001_1.jpg"
PHASES = json.dumps(
    [{"name": "COARSE", "lr": 1e-2, "alpha": 4, "loss": "mse", "min_steps": 3, "max_steps": 3}]
)
RENDER_SIZE = 64


@dataclass
class Row:
    family: str
    check: str
    ok: bool = False
    seconds: float = 0.0
    cols: dict = field(default_factory=dict)
    error: str = ""


# -- plumbing --------------------------------------------------------------------------------------------------
def import_pack(pack: Path):
    """The pack as the package ``identitylock`` (a symlink in a temp folder: the code under test is ``pack``)."""
    tmp = Path(tempfile.mkdtemp(prefix="il_pack_"))
    (tmp / "identitylock").symlink_to(pack.resolve(), target_is_directory=True)
    sys.path.insert(0, str(tmp))
    import importlib

    return importlib.import_module("identitylock")


def where(exc: BaseException, pack: Path | None = None) -> str:
    """``Type: message @ pack file:line [-> innermost file:line]``: the innermost frame in the pack's code (not
    this harness), and the innermost frame of all when that is elsewhere (ComfyUI, torch)."""
    frames = traceback.extract_tb(exc.__traceback__)
    root = str(Path(pack or CONTEXT["pack"]).resolve())
    harness = str(HERE)

    def short(f) -> str:
        fn = os.path.realpath(f.filename)
        return f"{os.path.relpath(fn, root) if fn.startswith(root + os.sep) else fn}:{f.lineno}"

    inside = [f for f in frames if os.path.realpath(f.filename).startswith(root + os.sep)
              and not os.path.realpath(f.filename).startswith(harness + os.sep)]  # fmt: skip
    locs = []
    if inside:
        locs.append(short(inside[-1]))
    if frames and (not inside or frames[-1] is not inside[-1]):
        locs.append(short(frames[-1]))
    msg = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {msg}" + (f" @ {' -> '.join(locs)}" if locs else "")


class LogCount(logging.Handler):
    def __init__(self, needle: str):
        super().__init__(logging.DEBUG)
        self.needle, self.lines = needle, []

    def emit(self, record):
        msg = record.getMessage()
        if self.needle in msg:
            self.lines.append(msg)


@contextmanager
def record_sampling():
    """Record every (noise, latent_image, seed) that reaches comfy.sample.sample, then call through."""
    import comfy.sample

    calls = []
    original = comfy.sample.sample

    def wrapper(model, noise, *args, **kwargs):
        latent = args[6] if len(args) > 6 else kwargs.get("latent_image")
        calls.append(
            {"noise": noise.detach().clone(), "latent": latent.detach().clone(), "seed": kwargs.get("seed")}
        )
        return original(model, noise, *args, **kwargs)

    comfy.sample.sample = wrapper
    try:
        yield calls
    finally:
        comfy.sample.sample = original


def ksampler_noise(toy, latent: dict, seed: int):
    """The noise nodes.common_ksampler draws for ``seed`` on ``latent`` (its own two lines)."""
    import comfy.sample

    img = comfy.sample.fix_empty_latent_channels(toy.model, latent["samples"])
    return comfy.sample.prepare_noise(img, seed, latent.get("batch_index"))


def max_diff(a, b) -> str | float:
    if tuple(a.shape) != tuple(b.shape):
        return f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    return float((a.float() - b.float()).abs().max())


def load_photo(path: Path, square: int | None = None):
    """An IMAGE tensor [1,H,W,3]; ``square`` pads to a square (edge colour) and resizes, to batch photos."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    if square:
        side = max(img.size)
        canvas = Image.new("RGB", (side, side), img.getpixel((0, 0)))
        canvas.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
        img = canvas.resize((square, square), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


# -- shared inputs ---------------------------------------------------------------------------------------------
class Inputs:
    """Face crops, identity and scene, made once with the pack's own nodes."""

    def __init__(self, il, faces: Path):
        import importlib

        import torch

        IdentityEmbed = importlib.import_module(f"{il.__name__}.nodes.identity").IdentityEmbed
        FaceCropPrep = importlib.import_module(f"{il.__name__}.nodes.prep").FaceCropPrep

        photos = torch.cat([load_photo(faces / p, square=512) for p in PHOTOS])
        self.crops, _, self.meta = FaceCropPrep().prepare(
            photos, 64, 0.4, "none", "#FFFFFF", "largest", "main only", "", "", "auto"
        )
        self.identity = IdentityEmbed().embed(photos, "auto", "skip")["result"][0]
        self.scene = load_photo(faces / SCENE, square=384)


def guided(toy, fam, cond):
    return toys.with_guidance(cond, fam.guidance)
