"""Atomic training checkpoints: the full state (LoRA, optimizer, controller/phase, history, RNG, step)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..fileio import atomic_write

_log = logging.getLogger("IdentityLock.training")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """torch.save to a temporary file, fsync, then rename over ``path``: a crash never leaves half a file."""
    import torch

    path = Path(path)
    with atomic_write(path, "wb") as fh:
        torch.save(_plain(state), fh)
    return path


def _plain(obj: Any) -> Any:
    """numpy scalars/arrays -> Python numbers/tensors, so the state loads with ``weights_only=True``."""
    import numpy as np
    import torch

    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    return obj


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training state; ``weights_only=True``: tensors and plain containers only, nothing is unpickled."""
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def adopt_saved_seed(config: Any, state: dict[str, Any]) -> bool:
    """Resume: put the saved run's seed (from a loaded ``state``) into ``config`` (a TrainConfig); True if it changed.

    Why: the seed decides the train/validation split, the augmentation, the LoRA init, every batch and the noise, so a
    resume must use the saved run's seed to continue that run. ComfyUI's front end randomises every INT input named
    ``seed`` after each queue, so the seed given at resume time is usually a different one. The node and the CLI call
    this before preparing data; ``Trainer.load_state_dict`` calls it too (for callers that only resume a Trainer).
    """
    saved = (state.get("config") or {}).get("seed")
    if saved is None or int(saved) == int(config.seed):
        return False
    _log.warning(
        "Resume: continuing the saved run's seed %s (the seed given now, %s, applies to new runs only)",
        saved, config.seed,
    )  # fmt: skip
    config.seed = int(saved)
    return True
