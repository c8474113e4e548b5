"""The training loop shared by every backend: phases, convergence exits, validation, probes, checkpoints.

The records the loop fills and returns (TrainData, PhaseExit, StepInfo, TrainResult, the Backend protocol) live
in records.py, so the reports, the dataset builder and the UIs read them without the loop; they are re-exported
here. What stays is one class whose methods share its state (step, phase, optimizer, controller, RNG): the
phase machine, the step, validation, and state save/restore must change together for resume to stay
bit-identical, so they are not split further.

A backend only has to turn (latents, conditioning, noise, timestep fraction) into (prediction, target); the
diffusers backend predicts epsilon/v with a DDPM schedule, the ComfyUI backend predicts x0 through the model's
own sampling object. Randomness is derived from (seed, step), so a resumed run repeats exactly what an
uninterrupted run would have done.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .checkpoint import adopt_saved_seed, load_checkpoint, save_checkpoint
from .convergence import ConvergenceController, ImprovementTest, exit_message, improvement_test, skip_message
from .distributed import Collective, default_collective
from .losses import make_loss
from .network import LoRANetwork
from .optimizers import make_optimizer
from .phases import Phase
from .precision import autocast, make_scaler, master_fp32, release_memory, resolve_precision
from .presets import TrainConfig
from .probe import ProbeTracker
from .records import Backend, PhaseExit, StepInfo, TrainData, TrainResult
from .safety import GuardConfig, NonFiniteGuard, check_gradients_reach, nonfinite_keys

__all__ = [
    "VAL_TIMESTEP_FRACTIONS",
    "Backend",
    "PhaseExit",
    "StepInfo",
    "TrainData",
    "TrainResult",
    "Trainer",
]

_log = logging.getLogger("IdentityLock.training")

VAL_TIMESTEP_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


class Trainer:
    """Runs a Schedule over a LoRANetwork attached to a model through ``backend``."""

    def __init__(
        self,
        network: LoRANetwork,
        backend: Backend,
        data: TrainData,
        config: TrainConfig,
        *,
        on_step: Callable[[StepInfo], None] | None = None,
        check_cancel: Callable[[], None] | None = None,
        checkpoint_path: str | Path | None = None,
        probe: Callable[[], list] | None = None,
        grad_sync: Callable[[list[torch.Tensor]], None] | None = None,
        rank_offset: int = 0,
        collective: Collective | None = None,
        precision: str = "auto",
        keep_checkpoints: int = 2,
        guard: GuardConfig | None = None,
    ):
        """``precision``: 'auto' (bf16 autocast on a CUDA device with bf16, fp16 + grad scaler on an older one,
        fp32 on CPU), 'fp32', 'bf16' or 'fp16'; the LoRA weights are fp32 in every case. ``keep_checkpoints``:
        training states kept on disk (the newest at ``checkpoint_path``). ``collective``: how processes agree
        (default: torch.distributed's group when one is up). ``guard``: when non-finite steps lower the lr / stop.
        """
        if data.latents.shape[0] < 1:
            raise ValueError("no training images")
        if data.val_latents.shape[0] < 1:
            raise ValueError("no validation images")
        self.network, self.backend, self.data, self.config = network, backend, data, config
        self.phases: list[Phase] = list(config.schedule.phases)
        self.on_step, self.check_cancel, self.probe = on_step, check_cancel, probe
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.grad_sync, self.rank_offset = grad_sync, rank_offset
        self.collective = collective if collective is not None else default_collective()
        self.precision = resolve_precision(precision, backend.device)
        self.scaler = make_scaler(self.precision, backend.device)
        master_fp32(self.network.parameters())
        self.keep_checkpoints = max(1, int(keep_checkpoints))
        self._saved_step: int | None = (
            None  # the step the file at checkpoint_path holds (None: not this run's)
        )
        self.guard = NonFiniteGuard(guard or GuardConfig())
        self.controller = ConvergenceController(config.controller)
        self.controller.validation_available = bool(config.val_every)  # also after resume mid-phase
        self.probes = ProbeTracker()
        self.step = 0
        self.phase_index = 0
        self.phase_started = False
        self.optimizer: torch.optim.Optimizer | None = None
        self.losses: list[float] = []
        self.val_losses: list[tuple[int, float]] = []
        self.exits: list[PhaseExit] = []
        self.phase_starts: list[tuple[int, str]] = []
        self.skipped: list[str] = []
        self.skip_reason = ""
        self._phase_start_val: list[float] | None = None  # per-item validation losses at the phase start
        self.controller_seconds = 0.0
        self._grad_checked = False
        self._val_noise, self._val_u = self._make_val_noise()

    # -- randomness ------------------------------------------------------------------------------------------
    def _step_seed(self, step: int) -> int:
        return (int(self.config.seed) * 1_000_003 + step * 7919 + self.rank_offset * 104_729) % (2**63 - 1)

    def _make_val_noise(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(int(self.config.seed) + 12_345)
        k = len(VAL_TIMESTEP_FRACTIONS)
        m = self.data.val_latents.shape[0]
        noise = torch.randn((m * k, *self.data.val_latents.shape[1:]), generator=g)
        u = torch.tensor(VAL_TIMESTEP_FRACTIONS, dtype=torch.float32).repeat(m)
        return noise, u

    # -- phases ---------------------------------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        return self.phases[self.phase_index]

    def _start_phase(self) -> None:
        ph = self.phase
        if self._phase_start_val is None:
            self._phase_start_val = self._agreed_items()
            if not self.val_losses or self.val_losses[-1][0] != self.step:
                self.val_losses.append((self.step, sum(self._phase_start_val) / len(self._phase_start_val)))
        self.network.set_alpha(ph.alpha if ph.alpha is not None else self.config.alpha)
        params = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(
            ph.optimizer, params, ph.lr, ph.weight_decay, str(self.backend.device)
        )
        if self.config.schedule.adaptive:
            self.controller.start_phase(ph.min_steps, ph.max_steps)
        else:
            self.controller.start_phase(ph.max_steps, ph.max_steps)
        if self.config.val_every:  # the phase's first validation point: its start
            self.controller.update_validation(sum(self._phase_start_val) / len(self._phase_start_val), 0)
        self.phase_started = True
        self.phase_starts.append((self.step, ph.name))
        _log.info(
            "Phase %s: lr %g, alpha %g (scale %.4g), loss %s, optimizer %s",
            ph.name, ph.lr, self.network.alpha, self.network.alpha / self.network.rank, ph.loss, ph.optimizer,
        )  # fmt: skip

    def max_total_steps(self) -> int:
        return self.step + sum(
            p.max_steps - (self.controller.stats.steps if i == self.phase_index and self.phase_started else 0)
            for i, p in enumerate(self.phases)
            if i >= self.phase_index
        )

    # -- steps ----------------------------------------------------------------------------------------------
    def _train_step(self) -> tuple[float, bool]:
        """One optimizer step; returns (loss averaged over processes, whether the step was applied).

        The loss and the gradients are checked before the optimizer sees them: a NaN/inf step changes no weight
        and no optimizer moment (safety.py counts it)."""
        ph, cfg, dev = self.phase, self.config, self.backend.device
        loss_fn = make_loss(ph.loss, ph.huber_delta, ph.charbonnier_eps)
        seed = self._step_seed(self.step)
        g = torch.Generator().manual_seed(seed)
        n = self.data.latents.shape[0]
        fork_devices = [dev] if getattr(dev, "type", str(dev)) == "cuda" else []
        self.network.train()
        total = 0.0
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            for _ in range(cfg.grad_accum):
                idx = torch.randint(0, n, (cfg.batch_size,), generator=g)
                lat = self.data.latents[idx]
                noise = torch.randn(lat.shape, generator=g)
                u = torch.rand(cfg.batch_size, generator=g)
                with autocast(self.precision, dev):
                    pred, target = self.backend.predict(
                        lat.to(dev), self.data.cond[idx].to(dev), noise.to(dev, lat.dtype), u.to(dev)
                    )
                loss = loss_fn(pred.float(), target.float()) / cfg.grad_accum
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                total += float(loss.detach())
        grads = [p.grad for p in self.network.parameters() if p.grad is not None]
        (self.grad_sync or self.collective.sync_grads)(grads)
        total = self.collective.mean(total)
        lr = ph.lr_at(self.controller.stats.steps, ph.max_steps) * self.guard.lr_scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.scaler is not None:  # fp16: an overflow of the scaled gradients is the scaler's to skip
            self.scaler.unscale_(self.optimizer)
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        ok = bool(self.collective.broadcast(math.isfinite(total) and (finite or self.scaler is not None)))
        if ok and not self._grad_checked:
            check_gradients_reach(self.network.parameters())
            self._grad_checked = True
        if self.scaler is not None:
            if ok:
                self.scaler.step(self.optimizer)
            self.scaler.update()
        elif ok:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._last_lr = lr
        return total, ok

    def validation_loss(self) -> float:
        """MSE at fixed timesteps and fixed noise on the held-out images (comparable across phases and runs)."""
        items = self.validation_items()
        return sum(items) / len(items)

    @torch.no_grad()
    def validation_items(self) -> list[float]:
        """Per-item validation MSE, one value per (held-out image, fixed timestep), same noise every time.

        All items have the same size, so their mean is the validation loss; the items also give its standard
        error (the test of a phase's validation gain uses it).
        """
        dev = self.backend.device
        self.network.eval()
        k = len(VAL_TIMESTEP_FRACTIONS)
        lat = self.data.val_latents.repeat_interleave(k, dim=0)
        cond = self.data.val_cond.repeat_interleave(k, dim=0)
        items: list[float] = []
        for s in range(0, lat.shape[0], 8):
            with autocast(self.precision, dev):
                pred, target = self.backend.predict(
                    lat[s : s + 8].to(dev),
                    cond[s : s + 8].to(dev),
                    self._val_noise[s : s + 8].to(dev, lat.dtype),
                    self._val_u[s : s + 8].to(dev),
                )
            err = (pred.float() - target.float()) ** 2
            items += [float(v) for v in err.reshape(err.shape[0], -1).mean(dim=1)]
        self.network.train()
        return items

    def _agreed_items(self) -> list[float]:
        """Rank 0's validation items on every process (each rank computes its own; they may differ in the last
        bits, and every decision must be the same on all ranks)."""
        return self.collective.broadcast(self.validation_items())

    # -- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "config": self.config.to_dict(),
            "step": self.step,
            "phase_index": self.phase_index,
            "phase_started": self.phase_started,
            "network": {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()},
            "alpha": self.network.alpha,
            "optimizer": self.optimizer.state_dict() if (self.optimizer and self.phase_started) else None,
            "controller": self.controller.state_dict(),
            "losses": list(self.losses),
            "val_losses": list(self.val_losses),
            "exits": [asdict(e) for e in self.exits],
            "phase_starts": list(self.phase_starts),
            "skipped": list(self.skipped),
            "skip_reason": self.skip_reason,
            "phase_start_val": self._phase_start_val,
            "probes": self.probes.state_dict(),
            "rng": torch.get_rng_state(),
            "guard": self.guard.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError("checkpoint version not supported")
        if adopt_saved_seed(self.config, state):  # batches, noise and validation noise follow the saved run
            self._val_noise, self._val_u = self._make_val_noise()
        self.step = int(state["step"])
        self.phase_index = int(state["phase_index"])
        self.network.alpha = float(state["alpha"])
        for lora in self.network.loras.values():
            lora.alpha = self.network.alpha
        self.network.load_state_dict(state["network"])
        self.controller.load_state_dict(state["controller"])
        self.losses = list(state["losses"])
        self.val_losses = [tuple(v) for v in state["val_losses"]]
        self.exits = [PhaseExit(**e) for e in state["exits"]]
        self.phase_starts = [tuple(v) for v in state["phase_starts"]]
        self.skipped = list(state.get("skipped", []))
        self.skip_reason = state.get("skip_reason", "")
        self._phase_start_val = state.get("phase_start_val")
        self.probes.load_state_dict(state["probes"])
        torch.set_rng_state(state["rng"])
        self.guard.load_state_dict(state.get("guard"))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.phase_started = False
        if state["phase_started"] and self.phase_index < len(self.phases):
            ph = self.phase
            params = [p for p in self.network.parameters() if p.requires_grad]
            self.optimizer = make_optimizer(
                ph.optimizer, params, ph.lr, ph.weight_decay, str(self.backend.device)
            )
            if state.get("optimizer") is not None:
                self.optimizer.load_state_dict(state["optimizer"])
            self.phase_started = True

    def save_checkpoint(self) -> Path | None:
        """Write the state beside the previous one (kept: ``keep_checkpoints``); never a NaN/inf weight or moment:
        such a state is not written and the last good one stays."""
        if self.checkpoint_path is None:
            return None
        state = self.state_dict()
        bad = nonfinite_keys({"network": state["network"], "optimizer": state["optimizer"]})
        if bad:
            _log.error(
                "Training state at step %d not saved: %d tensors hold NaN/inf (first: %s); %s is kept",
                self.step, len(bad), bad[0], self.checkpoint_path,
            )  # fmt: skip
            return None
        prev = self._saved_step if self._saved_step != self.step else None
        path = save_checkpoint(self.checkpoint_path, state, keep=self.keep_checkpoints, previous_step=prev)
        self._saved_step = self.step
        return path

    def resume(self, path: str | Path | None = None, state: dict[str, Any] | None = None) -> None:
        """Continue from a saved state: ``state`` when already loaded, else the file ``path`` (default: the
        trainer's checkpoint path)."""
        self.load_state_dict(state if state is not None else load_checkpoint(path or self.checkpoint_path))
        same_file = state is not None or path is None or Path(path) == self.checkpoint_path
        # the step checkpoint_path holds (kept as history on the next save); None when resumed from another file
        self._saved_step = self.step if same_file else None
        _log.info(
            "Resumed at step %d (phase %s)",
            self.step,
            self.phase.name if self.phase_index < len(self.phases) else "done",
        )

    # -- loop -----------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg = self.config
        t0 = time.perf_counter()
        step_times: list[float] = []
        try:
            while self.phase_index < len(self.phases):
                if self.check_cancel is not None:
                    self.check_cancel()
                if not self.phase_started:
                    self._start_phase()
                ts = time.perf_counter()
                loss, ok = self._train_step()
                self.step += 1
                action = self.guard.judge(self.step, ok)
                if action != "ok":  # nothing was applied; raises after too many in a row
                    self.guard.apply(action, self.step, self.phase.name, self._last_lr, self._saved_path())
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
                    continue
                self.losses.append(loss)
                tc = time.perf_counter()
                decision = self.controller.update(loss)
                self.controller_seconds += time.perf_counter() - tc
                val = None
                if cfg.val_every and self.step % cfg.val_every == 0:
                    items = self._agreed_items()
                    val = sum(items) / len(items)
                    self.val_losses.append((self.step, val))
                    tc = time.perf_counter()
                    vdec = self.controller.update_validation(val, self.controller.stats.steps)
                    self.controller_seconds += time.perf_counter() - tc
                    if vdec.exit_phase and not decision.exit_phase:
                        decision = vdec
                decision = self.collective.broadcast(decision)  # rank 0 decides for all (distributed.py)
                if self.probe is not None and cfg.probe_every and self.step % cfg.probe_every == 0:
                    self._run_probe()
                step_times.append(time.perf_counter() - ts)
                if self.on_step is not None:
                    test = self.controller.last_test
                    recent = step_times[-50:]
                    self.on_step(
                        StepInfo(
                            step=self.step,
                            phase=self.phase.name,
                            phase_index=self.phase_index,
                            step_in_phase=self.controller.stats.steps,
                            loss=loss,
                            lr=self._last_lr,
                            slope=test.slope if test else None,
                            p_value=test.p_decreasing if test else None,
                            eta_seconds=(self.max_total_steps() - self.step) * (sum(recent) / len(recent)),
                            max_total_steps=self.max_total_steps(),
                            val_loss=val,
                        )
                    )
                if decision.exit_phase:
                    self._exit_phase(decision)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
        except BaseException:
            # cancel / crash between steps: keep everything done so far
            if self.checkpoint_path is not None and self.phase_index <= len(self.phases):
                if self.save_checkpoint() is not None:
                    _log.info("Checkpoint saved at step %d: %s", self.step, self.checkpoint_path)
            self._release()
            raise
        items = self._agreed_items()
        final_val = sum(items) / len(items)
        if not self.val_losses or self.val_losses[-1][0] != self.step:
            self.val_losses.append((self.step, final_val))
        if self.checkpoint_path is not None:
            self.save_checkpoint()
        self._release()
        return self.snapshot(final_val, time.perf_counter() - t0)

    def _saved_path(self) -> Path | None:
        return self.checkpoint_path if self._saved_step is not None else None

    def _release(self) -> None:
        """Drop what training allocated (optimizer moments, gradients, the device cache) when the run ends or is
        cancelled: ComfyUI keeps the process, and the next node needs the memory."""
        self.optimizer = None
        for p in self.network.parameters():
            p.grad = None
        release_memory(self.backend.device)

    def snapshot(self, final_val: float | None = None, seconds: float = 0.0) -> TrainResult:
        """The run so far as a TrainResult (for live previews of the loss curve); no extra model evaluation."""
        if final_val is None:
            final_val = self.val_losses[-1][1] if self.val_losses else float("nan")
        return TrainResult(
            steps=self.step, exits=list(self.exits), losses=list(self.losses), val_losses=list(self.val_losses),
            phase_starts=list(self.phase_starts), final_val_loss=final_val, probes=self.probes, seconds=seconds,
            controller_seconds=self.controller_seconds, skipped=list(self.skipped), skip_reason=self.skip_reason,
            bad_steps=list(self.guard.bad_steps),
        )  # fmt: skip

    def _exit_phase(self, decision) -> None:
        st = self.controller.stats
        test = decision.test
        items = self._agreed_items()
        val = sum(items) / len(items)
        imp: ImprovementTest | None = None
        tc = time.perf_counter()
        if self._phase_start_val is not None and len(self._phase_start_val) == len(items) >= 2:
            imp = improvement_test(
                self._phase_start_val,
                items,
                len(VAL_TIMESTEP_FRACTIONS),
                self.config.controller.min_val_gain,
                groups=self.data.val_groups or None,
            )
        self.controller_seconds += time.perf_counter() - tc
        ex = PhaseExit(
            phase=self.phase.name,
            step=self.step,
            steps_in_phase=st.steps,
            windows=st.windows,
            reason=decision.reason,
            p_value=test.p_decreasing if test else None,
            slope=test.slope if test else None,
            loss_mean=st.welford.mean,
            loss_std=st.welford.std,
            val_loss=val,
            val_start=imp.before if imp else None,
            val_p_value=imp.p_value if imp else None,
            train_p_value=self.controller.last_test.p_decreasing if self.controller.last_test else None,
            val_test=imp.describe() if imp else None,
        )
        self.exits.append(ex)
        if not self.val_losses or self.val_losses[-1][0] != self.step:
            self.val_losses.append((self.step, val))
        tp = f"; training-loss slope p={ex.train_p_value:.2f}" if ex.train_p_value is not None else ""
        tp += f"; {ex.val_test}" if ex.val_test else ""
        _log.info("%s%s", exit_message(ex.phase, ex.windows, ex.reason, test, ex.steps_in_phase), tp)
        self._phase_start_val = items  # the next phase starts from these weights (alpha change keeps outputs)
        ph = self.phase
        self.phase_index += 1
        self.phase_started = False
        self.optimizer = None
        rest = self.phases[self.phase_index :]
        if (
            imp is not None
            and rest
            and self.config.schedule.adaptive
            and imp.p_value > self.config.controller.significance
            and all(p.lr <= ph.lr for p in rest)
        ):
            self.skipped = [p.name for p in rest]
            self.skip_reason = skip_message(ph.name, self.skipped, imp)
            _log.info("%s", self.skip_reason)
            self.phase_index = len(self.phases)

    def _run_probe(self) -> None:
        self.network.eval()
        try:
            drifts = self.probe()
        finally:
            self.network.train()
        best = self.probes.record(
            self.step, self.phase.name, drifts, state_fn=lambda: self.network.kohya_state_dict()
        )
        rec = self.probes.records[-1]
        _log.info(
            "Probe at step %d: median drift %.3f%s", self.step, rec.median, " (best so far)" if best else ""
        )
