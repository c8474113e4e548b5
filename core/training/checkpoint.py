"""Atomic training checkpoints: the full state (LoRA, optimizer, controller/phase, history, RNG, step)."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import IdentityLockError
from ..fileio import atomic_write

_log = logging.getLogger("IdentityLock.training")


def save_checkpoint(
    path: str | os.PathLike, state: dict[str, Any], keep: int = 1, previous_step: int | None = None
) -> Path:
    """torch.save to a temporary file beside ``path``, fsync, then rename over ``path``: a crash never leaves half
    a file and the previous state stays whole until the new one is complete.

    ``keep`` > 1 keeps that many states in all: the one ``path`` held (``previous_step``, None when it is not this
    run's) first gets a second name, :func:`history_path`, and only the newest ``keep - 1`` such names stay.
    Why: a state is only checked for NaN/inf, not for being any good; an older one is a way back.
    """
    import torch

    path = Path(path)
    if keep > 1 and previous_step is not None and path.is_file():
        _keep_as(path, history_path(path, previous_step))
    with atomic_write(path, "wb") as fh:
        torch.save(_plain(state), fh)
    step = state.get("step") if isinstance(state, dict) else None
    _prune_history(path, max(0, keep - 1), int(step) if step is not None else None)
    return path


def history_path(path: str | os.PathLike, step: int) -> Path:
    """``run.state.pt`` at step 40 -> ``run.state.step0000040.pt``: an older training state kept beside the newest."""
    p = Path(path)
    return p.with_name(f"{p.stem}.step{int(step):07d}{p.suffix}")


def history(path: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, file) of the older states kept beside ``path``, oldest first."""
    p = Path(path)
    out = []
    for f in p.parent.glob(f"{glob.escape(p.stem)}.step*{glob.escape(p.suffix)}"):
        digits = f.name[len(p.stem) + len(".step") : len(f.name) - len(p.suffix)]
        if digits.isdigit() and len(digits) >= 7:
            out.append((int(digits), f))
    return sorted(out)


def _keep_as(src: Path, dst: Path) -> None:
    """A second name for ``src`` (a hard link: no copy of a multi-GB state), else a copy written atomically."""
    import shutil

    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        with atomic_write(dst, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 22)


def _prune_history(path: Path, n: int, step: int | None) -> None:
    """Keep the newest ``n`` older states; drop any at or after ``step`` (left by a run that was replaced)."""
    old = [(s, f) for s, f in history(path) if step is None or s < step]
    stale = [f for s, f in history(path) if step is not None and s >= step]
    for f in stale + [f for _, f in old[: max(0, len(old) - n)]]:
        with contextlib.suppress(OSError):
            f.unlink()


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


class TrainingStateError(IdentityLockError, ValueError):
    """A saved training state that is missing, unusable or in the way of a new run."""


#: Keys every state written by Trainer.state_dict has; a file without them is not ours.
STATE_KEYS = ("version", "config", "step", "phase_index", "phase_started", "network", "alpha", "controller")


def load_checkpoint(path: str | os.PathLike, start_over: str = "delete it to start over") -> dict[str, Any]:
    """Load a training state; ``weights_only=True``: tensors and plain containers only, nothing is unpickled.

    Every failure becomes one sentence of ours. Why not torch's message: on a file holding other Python objects
    it advises retrying with weights-only loading turned off, i.e. running whatever code the file contains.
    ``start_over`` says how to start a new run instead (the CLI flag or the node widget).
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise TrainingStateError(
            f"no saved training state at {p}: nothing to resume; run without resume to start"
        )
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # by name: this module imports no pickle machinery (tests/test_packaging.py)
        if (
            type(exc).__name__ == "UnpicklingError" and "global" in str(exc).lower()
        ):  # a refused class/function
            why = "it holds Python objects other than tensors and plain values, which are never loaded"
        else:  # truncated zip, not a torch file at all, unreadable...
            why = "it is not a complete training-state file (truncated, damaged or another format)"
    else:
        return state
    raise TrainingStateError(f"cannot resume from {p}: {why}; {start_over}") from None


def check_state(
    state: Any, path: str | os.PathLike, start_over: str = "delete it to start over"
) -> dict[str, Any]:
    """``state`` if it has what ``Trainer.load_state_dict`` reads (a loadable file can still be someone else's)."""
    missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing or state.get("version") != 1:
        raise TrainingStateError(
            f"cannot resume from {path}: it is not a training state written by this version of IdentityLock; "
            f"{start_over}"
        )
    return state


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
