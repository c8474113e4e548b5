"""Issue 12 item 3: the trainer on a half-precision base model, bf16 autocast, gradient checkpointing, memory.

Regressions: an fp16 UNet could not be trained at all (fp32 latents into fp16 layers), an fp16 adapter would not
move at lr 5e-7 (the late phases), and a cancelled run kept its optimizer moments and gradients alive. Tiny
random SD-shaped UNet on CPU.
"""

from __future__ import annotations

import math

import pytest
import torch
from identitylock.core.training import diffusers_backend as db
from identitylock.core.training.network import LoRANetwork
from identitylock.core.training.phases import Phase, Schedule
from identitylock.core.training.presets import TARGETS, TrainConfig
from identitylock.core.training.trainer import TrainData, Trainer


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    from identitylock.core.training.tiny import tiny_components

    return tiny_components(0, tmp_path_factory.mktemp("tok"))


def _data(n_train=4, n_val=2):
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(n_train + n_val, 4, 8, 8, generator=g)
    cond = torch.randn(n_train + n_val, 77, 32, generator=g)
    return TrainData(lat[:n_train], cond[:n_train], lat[n_train:], cond[n_train:])


def _cfg(lr, steps, grad_accum=1):
    return TrainConfig(
        rank=4, alpha=4, val_every=0, grad_accum=grad_accum,
        schedule=Schedule([Phase("FINAL_FINE", lr=lr, alpha=4, min_steps=steps, max_steps=steps)], adaptive=False),
    )  # fmt: skip


def _unet(comps, dtype=torch.float32):
    import copy

    return copy.deepcopy(comps["unet"]).to(dtype)


def test_fp16_base_model_trains_an_fp32_lora_even_at_lr_5e_7(comps):
    unet = _unet(comps, torch.float16)
    net = LoRANetwork(4, 4, seed=0)
    net.attach_hooks(unet, TARGETS["attn_ff"])
    net.half()  # even handed an fp16 network, the trainer keeps fp32 master weights
    before = {k: v.detach().float().clone() for k, v in net.state_dict().items()}
    try:
        res = Trainer(net, db.DiffusersBackend(unet, comps["scheduler"]), _data(), _cfg(5e-7, 3)).run()
    finally:
        net.detach_hooks()
    assert all(math.isfinite(v) for v in res.losses) and res.bad_steps == []
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert all(p.dtype == torch.float16 for p in unet.parameters())  # no full-precision copy of the base
    moved = {k.rsplit(".", 1)[-1]: 0 for k in before}
    for k, v in net.state_dict().items():
        moved[k.rsplit(".", 1)[-1]] += int(torch.count_nonzero(v != before[k]))
    # up moves from step 1, down from step 2 (its gradient is up-weighted): both by ~5e-7 per step, which an
    # fp16 weight of size ~0.1 (spacing 6e-5) would round away
    assert moved["up"] > 0 and moved["down"] > 0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_autocast_runs_on_cpu(comps, precision):
    """bf16 autocast, and fp16 autocast with the grad scaler (its state travels in the training state)."""
    unet = _unet(comps)
    seen = []

    class Spy(db.DiffusersBackend):
        def predict(self, latents, cond, noise, u):
            t = (u * self.T).long().clamp_(0, self.T - 1)
            out = self.unet(self.scheduler.add_noise(latents, noise, t), t, cond).sample
            seen.append(out.dtype)
            return out, noise

    net = LoRANetwork(4, 4, seed=0)
    net.attach_hooks(unet, TARGETS["attn_ff"])
    try:
        tr = Trainer(net, Spy(unet, comps["scheduler"]), _data(), _cfg(1e-3, 3), precision=precision)
        res = tr.run()
    finally:
        net.detach_hooks()
    half = torch.bfloat16 if precision == "bf16" else torch.float16
    assert half in seen and all(math.isfinite(v) for v in res.losses) and res.bad_steps == []
    assert (tr.scaler is not None) == (precision == "fp16")
    assert (tr.state_dict()["scaler"] is not None) == (precision == "fp16")
    assert all(p.dtype == torch.float32 for p in net.parameters())


def _loss_and_grads(unet, net, comps, wrap=None):
    backend = db.DiffusersBackend(unet, comps["scheduler"])
    d = _data()
    g = torch.Generator().manual_seed(3)
    calls = {"n": 0}
    hook = next(m for n, m in unet.named_modules() if n.endswith("attn1.to_q")).register_forward_hook(
        lambda *a: calls.__setitem__("n", calls["n"] + 1)
    )
    undo = wrap(unet) if wrap else None
    try:
        with torch.enable_grad():
            pred, target = backend.predict(d.latents, d.cond, torch.randn(d.latents.shape, generator=g),
                                           torch.rand(4, generator=g))  # fmt: skip
            loss = torch.nn.functional.mse_loss(pred, target)
            loss.backward()
    finally:
        hook.remove()
        if undo:
            undo()
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    return float(loss.detach()), grads, calls["n"]


@pytest.mark.parametrize("how", ["diffusers", "blocks"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(comps, how):
    from identitylock.core.training.precision import checkpoint_blocks, enable_gradient_checkpointing

    unet = _unet(comps)
    net = LoRANetwork(4, 4, seed=0)
    net.attach_hooks(unet, TARGETS["attn_ff"])
    with torch.no_grad():
        for lora in net.loras.values():
            lora.up.normal_(0, 0.01)  # a trained-looking LoRA: both matrices get gradients
    try:
        loss0, g0, n0 = _loss_and_grads(unet, net, comps)
        wrap = enable_gradient_checkpointing if how == "diffusers" else checkpoint_blocks
        loss1, g1, n1 = _loss_and_grads(unet, net, comps, wrap)
    finally:
        net.detach_hooks()
    assert n1 == 2 * n0  # the blocks really ran again in the backward pass
    assert loss1 == pytest.approx(loss0, rel=1e-6)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-8)


class _Boom(db.DiffusersBackend):
    """Fails inside the second micro-batch of step 3: gradients of the first are already accumulated."""

    calls = 0

    def predict(self, *a):
        if torch.is_grad_enabled():
            type(self).calls += 1
            if type(self).calls == 6:
                raise KeyboardInterrupt
        return super().predict(*a)


@pytest.mark.parametrize("fail", [False, True])
def test_training_memory_is_released_when_the_run_ends_or_fails(comps, fail):
    import gc
    import weakref

    unet = _unet(comps)
    net = LoRANetwork(4, 4, seed=0)
    net.attach_hooks(unet, TARGETS["attn_ff"])
    _Boom.calls = -100 if not fail else 0
    tr = Trainer(net, _Boom(unet, comps["scheduler"]), _data(), _cfg(1e-3, 4, grad_accum=2))
    refs = []
    orig = tr._start_phase

    def spy():
        orig()
        refs.append(weakref.ref(tr.optimizer))

    tr._start_phase = spy
    try:
        if fail:
            with pytest.raises(KeyboardInterrupt):
                tr.run()
        else:
            tr.run()
    finally:
        net.detach_hooks()
    gc.collect()
    assert tr.optimizer is None and refs and refs[0]() is None  # optimizer and its moments are gone
    assert all(p.grad is None for p in net.parameters())


def test_comfy_backend_feeds_the_compute_dtype_not_the_fp8_storage_dtype():
    """ComfyUI keeps fp8 weights and computes in ``manual_cast_dtype``: inputs go in at the compute dtype (bf16
    here), and the trainer's precision follows it."""
    from types import SimpleNamespace

    from identitylock.core.families import get_family
    from identitylock.core.training.comfy_backend import CaptionConds, compute_dtype, sigma_backend
    from identitylock.core.training.precision import precision_for_dtype

    class Cond:  # stand-in for comfy.conds.CONDRegular
        def __init__(self, cond):
            self.cond = cond

        def process_cond(self, batch_size, **kwargs):
            return self

        def concat(self, others):
            return torch.cat([self.cond] + [o.cond for o in others])

    seen = []
    sampling = SimpleNamespace(percent_to_sigma=lambda p: 1.0 - p, noise_scaling=lambda s, n, x, m: x + n)
    model = SimpleNamespace(
        manual_cast_dtype=torch.bfloat16,
        apply_model=lambda x, s, c_crossattn: seen.append((x.dtype, c_crossattn.dtype)) or x,
    )
    mp = SimpleNamespace(model=model, model_dtype=lambda: torch.float8_e4m3fn,
                         get_model_object=lambda name: sampling)  # fmt: skip
    conds = CaptionConds(lambda caption: {"c_crossattn": Cond(torch.zeros(1, 3, 8))})
    backend = sigma_backend(mp, "cpu", conds, get_family("sd15"))
    pred, _ = backend.predict(
        torch.zeros(1, 4, 2, 2), conds.index(["a"]), torch.ones(1, 4, 2, 2), torch.tensor([0.5])
    )
    assert seen == [(torch.bfloat16, torch.bfloat16)] and pred.dtype == torch.float32
    assert compute_dtype(mp) == torch.bfloat16 and precision_for_dtype(compute_dtype(mp)) == "bf16"
    assert precision_for_dtype(torch.float16) == "fp16" and precision_for_dtype(torch.float32) == "auto"
