"""Issue 12 item 2: a NaN/inf loss or gradient never reaches the weights or a file on disk.

Regression: the optimizer stepped before the loss was checked and the error path then saved over the checkpoint:
NaN at step 5 left a file labelled step 4 holding NaN weights, so resume could not recover. Small linear denoiser
on CPU (the one of test_training_schedule), NaN/inf injected at chosen training steps.
"""

from __future__ import annotations

import math

import pytest
import torch
from identitylock.core.training.checkpoint import history, load_checkpoint
from identitylock.core.training.convergence import ControllerConfig
from identitylock.core.training.network import LoRANetwork
from identitylock.core.training.phases import Phase, Schedule
from identitylock.core.training.presets import TrainConfig
from identitylock.core.training.safety import GuardConfig, NonFiniteTrainingError, NonFiniteWeightsError
from identitylock.core.training.trainer import Trainer

from .test_training_schedule import _Backend, _data, _Denoiser

LR = 1e-2


class _Faulty(_Backend):
    """NaN in the prediction (-> loss) at training steps ``loss_at``, inf in its gradient at ``grad_at``."""

    def __init__(self, model, loss_at=(), grad_at=()):
        super().__init__(model)
        self.loss_at, self.grad_at = set(loss_at), set(grad_at)
        self.trainer: Trainer | None = None

    def predict(self, latents, cond, noise, u):
        pred, target = super().predict(latents, cond, noise, u)
        if torch.is_grad_enabled() and self.trainer is not None:  # a training step (validation runs no_grad)
            step = self.trainer.step + 1
            if step in self.loss_at:
                pred = pred * float("nan")
            if step in self.grad_at:
                pred.register_hook(lambda g: g * float("inf"))
        return pred, target


def _trainer(backend_kw, ckpt=None, cancel_after=None, steps=12, guard=None, keep=2, on_step=None):
    model = _Denoiser()
    net = LoRANetwork(4, 4, seed=1)
    net.attach_hooks(model, ["lin"])
    cfg = TrainConfig(
        rank=4, alpha=4, batch_size=4, seed=1, val_every=4, checkpoint_every=2,
        schedule=Schedule([Phase("COARSE", lr=LR, alpha=4, min_steps=steps, max_steps=steps)], adaptive=False),
        controller=ControllerConfig(window=4),
    )  # fmt: skip
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        if cancel_after is not None and calls["n"] > cancel_after:
            raise KeyboardInterrupt

    backend = _Faulty(model, **backend_kw)
    tr = Trainer(net, backend, _data(), cfg, check_cancel=cancel, checkpoint_path=ckpt, guard=guard,
                 keep_checkpoints=keep, on_step=on_step)  # fmt: skip
    backend.trainer = tr
    return net, tr


def _finite_file(path) -> dict:
    state = load_checkpoint(path)
    assert all(bool(torch.isfinite(v).all()) for v in state["network"].values()), path
    for s in (state["optimizer"] or {}).get("state", {}).values():
        assert all(bool(torch.isfinite(v).all()) for v in s.values() if torch.is_tensor(v)), path
    return state


def test_nonfinite_steps_are_skipped_and_every_saved_state_is_finite_and_resumable(tmp_path):
    faults = {"loss_at": {5}, "grad_at": {8}}
    net, ref_tr = _trainer(faults)
    ref = ref_tr.run()
    assert ref.bad_steps == [5, 8] and ref.steps == 12 + 2 and len(ref.losses) == 12
    assert all(math.isfinite(v) for v in ref.losses) and math.isfinite(ref.final_val_loss)
    ref_state = {k: v.clone() for k, v in net.state_dict().items()}
    assert all(bool(torch.isfinite(v).all()) for v in ref_state.values())
    net.detach_hooks()

    ckpt = tmp_path / "run.state.pt"
    net, first = _trainer(faults, ckpt, cancel_after=9)  # cancelled before step 10: after both bad steps
    with pytest.raises(KeyboardInterrupt):
        first.run()
    net.detach_hooks()
    kept = history(ckpt)
    assert [s for s, _ in kept] == [8]  # keep_checkpoints=2: the newest (step 9) plus the one before it
    assert _finite_file(ckpt)["step"] == 9 and _finite_file(kept[0][1])["step"] == 8
    assert _finite_file(ckpt)["guard"]["bad_steps"] == [5, 8]
    # resume from the newest and from the older kept state: both finish exactly as the uninterrupted run
    for source in (ckpt, kept[0][1]):
        net, resumed = _trainer(faults, tmp_path / f"again_{source.name}")
        resumed.resume(source)
        res = resumed.run()
        assert (
            res.losses == ref.losses and res.final_val_loss == ref.final_val_loss and res.bad_steps == [5, 8]
        )
        for k, v in net.state_dict().items():
            assert torch.equal(v, ref_state[k]), (source, k)
        net.detach_hooks()
    for f in tmp_path.glob("*.pt"):
        _finite_file(f)


def test_repeated_nonfinite_steps_lower_the_lr_then_stop_with_a_clear_message(tmp_path):
    guard = GuardConfig(reduce_after=2, reduce_factor=0.5, stop_after=5)
    lrs = []
    net, tr = _trainer(
        {"loss_at": {3, 4}}, guard=guard, on_step=lambda info: lrs.append((info.step, info.lr))
    )
    res = tr.run()
    net.detach_hooks()
    assert res.bad_steps == [3, 4]
    assert lrs[1] == (2, LR) and lrs[2] == (5, pytest.approx(LR * 0.5))  # lowered after 2 bad steps in a row

    ckpt = tmp_path / "run.state.pt"
    net, tr = _trainer({"loss_at": set(range(3, 100))}, ckpt, guard=guard)
    with pytest.raises(NonFiniteTrainingError) as err:
        tr.run()
    net.detach_hooks()
    msg = str(err.value)
    assert msg.startswith(
        "training stopped at step 7 in phase COARSE: the loss or its gradients were NaN/inf"
    )
    assert "5 steps in a row" in msg and "lower the learning rate" in msg and "\n" not in msg
    assert tr.guard.bad_steps == [3, 4, 5, 6, 7] and tr.guard.lr_scale == 0.25
    state = _finite_file(ckpt)  # the state written on the way out is finite: resumable
    assert state["step"] == 7 and state["guard"]["lr_scale"] == 0.25


def test_a_state_with_nonfinite_weights_is_never_written(tmp_path):
    ckpt = tmp_path / "run.state.pt"
    net, tr = _trainer({}, ckpt, steps=4)
    tr.run()
    good = ckpt.read_bytes()
    with torch.no_grad():
        next(iter(net.parameters()))[0, 0] = float("nan")
    assert tr.save_checkpoint() is None
    assert ckpt.read_bytes() == good
    net.detach_hooks()


def test_a_lora_with_nonfinite_weights_is_never_written(tmp_path):
    from identitylock.core.training.lora_format import save_lora

    out = tmp_path / "bad.safetensors"
    with pytest.raises(NonFiniteWeightsError, match="not writing the LoRA file bad.safetensors"):
        save_lora(out, {"a.lora_up.weight": torch.tensor([[1.0, float("inf")]])}, {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("keep", [1, 3])
def test_only_the_last_n_states_are_kept(tmp_path, keep):
    ckpt = tmp_path / "run.state.pt"
    net, tr = _trainer({}, ckpt, steps=12, keep=keep)
    tr.run()
    net.detach_hooks()
    assert [s for s, _ in history(ckpt)] == {1: [], 3: [8, 10]}[keep]
    assert load_checkpoint(ckpt)["step"] == 12
    assert len(list(tmp_path.iterdir())) == keep


def test_resuming_from_an_older_kept_state_keeps_every_file_labelled_with_its_own_step(tmp_path):
    ckpt = tmp_path / "run.state.pt"
    net, first = _trainer({}, ckpt, cancel_after=9, keep=10)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    net.detach_hooks()
    older = history(ckpt)[1][1]  # step 4 (2, 4, 6, 8 kept); the newest file holds step 9
    net, again = _trainer({}, ckpt, keep=10)
    again.resume(older)
    again.run()
    net.detach_hooks()
    for step, f in history(ckpt):
        assert load_checkpoint(f)["step"] == step, f.name
    assert load_checkpoint(ckpt)["step"] == 12
