"""LoKr beside LoRA: the Kronecker ΔW against a hand-written reference (CI cannot fetch ComfyUI; the real loader is
checked by scripts/check_lokr_comfy.py), forward hooks = weight wrappers, a fresh LoKr changes nothing, gradients
reach every factor, alpha changes keep ΔW, the LyCORIS file round trip, bit-identical resume, and the metadata that
names the family and the adapter."""

from __future__ import annotations

import json

import pytest
import torch
from identitylock.core.errors import IdentityLockError
from identitylock.core.families import FAMILIES
from identitylock.core.training.checkpoint import TrainingStateError
from identitylock.core.training.convergence import ControllerConfig
from identitylock.core.training.lokr import LoKrModule, factorization
from identitylock.core.training.lora_format import build_metadata, read_metadata, save_lora
from identitylock.core.training.network import LoRANetwork
from identitylock.core.training.phases import Phase, Schedule
from identitylock.core.training.presets import TrainConfig
from identitylock.core.training.trainer import Trainer

from .test_training_schedule import _Backend, _data, _Denoiser

# (in, out, rank, factor, decompose_both) -> which factors are low-rank, for the cases below
CASES = {
    "full w1, full w2": (32, 48, 4, -1, False),
    "full w1, low-rank w2": (64, 48, 4, 4, False),
    "low-rank w1 and w2": (256, 192, 2, 16, True),
}


def _randomised(mod: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return mod


def _kron_reference(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """ΔW[i·c + k, j·d + l] = w1[i, j] · w2[k, l], written out element by element (no torch.kron)."""
    a, b = w1.shape
    c, d = w2.shape
    out = torch.empty(a * c, b * d, dtype=torch.float64)
    for i in range(a):
        for j in range(b):
            for k in range(c):
                for l in range(d):  # noqa: E741
                    out[i * c + k, j * d + l] = float(w1[i, j]) * float(w2[k, l])
    return out


def test_factorization_follows_lycoris_and_comfyui():
    """The factor shapes must be LyCORIS's/ComfyUI's or a file would rebuild another ΔW. Values: the examples table
    of their ``factorization`` docstring, except 360 at -1 and 16, where the table is stale and their code (ComfyUI
    0.8's comfy.weight_adapter.base.factorization, run once) gives (18, 20) and (15, 24); plus real model widths.
    scripts/check_lokr_comfy.py compares every dimension up to 4096 against ComfyUI's function itself."""
    table = {
        -1: {127: (1, 127), 128: (8, 16), 250: (10, 25), 360: (18, 20), 512: (16, 32), 1024: (32, 32),
             1280: (32, 40), 3072: (48, 64)},
        2: {127: (1, 127), 128: (2, 64), 250: (2, 125), 360: (2, 180), 512: (2, 256), 1024: (2, 512)},
        4: {127: (1, 127), 128: (4, 32), 250: (2, 125), 360: (4, 90), 512: (4, 128), 1024: (4, 256)},
        8: {127: (1, 127), 128: (8, 16), 250: (5, 50), 360: (8, 45), 512: (8, 64), 1024: (8, 128),
            3072: (8, 384)},
        16: {127: (1, 127), 128: (8, 16), 250: (10, 25), 360: (15, 24), 512: (16, 32), 1024: (16, 64),
             1280: (16, 80), 2560: (16, 160)},
    }  # fmt: skip
    for factor, rows in table.items():
        for dim, expected in rows.items():
            assert factorization(dim, factor) == expected, (dim, factor)


@pytest.mark.parametrize("case", CASES)
def test_fresh_lokr_leaves_the_model_unchanged(case):
    n_in, n_out, rank, factor, both = CASES[case]
    mod = LoKrModule(n_in, n_out, rank, 8.0, generator=torch.Generator().manual_seed(0), factor=factor,
                     decompose_both=both)  # fmt: skip
    assert torch.count_nonzero(mod.weight_delta()) == 0
    assert torch.count_nonzero(mod.delta(torch.randn(3, n_in))) == 0
    # ... while the other factor is a real Kaiming draw (not a degenerate all-zero adapter)
    assert torch.count_nonzero(mod.w1()) == mod.w1().numel()


@pytest.mark.parametrize("case", CASES)
def test_weight_delta_is_the_scaled_kron_of_the_factors(case):
    n_in, n_out, rank, factor, both = CASES[case]
    alpha = 3.0
    mod = _randomised(LoKrModule(n_in, n_out, rank, alpha, factor=factor, decompose_both=both))
    w1 = mod.lokr_w1_a @ mod.lokr_w1_b if both else mod.lokr_w1
    w2 = mod.lokr_w2 if case == "full w1, full w2" else mod.lokr_w2_a @ mod.lokr_w2_b
    # ComfyUI: alpha / rank once when a factor is low-rank, alpha ignored when both are full matrices
    scale = 1.0 if case == "full w1, full w2" else alpha / rank
    assert mod.scale == scale and mod.lowrank == (case != "full w1, full w2")
    ref = _kron_reference(w1.detach(), w2.detach()) * scale
    got = mod.weight_delta().detach().double()
    assert got.shape == (n_out, n_in)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6), float((got - ref).abs().max())


@pytest.mark.parametrize("case", CASES)
def test_forward_delta_equals_weight_delta(case):
    n_in, n_out, rank, factor, both = CASES[case]
    mod = _randomised(LoKrModule(n_in, n_out, rank, 5.0, factor=factor, decompose_both=both), seed=1)
    x = torch.randn(2, 7, n_in * 2)[..., ::2]  # batch dims and a non-contiguous input, as hooks can see
    ref = x @ mod.weight_delta().t()
    got = mod.delta(x)
    assert got.shape == (2, 7, n_out)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5), float((got - ref).abs().max())


def test_hooks_and_weight_wrappers_give_the_same_output():
    """The diffusers path (forward hooks, delta) and the ComfyUI path (weight wrappers, weight_delta) agree."""
    model = _Denoiser(dim=48)
    net = LoRANetwork(4, 4, seed=0, kind="lokr", factor=4)
    ((path, wrap),) = net.weight_wrappers(model, ["lin"])
    _randomised(net)
    x = torch.randn(5, 48)
    wrapped = torch.nn.functional.linear(x, wrap(model.lin.weight), model.lin.bias)
    net2 = LoRANetwork(4, 4, seed=0, kind="lokr", factor=4)
    net2.attach_hooks(model, ["lin"])
    net2.load_state_dict(net.state_dict())
    try:
        hooked = model.lin(x)
    finally:
        net2.detach_hooks()
    assert path == "lin.weight"
    assert torch.count_nonzero(wrapped - model.lin(x)) > 0
    assert torch.allclose(hooked, wrapped, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_gradients_reach_both_factors(case):
    """At init only the zero factor's gradient is non-zero (w1's is multiplied by w2 = 0, w2_a's by w2_b = 0);
    after one step every factor gets one."""
    n_in, n_out, rank, factor, both = CASES[case]
    mod = LoKrModule(n_in, n_out, rank, 8.0, generator=torch.Generator().manual_seed(2), factor=factor,
                     decompose_both=both)  # fmt: skip
    opt = torch.optim.SGD(mod.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(3)
    x, target = torch.randn(16, n_in, generator=g), torch.randn(16, n_out, generator=g)
    zero_name = "lokr_w2" if case == "full w1, full w2" else "lokr_w2_b"
    for step in range(2):
        opt.zero_grad()
        torch.nn.functional.mse_loss(mod.delta(x), target).backward()
        nonzero = {n for n, p in mod.named_parameters() if p.grad is not None and torch.count_nonzero(p.grad)}
        if step == 0:
            assert nonzero == {zero_name}
        else:
            assert nonzero == {n for n, _ in mod.named_parameters()}
        opt.step()


@pytest.mark.parametrize("case", CASES)
def test_set_alpha_keeps_weight_delta(case):
    n_in, n_out, rank, factor, both = CASES[case]
    net = LoRANetwork(rank, 8.0, kind="lokr", factor=factor, decompose_both=both)
    net.add("m", n_in, n_out)
    _randomised(net)
    before = net.loras["m"].weight_delta().detach().clone()
    net.set_alpha(2.0)
    mod = net.loras["m"]
    assert mod.alpha == net.alpha == 2.0
    assert mod.scale == (1.0 if case == "full w1, full w2" else 2.0 / rank)
    assert torch.allclose(mod.weight_delta(), before, rtol=1e-6, atol=1e-7)


def test_lokr_file_round_trip_and_kind_checks(tmp_path):
    net = LoRANetwork(2, 6.0, seed=1, kind="lokr", factor=2, decompose_both=True)
    net.add("lora_unet_a", 64, 32)  # 64 = 2·32, 32 = 2·16: low-rank w2, full w1 (rank 2 !< max(2, 2) / 2)
    net.add("lora_unet_b", 4, 4)  # 2x2 factors: full w1 and w2
    _randomised(net)
    sd = net.kohya_state_dict()
    assert sorted(sd) == [
        "lora_unet_a.alpha", "lora_unet_a.lokr_w1", "lora_unet_a.lokr_w2_a", "lora_unet_a.lokr_w2_b",
        "lora_unet_b.alpha", "lora_unet_b.lokr_w1", "lora_unet_b.lokr_w2",
    ]  # fmt: skip
    info = {"family": "zimage", "rank": 2, "alpha": 6.0, "target_modules": "attn", **net.adapter_info()}
    path = save_lora(tmp_path / "l.safetensors", sd, info)
    from safetensors.torch import load_file

    loaded = load_file(str(path))
    back = LoRANetwork(2, 1.0, seed=99, kind="lokr", factor=2, decompose_both=True)
    back.add("lora_unet_a", 64, 32)
    back.add("lora_unet_b", 4, 4)
    back.load_kohya_state_dict(loaded)
    assert back.alpha == 6.0
    for name in ("lora_unet_a", "lora_unet_b"):
        assert torch.equal(back.loras[name].weight_delta(), net.loras[name].weight_delta())
    meta = read_metadata(path)
    assert meta["adapter"] == "lokr" and meta["factor"] == 2 and meta["family"] == "zimage"
    # a LoRA file into a LoKr network (and a LoRA state into LoKr) is one sentence, not a KeyError
    lora = LoRANetwork(2, 6.0)
    lora.add("lora_unet_a", 64, 32)
    with pytest.raises(TrainingStateError, match="holds a LORA adapter but this run trains a LOKR"):
        back.load_kohya_state_dict(lora.kohya_state_dict())
    with pytest.raises(TrainingStateError, match="holds a LOKR adapter but this run trains a LORA"):
        lora.load_state_dict(back.state_dict())
    with pytest.raises(IdentityLockError, match="adapter type 'loha'"):
        LoRANetwork(2, 2, kind="loha")
    with pytest.raises(IdentityLockError, match="LoKr factor 0"):
        LoRANetwork(2, 2, kind="lokr", factor=0)


def _trainer(kind, ckpt=None, cancel_after=None):
    model = _Denoiser()
    net = LoRANetwork(2, 4, seed=3, kind=kind, factor=4)
    net.attach_hooks(model, ["lin"])
    cfg = TrainConfig(
        rank=2, alpha=4, batch_size=4, seed=3, val_every=4,
        schedule=Schedule([Phase("COARSE", lr=3e-2, alpha=4, min_steps=6, max_steps=6),
                           Phase("FINE", lr=1e-2, alpha=2, min_steps=6, max_steps=6)], adaptive=False),
        controller=ControllerConfig(window=4),
    )  # fmt: skip
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        if cancel_after is not None and calls["n"] > cancel_after:
            raise KeyboardInterrupt

    return net, Trainer(net, _Backend(model), _data(), cfg, check_cancel=cancel, checkpoint_path=ckpt)


def test_lokr_resume_is_bit_identical_and_refuses_a_lora_state(tmp_path):
    """An interrupted LoKr run resumed from its state ends with exactly the uninterrupted run's factors and losses,
    across a phase change (alpha 4 -> 2 rescales w2_b)."""
    net, full = _trainer("lokr")
    ref = full.run()
    ref_state = {k: v.clone() for k, v in net.state_dict().items()}
    net.detach_hooks()
    assert torch.count_nonzero(net.loras["lora_unet_lin"].weight_delta()) > 0  # it trained
    ckpt = tmp_path / "run.pt"
    net, first = _trainer("lokr", ckpt, cancel_after=8)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    net.detach_hooks()
    net, resumed = _trainer("lokr", ckpt)
    resumed.resume()
    res = resumed.run()
    net.detach_hooks()
    assert res.losses == ref.losses and res.final_val_loss == ref.final_val_loss
    for k, v in net.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    net, other = _trainer("lora", ckpt)
    with pytest.raises(TrainingStateError, match="holds a LOKR adapter"):
        other.resume()
    net.detach_hooks()


@pytest.mark.parametrize("kind", ["lora", "lokr"])
def test_resume_with_other_adapter_shapes_is_one_sentence(kind):
    """Regression: a state saved at another rank (or LoKr factor) stopped resume with torch's "size mismatch"
    RuntimeError traceback; now it is a TrainingStateError saying what to change."""
    saved = LoRANetwork(4, 4, kind=kind, factor=4)
    saved.add("lora_unet_lin", 32, 32)
    other = LoRANetwork(2, 4, kind=kind, factor=4)
    other.add("lora_unet_lin", 32, 32)
    with pytest.raises(TrainingStateError, match="other shapes than this run's .*rank, LoKr factor"):
        other.load_state_dict(saved.state_dict())


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("adapter", ["lora", "lokr"])
def test_metadata_names_family_adapter_and_targets(family, adapter):
    fam = FAMILIES[family]
    info = {"family": family, "rank": 16, "alpha": 16.0, "trigger_word": "lsaperson", "target_modules": "attn_ff",
            "adapter": adapter, "factor": 8}  # fmt: skip
    meta = build_metadata(info)
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    arch = meta["modelspec.architecture"]
    assert arch.split("/")[0] == fam.modelspec.split("/")[0] and arch.endswith("/" + adapter)
    assert meta["modelspec.implementation"] and meta["modelspec.title"] == f"lsaperson ({fam.label})"
    assert json.loads(meta["identitylock.target_modules"]) == list(fam.target_suffixes("attn_ff"))
    assert meta["identitylock.target_scope"] == "attn_ff"
    if adapter == "lokr":
        assert meta["ss_network_module"] == "lycoris.kohya"
        assert json.loads(meta["ss_network_args"]) == {"algo": "lokr", "factor": "8"}
    else:
        assert meta["ss_network_module"] == "networks.lora" and "ss_network_args" not in meta
    kohya = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0", "flux1": "flux1"}
    if family in kohya:
        assert meta["ss_base_model_version"] == kohya[family]
    # everything files carried before is still there
    assert meta["ss_network_dim"] == "16" and meta["ss_network_alpha"] == "16.0"
    assert meta["identitylock.trigger_word"] == "lsaperson" and meta["identitylock.format"] == "1"


def test_metadata_without_family_is_unchanged_and_bad_values_are_refused():
    meta = build_metadata({"rank": 4, "alpha": 4.0})
    assert meta == {"identitylock.format": "1", "identitylock.rank": "4", "identitylock.alpha": "4.0",
                    "ss_network_dim": "4", "ss_network_alpha": "4.0", "ss_network_module": "networks.lora"}  # fmt: skip
    assert json.loads(
        build_metadata({"family": "flux1", "target_modules": ["linear1"]})["identitylock.target_modules"]
    ) == ["linear1"]
    with pytest.raises(IdentityLockError, match="unknown model family 'sd9'"):
        build_metadata({"family": "sd9"})
    with pytest.raises(IdentityLockError, match="adapter type 'loha'"):
        build_metadata({"adapter": "loha"})
    with pytest.raises(IdentityLockError, match="target scope 'all'"):
        build_metadata({"family": "sdxl", "target_modules": "all"})
