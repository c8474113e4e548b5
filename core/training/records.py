"""What a training run is fed and what it reports: cached data, phase exits, per-step info, the result.

Plain dataclasses (and the Backend protocol), apart from the loop in trainer.py: the dataset builder, the reports,
the node's and the CLI's progress glue read them without needing the loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from .probe import ProbeTracker


class Backend(Protocol):
    device: torch.device

    def predict(
        self, latents: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor, u: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """u in [0, 1): timestep fraction (0 = clean). Returns (model prediction, training target)."""
        ...


@dataclass
class TrainData:
    """Cached latents and text conditioning; one row per (augmented) training image."""

    latents: torch.Tensor
    cond: torch.Tensor
    val_latents: torch.Tensor
    val_cond: torch.Tensor
    captions: list[str] = field(default_factory=list)
    # which source photos trained and which validated ({"by", "train", "validation"}; dataset.prepare_data)
    split: dict[str, Any] = field(default_factory=dict)
    # per validation image, the index of its photo in split["validation"]: the phase-skip test pairs photos
    val_groups: list[int] = field(default_factory=list)


@dataclass
class PhaseExit:
    phase: str
    step: int
    steps_in_phase: int
    windows: int
    reason: str
    p_value: float | None
    slope: float | None
    loss_mean: float
    loss_std: float
    val_loss: float | None
    val_start: float | None = None  # validation loss when the phase started
    val_p_value: float | None = None  # one-sided paired t-test p for "the phase lowered the validation loss"
    # training-loss slope test at the exit (secondary signal when validation decides)
    train_p_value: float | None = None
    val_test: str | None = None  # that paired test in words, with its units and degrees of freedom

    def message(self) -> str:
        p = f", p={self.p_value:.2f}" if self.p_value is not None else ""
        return f"Exiting {self.phase} after {self.windows} windows / {self.steps_in_phase} steps ({self.reason}{p})"


@dataclass
class StepInfo:
    step: int
    phase: str
    phase_index: int
    step_in_phase: int
    loss: float
    lr: float
    slope: float | None
    p_value: float | None
    eta_seconds: float
    max_total_steps: int
    val_loss: float | None = None


@dataclass
class TrainResult:
    steps: int
    exits: list[PhaseExit]
    losses: list[float]
    val_losses: list[tuple[int, float]]
    phase_starts: list[tuple[int, str]]
    final_val_loss: float
    probes: ProbeTracker
    seconds: float
    controller_seconds: float
    skipped: list[str] = field(default_factory=list)
    skip_reason: str = ""
    bad_steps: list[int] = field(default_factory=list)  # steps skipped for a NaN/inf loss or gradient

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "exits": [asdict(e) for e in self.exits],
            "skipped": list(self.skipped),
            "skip_reason": self.skip_reason,
            "bad_steps": list(self.bad_steps),
            "final_val_loss": self.final_val_loss,
            "val_losses": self.val_losses,
            "phase_starts": self.phase_starts,
            "probe_curve": self.probes.curve(),
            "best_probe": asdict(self.probes.best) if self.probes.best else None,
            "seconds": round(self.seconds, 2),
        }
