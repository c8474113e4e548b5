"""What the CLI and the ComfyUI node do around the Trainer, once: the config from option/widget values, where the
training state lives, whether a saved state may be resumed or replaced, output checks before any work, the
progress glue and which LoRA weights are saved.

Why here and not in the node: the node used to hold this as a 150-line closure with no test of its own, and the
CLI had its own copy of half of it. Each piece is a small function with a test; the node and the CLI only say
how their user spells things (``--resume`` versus the ``resume`` widget).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import IdentityLockError
from ..fileio import OutputPathError, check_output_file
from .checkpoint import TrainingStateError, check_state, load_checkpoint
from .convergence import ControllerConfig
from .phases import Phase
from .presets import Preset, TrainConfig, config_for

STATE_SUFFIX = ".state.pt"


@dataclass(frozen=True)
class Spelling:
    """How the user asks to continue or to start over (CLI flags or node widgets), for error messages."""

    resume: str = "pass --resume"
    overwrite: str = "pass --overwrite"


CLI = Spelling()
NODE = Spelling(resume="set the resume widget to true", overwrite="set the overwrite widget to true")


def build_config(
    preset: str | Preset,
    num_images: int,
    *,
    schedule: str = "adaptive",
    phases: list[Phase] | None = None,
    seed: int = 0,
    rank: int = 0,
    checkpoint_every: int = 100,
    probe_every: int = 0,
    window: int = 50,
    patience: int = 3,
    p_threshold: float = 0.5,
    significance: float = 0.05,
    min_val_gain: float = 0.02,
    exit_on: str = "validation",
) -> TrainConfig:
    """TrainConfig from the values a user sets (CLI options or node widgets); ``rank`` 0 keeps the preset's.

    Out-of-range values (a prompt sent to the API skips the widgets' limits) raise one sentence.
    """
    if schedule not in ("adaptive", "fixed"):
        raise IdentityLockError(f"schedule must be 'adaptive' or 'fixed' (got {schedule!r})")
    if int(rank) < 0 or int(checkpoint_every) < 0 or int(probe_every) < 0:
        raise IdentityLockError("rank, checkpoint_every and probe_every must be >= 0")
    try:
        controller = ControllerConfig(
            window=int(window), patience=int(patience), p_threshold=float(p_threshold),
            significance=float(significance), exit_on=exit_on, min_val_gain=float(min_val_gain),
        )  # fmt: skip
        cfg = config_for(
            preset, num_images, adaptive=schedule == "adaptive", phases=phases, seed=int(seed),
            checkpoint_every=int(checkpoint_every), probe_every=int(probe_every), controller=controller,
        )  # fmt: skip
    except ValueError as exc:
        raise IdentityLockError(str(exc)) from None
    if rank:
        cfg.rank = cfg.alpha = int(rank)
    return cfg


#: Steps between identity probes when an identity is given and no interval is: K renders of 20 sampler steps
#: each cost about 13 % on top of 200 training steps.
AUTO_PROBE_EVERY = 200


def probe_interval(
    probe_every: int, has_identity: bool, needs: str = "an IDENTITY input (IdentityEmbed)"
) -> int:
    """Steps between identity probes: ``probe_every``, or :data:`AUTO_PROBE_EVERY` when it is 0 and an identity
    is given.

    Why: the probe is what keeps the lowest-drift state; with an identity wired and the interval left at 0 the run
    used to save its last state, whatever the identity said. An interval without an identity is an error.
    """
    probe_every = int(probe_every)
    if probe_every < 0:
        raise IdentityLockError(f"probe_every must be >= 0 (got {probe_every})")
    if probe_every and not has_identity:
        raise IdentityLockError(f"probe_every > 0 needs {needs}")
    return probe_every or (AUTO_PROBE_EVERY if has_identity else 0)


def node_state_path(output_dir: str | os.PathLike, lora_file: str) -> Path:
    """Where the node keeps the training state of ``lora_file``: ``<output>/identitylock_training/<file>.state.pt``."""
    return Path(output_dir) / "identitylock_training" / (lora_file + STATE_SUFFIX)


def cli_state_path(out: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Path:
    """``--checkpoint`` or ``OUT.state.pt``."""
    return Path(checkpoint) if checkpoint else Path(str(out) + STATE_SUFFIX)


def check_outputs(
    lora_path: str | os.PathLike,
    state_path: str | os.PathLike,
    *,
    resume: bool,
    overwrite: bool,
    spelling: Spelling = CLI,
) -> None:
    """Before any work: the run may use these outputs, and both can be written.

    - a saved training state is continued only on ``resume`` and discarded only on ``overwrite``: a new run used
      to replace an interrupted run's state at its first checkpoint without a word (step 25 back to step 5);
    - an existing LoRA file is replaced only on ``overwrite``, or by the run that writes it (``resume``);
    - both folders are writable and neither path is a folder: these used to fail after the training steps.
    """
    lora, state = Path(lora_path), Path(state_path)
    start_over = f"{spelling.overwrite} to start over"
    if resume and overwrite:
        raise TrainingStateError(
            f"resume and overwrite contradict each other: {spelling.resume} to continue the saved run, or "
            f"{start_over}, not both"
        )
    if resume and not state.is_file():
        raise TrainingStateError(
            f"nothing to resume: there is no saved training state at {state}; start a new run without resume"
        )
    if state.is_file() and not (resume or overwrite):
        raise TrainingStateError(
            f"a saved training state exists at {state} (an interrupted or finished run with this output): "
            f"{spelling.resume} to continue it, or {start_over}"
        )
    if lora.exists() and not lora.is_dir() and not (resume or overwrite):
        raise OutputPathError(
            f"the LoRA file {lora} already exists: {spelling.overwrite} to replace it, or choose another name"
        )
    check_output_file(lora, overwrite=True, what="LoRA file")
    check_output_file(state, overwrite=True, what="training-state file")


def saved_state(state_path: str | os.PathLike, *, resume: bool, spelling: Spelling = CLI) -> dict | None:
    """The saved state to continue when ``resume`` (checked by :func:`check_outputs` first), else None."""
    if not resume:
        return None
    start_over = f"{spelling.overwrite} to start over"
    return check_state(load_checkpoint(state_path, start_over=start_over), state_path, start_over)


def step_status(info: Any) -> dict[str, Any]:
    """The per-step message the web extension plots (identitylock.train)."""
    return {
        "phase": info.phase, "step": info.step, "loss": info.loss, "lr": info.lr, "slope": info.slope,
        "p_value": info.p_value, "eta_seconds": round(info.eta_seconds, 1), "val_loss": info.val_loss,
        "max_steps": info.max_total_steps,
    }  # fmt: skip


class StepReporter:
    """``Trainer.on_step`` for a UI: advance a progress bar, attach a loss-curve preview every ``preview_every``
    steps and at validations (a PIL drawing, about a millisecond), and send the step status.

    ``bar`` has ``total`` and ``update(n, preview)``; ``send(payload)`` delivers the status; ``snapshot()``
    returns the run so far (``Trainer.snapshot``; set after the trainer exists, since the trainer needs this).
    """

    def __init__(self, bar: Any, send: Callable[[dict[str, Any]], None], preview_every: int = 10):
        self.bar, self.send, self.preview_every = bar, send, preview_every
        self.snapshot: Callable[[], Any] | None = None

    def __call__(self, info: Any) -> None:
        from .report import loss_curve_image

        self.bar.total = max(1, info.max_total_steps)
        preview = None
        if self.snapshot is not None and (
            info.step % self.preview_every == 0 or info.val_loss is not None or info.step == 1
        ):
            preview = loss_curve_image(self.snapshot(), 400, 200)
        self.bar.update(1, preview)
        self.send(step_status(info))


def lora_to_save(network: Any, result: Any, keep_best_probe: bool = True) -> tuple[dict, dict[str, Any]]:
    """(kohya state dict, extra metadata) to write: the best identity probe's weights, else the final ones.

    With the best probe the network is set to those weights too, so the model handed back matches the file. When
    no probe found a face at all, every median is the no-face drift 1.0 and "best" would just be the first probe:
    the final weights are kept and ``extra["probe_note"]`` says why.
    """
    state = network.kohya_state_dict()
    extra: dict[str, Any] = {}
    best = result.probes.best
    if keep_best_probe and result.probes.best_state is not None:
        if best.faces_found == 0:
            extra["probe_note"] = (
                "no probe sample showed a face, so drift could not choose: final weights kept"
            )
        else:
            state = result.probes.best_state
            extra["selected"] = f"best identity probe at step {best.step}"
            network.load_kohya_state_dict(state)
    extra["alpha"] = float(network.alpha)
    return state, extra
