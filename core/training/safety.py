"""Non-finite steps: skipped, counted, the learning rate lowered when they repeat, the run stopped when they persist.

Why: the loop used to apply the optimizer step before looking at the loss, so one NaN batch wrote NaN into every
LoRA weight and the error path then saved those weights over the last good checkpoint (a file labelled step 4
holding NaN weights after a NaN at step 5: nothing left to resume from). Now a step is judged on its loss and its
gradients before the optimizer sees them, and no file is ever written with a non-finite weight in it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import IdentityLockError

_log = logging.getLogger("IdentityLock.training")


class NonFiniteTrainingError(IdentityLockError, FloatingPointError):
    """Training stopped: the loss or its gradients stayed NaN/inf even at a lowered learning rate."""


class NonFiniteWeightsError(IdentityLockError, FloatingPointError):
    """Weights about to be written hold NaN/inf; nothing is written."""


@dataclass
class GuardConfig:
    """``reduce_after`` bad steps in a row multiply the lr by ``reduce_factor``; ``stop_after`` in a row (or
    ``max_total`` in the run) stop it."""

    reduce_after: int = 3
    reduce_factor: float = 0.5
    stop_after: int = 10
    max_total: int = 50


@dataclass
class NonFiniteGuard:
    """Counts bad steps and says what to do; its state travels in the training state (resume repeats it)."""

    config: GuardConfig = field(default_factory=GuardConfig)
    bad_steps: list[int] = field(default_factory=list)  # step numbers that were skipped
    consecutive: int = 0
    lr_scale: float = 1.0  # applied to every phase's lr from now on

    def judge(self, step: int, ok: bool) -> str:
        """'ok', 'skip', 'reduce' (skip and lower the lr) or 'stop' for step ``step`` (1-based)."""
        if ok:
            self.consecutive = 0
            return "ok"
        self.bad_steps.append(int(step))
        self.consecutive += 1
        c = self.config
        if self.consecutive >= c.stop_after or len(self.bad_steps) >= c.max_total:
            return "stop"
        if self.consecutive % c.reduce_after == 0:
            return "reduce"
        return "skip"

    def apply(self, action: str, step: int, phase: str, lr: float, checkpoint: Any) -> None:
        """Log a skip, lower the lr, or raise the stop error (``checkpoint``: where the last good state is)."""
        if action == "reduce":
            self.lr_scale *= self.config.reduce_factor
            _log.warning(
                "Step %d (%s): %d non-finite steps in a row; learning rate lowered to %g x the phase's",
                step, phase, self.consecutive, self.lr_scale,
            )  # fmt: skip
        elif action == "skip":
            _log.warning("Step %d (%s): loss or gradients not finite (NaN/inf); step skipped", step, phase)
        elif action == "stop":
            where = f" (kept at {checkpoint})" if checkpoint else ""
            raise NonFiniteTrainingError(
                f"training stopped at step {step} in phase {phase}: the loss or its gradients were NaN/inf on "
                f"{self.consecutive} steps in a row ({len(self.bad_steps)} in the run) even at {lr:g} "
                f"({self.lr_scale:g} x the phase's learning rate), so no weight was changed by them and the last "
                f"finite state{where} can be resumed; lower the learning rate (a custom phase) or check the base "
                "model and the training images for NaN"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"bad_steps": list(self.bad_steps), "consecutive": self.consecutive, "lr_scale": self.lr_scale,
                "config": asdict(self.config)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        self.bad_steps = [int(s) for s in state.get("bad_steps", [])]
        self.consecutive = int(state.get("consecutive", 0))
        self.lr_scale = float(state.get("lr_scale", 1.0))


def all_finite(tensors: Any) -> bool:
    """True when every floating tensor in ``tensors`` (nested dicts/lists/tuples, None allowed) is finite."""
    return not nonfinite_keys(tensors)


def nonfinite_keys(obj: Any, prefix: str = "") -> list[str]:
    """Paths of the floating tensors (and floats) in ``obj`` that hold NaN or inf."""
    import torch

    out: list[str] = []
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            out.append(prefix or "tensor")
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            out.append(prefix or "value")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out += nonfinite_keys(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += nonfinite_keys(v, f"{prefix}[{i}]")
    return out


def check_finite_weights(tensors: dict, what: str) -> None:
    """Raise NonFiniteWeightsError before writing ``what`` when a tensor of ``tensors`` holds NaN/inf."""
    bad = nonfinite_keys(tensors)
    if bad:
        raise NonFiniteWeightsError(
            f"not writing {what}: {len(bad)} tensor(s) hold NaN/inf (first: {bad[0]}); the training diverged, "
            "resume from the last saved training state with a lower learning rate"
        )


def check_gradients_reach(params: Any) -> None:
    """Fail loudly when the loss does not depend on the LoRA (every gradient exactly zero or missing).

    Why: otherwise a run "succeeds" and saves a LoRA whose ``up`` matrices are still zero. Seen in a real
    ComfyUI with a random-weight checkpoint whose GroupNorm weights were all zero (the UNet output is then
    constant); the same symptom follows from running the step without autograd (inference mode / no_grad).
    """
    import torch

    grads = [p.grad for p in params if p.requires_grad]
    if any(g is not None and bool(torch.any(g != 0)) for g in grads):
        return
    how = (
        "no gradient reached the LoRA (autograd was off: inference_mode/no_grad around the training step?)"
        if all(g is None for g in grads)
        else "all LoRA gradients are exactly zero (the model output does not depend on the adapted layers, "
        "e.g. a checkpoint with zeroed normalisation weights)"
    )
    raise RuntimeError(f"LoRA cannot train: {how}")
