"""Atomic training checkpoints: the full state (LoRA, optimizer, controller/phase, history, RNG, step)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """torch.save to a temporary file, fsync, then rename over ``path``: a crash never leaves half a file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=False)
