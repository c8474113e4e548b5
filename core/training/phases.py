"""Training phases as data, and the per-step learning-rate schedule inside a phase (pure Python).

A phase fixes learning rate, LoRA alpha, loss and optimizer; the trainer moves to the next phase when the
convergence controller reports a plateau (or the phase's max_steps is reached).

Meaning of a per-phase alpha (kohya convention, ΔW = (alpha / rank) · up · down): during a phase the LoRA
forward pass uses the scale ``alpha / rank`` of that phase. At a phase boundary the up matrices are multiplied by
``alpha_old / alpha_new``, so the network's function is unchanged (no jump in the output) while the scale applied
to every later update changes: with Adam-type optimizers the weight-space step of ``up`` is proportional to
``lr · alpha / rank``, so lowering alpha anneals the step a second time, multiplicatively with the lr. The saved
file stores the last phase's alpha with the current matrices, so ``(alpha/rank) · up · down`` is exactly the
delta the trained model used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config_fields import check_fields, parse_json

LOSSES = ("mse", "huber", "charbonnier", "l1")
OPTIMIZERS = ("adamw", "adamw8bit", "adamp", "adam", "sgd")
SCHEDULERS = ("constant", "cosine", "cosine_with_restarts")


@dataclass
class Phase:
    """One training phase. ``alpha`` None means "use the preset's alpha"."""

    name: str
    lr: float
    alpha: float | None
    loss: str = "mse"
    optimizer: str = "adamw"
    min_steps: int = 100
    max_steps: int = 2000
    scheduler: str = "constant"
    restarts: int = 1
    warmup_steps: int = 0
    weight_decay: float = 1e-2
    huber_delta: float = 1.0
    charbonnier_eps: float = 1e-3

    def __post_init__(self) -> None:
        self.loss, self.optimizer, self.scheduler = (
            self.loss.lower(),
            self.optimizer.lower(),
            self.scheduler.lower(),
        )
        problems = []
        if not self.name:
            problems.append("name is empty")
        if self.loss not in LOSSES:
            problems.append(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"scheduler {self.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.alpha is not None and not self.alpha > 0:
            problems.append(f"alpha must be > 0 (got {self.alpha})")
        if self.min_steps < 0 or self.max_steps < max(1, self.min_steps):
            problems.append(
                f"need 0 <= min_steps <= max_steps and max_steps >= 1 (got {self.min_steps}, {self.max_steps})"
            )
        if self.restarts < 1:
            problems.append("restarts must be >= 1")
        # checked here, not by torch mid-run (after the latents are encoded) or never (a NaN loss)
        if self.warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0 (got {self.warmup_steps})")
        if not self.weight_decay >= 0:
            problems.append(f"weight_decay must be >= 0 (got {self.weight_decay})")
        if not (self.huber_delta > 0 and self.charbonnier_eps > 0):
            problems.append(
                f"huber_delta and charbonnier_eps must be > 0 (got {self.huber_delta}, {self.charbonnier_eps})"
            )
        if problems:
            raise ValueError(f"phase {self.name!r}: " + "; ".join(problems))

    def lr_at(self, step_in_phase: int, phase_len: int | None = None) -> float:
        """Learning rate at ``step_in_phase`` (0-based). Cosine schedules span ``phase_len`` (default max_steps)."""
        total = max(1, phase_len or self.max_steps)
        if self.warmup_steps and step_in_phase < self.warmup_steps:
            return self.lr * (step_in_phase + 1) / self.warmup_steps
        if self.scheduler == "constant":
            return self.lr
        s = step_in_phase - self.warmup_steps
        span = max(1, total - self.warmup_steps)
        if self.scheduler == "cosine":
            frac = min(1.0, s / span)
        else:
            cycle = span / self.restarts
            frac = (s % cycle) / cycle if cycle > 0 else 0.0
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * frac))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Phase:
        name = data.get("name") if isinstance(data, dict) else None
        what = f"phase {name!r}" if isinstance(name, str) else "phase"
        return cls(**check_fields(cls, data, what, complete=True))


def seed_phases(min_steps: int = 150, max_steps: int = 2000) -> list[Phase]:
    """The 4-phase adaptive schedule of the identity-replication seed.

    ``min_steps`` applies to COARSE only (it starts from the zero-delta LoRA init and needs a few windows before
    its slope means anything); the later phases start from a trained state and may end after one window when
    their loss shows no decrease.
    """
    first = {"min_steps": min_steps, "max_steps": max_steps}
    later = {"min_steps": 0, "max_steps": max_steps}
    return [
        Phase("COARSE", lr=1e-4, alpha=8, loss="mse", optimizer="adamw", **first),
        Phase("MID", lr=3e-5, alpha=4, loss="huber", optimizer="adamw", **later),
        Phase("MID_FINE", lr=1e-6, alpha=2, loss="charbonnier", optimizer="adamp", **later),
        Phase("FINAL_FINE", lr=5e-7, alpha=1, loss="charbonnier", optimizer="adamp", **later),
    ]


@dataclass
class Schedule:
    """An ordered list of phases plus whether the convergence controller may end them early."""

    phases: list[Phase] = field(default_factory=seed_phases)
    adaptive: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"adaptive": self.adaptive, "phases": [p.to_dict() for p in self.phases]}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | list[Any]) -> Schedule:
        if isinstance(data, list):
            data = {"phases": data}
        data = check_fields(cls, data, "schedule")
        if not isinstance(data.get("phases", []), list):
            raise ValueError("schedule: phases must be a list of phase objects")
        phases = [Phase.from_dict(p) for p in data.get("phases", [])]
        if not phases:
            raise ValueError("schedule: at least one phase is required")
        return cls(phases=phases, adaptive=data.get("adaptive", True))

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        return cls.from_dict(parse_json(text, "schedule"))
