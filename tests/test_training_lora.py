"""LoRA file format and the trainer on a tiny randomly initialised SD-shaped UNet (CPU, offline).

Trains on a few shared face crops (lisa_* only, CC0, per SOURCES.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers  # noqa: F401
import numpy as np
import pytest
import torch
from identitylock.core.errors import IdentityLockError, ImageInputError  # noqa: E402
from identitylock.core.training import dataset as ds  # noqa: E402
from identitylock.core.training import diffusers_backend as db  # noqa: E402
from identitylock.core.training.lora_format import (  # noqa: E402
    check_lora_name,
    kohya_name,
    read_metadata,
    save_lora,
)
from identitylock.core.training.network import LoRANetwork, target_linears  # noqa: E402
from identitylock.core.training.phases import Phase, Schedule  # noqa: E402
from identitylock.core.training.presets import TARGETS, TrainConfig  # noqa: E402
from identitylock.core.training.probe import ProbeTracker, make_probe  # noqa: E402
from identitylock.core.training.trainer import Trainer  # noqa: E402

KEYMAP = Path(__file__).resolve().parent / "fixtures" / "comfyui" / "lora_keymap_sd15.json"


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    from identitylock.core.training.tiny import tiny_components

    return tiny_components(0, tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def face_crops(faces_dir):
    from identitylock.core.images import load_image

    out = []
    for f in sorted(faces_dir.glob("lisa_*.jpg")):
        out.append(ds.resize_square(ds.centre_square(load_image(f)), 64))
    assert len(out) >= 3
    return out


@pytest.fixture(scope="module")
def data(comps, face_crops):
    caps = ds.make_captions(len(face_crops), "lsaperson")
    return ds.prepare_data(
        face_crops,
        caps,
        lambda ims: db.encode_images(comps["vae"], ims),
        lambda cs: db.encode_text(comps["tokenizer"], comps["text_encoder"], cs),
        flip=True,
        jitter=0.1,
    )


def _trainer(comps, data, cfg, **kw):
    net = LoRANetwork(cfg.rank, cfg.alpha, cfg.dropout, seed=cfg.seed)
    net.attach_hooks(comps["unet"], TARGETS[cfg.target_modules])
    return net, Trainer(net, db.DiffusersBackend(comps["unet"], comps["scheduler"]), data, cfg, **kw)


def _two_phase(max_a=20, max_b=20, window=5):
    from identitylock.core.training.convergence import ControllerConfig

    return TrainConfig(
        rank=4,
        alpha=4,
        dropout=0.1,
        schedule=Schedule(
            [
                Phase(
                    "COARSE", lr=2e-3, alpha=8, loss="mse", optimizer="adamw", min_steps=5, max_steps=max_a
                ),
                Phase(
                    "FINE",
                    lr=5e-4,
                    alpha=2,
                    loss="charbonnier",
                    optimizer="adamp",
                    min_steps=5,
                    max_steps=max_b,
                ),
            ]
        ),
        controller=ControllerConfig(window=window, patience=2, p_threshold=0.2, significance=1.0),  # no skip
        val_every=10,
        seed=7,
    )


# -- file format ------------------------------------------------------------------------------------------------
def test_sd15_key_names_are_all_accepted_by_comfyui():
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from identitylock.core.training.tiny import SD15_UNET_CONFIG

    with init_empty_weights():
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    assert next(unet.parameters()).device.type == "meta"
    accepted = set(json.loads(KEYMAP.read_text()))
    for targets, expected in (("attn_ff", 16 * 10), ("attn", 16 * 8)):
        names = [kohya_name(p) for p, _ in target_linears(unet, TARGETS[targets])]
        assert len(names) == expected
        missing = [n for n in names if n not in accepted]
        assert not missing, missing[:5]
    net = LoRANetwork(4, 4)
    for p, m in target_linears(unet, TARGETS["attn_ff"]):
        net.add(kohya_name(p), m.weight.shape[1], m.weight.shape[0])
    keys = net.kohya_state_dict().keys()
    assert len(keys) == 480 and all(k.rsplit(".", 2)[0].split(".")[0] in accepted for k in keys)


def test_lora_names_are_validated():
    assert check_lora_name("lisa_v1") == "lisa_v1.safetensors"
    for bad in ("../x", "a/b", "a\\b", "", "  ", "..", ".hidden"):
        with pytest.raises(IdentityLockError):
            check_lora_name(bad)


def test_saved_file_reproduces_trained_model_and_loads_in_diffusers(comps, data, tmp_path):
    from diffusers import StableDiffusionPipeline

    cfg = _two_phase(max_a=8, max_b=8)
    net, tr = _trainer(comps, data, cfg)
    unet = comps["unet"]
    try:
        res = tr.run()
        assert [p for _, p in res.phase_starts] == ["COARSE", "FINE"] and net.alpha == 2
        x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([50, 700])
        e = data.cond[:2]
        net.eval()
        with torch.no_grad():
            trained = unet(x, t, e).sample
            net.detach_hooks()
            base = unet(x, t, e).sample
    finally:
        net.detach_hooks()
    assert (trained - base).abs().max() > 1e-3, "training changed nothing"
    path = save_lora(
        tmp_path / "tiny.safetensors",
        net.kohya_state_dict(),
        {"rank": 4, "alpha": net.alpha, "trigger_word": "lsaperson"},
    )
    assert read_metadata(path)["trigger_word"] == "lsaperson"
    from safetensors.torch import load_file

    sd = load_file(str(path))
    assert (
        all(k.startswith("lora_unet_") for k in sd)
        and float(sd[next(k for k in sd if k.endswith(".alpha"))]) == 2.0
    )

    # our own reload reproduces it exactly
    net2 = LoRANetwork(4, 1.0)
    net2.attach_hooks(unet, TARGETS["attn_ff"])
    try:
        net2.load_kohya_state_dict(sd)
        net2.eval()
        with torch.no_grad():
            again = unet(x, t, e).sample
    finally:
        net2.detach_hooks()
    assert torch.allclose(again, trained, atol=1e-6)

    # diffusers load_lora_weights on a pipeline around the same base weights
    pipe = StableDiffusionPipeline(
        vae=comps["vae"], text_encoder=comps["text_encoder"], tokenizer=comps["tokenizer"], unet=unet,
        scheduler=comps["scheduler"], safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.load_lora_weights(str(tmp_path), weight_name="tiny.safetensors")
    try:
        with torch.no_grad():
            loaded = pipe.unet(x, t, e).sample
    finally:
        pipe.unload_lora_weights()
    assert torch.allclose(loaded, trained, atol=1e-5), float((loaded - trained).abs().max())
    with torch.no_grad():
        assert torch.allclose(unet(x, t, e).sample, base, atol=1e-6)


def test_alpha_change_keeps_output_and_changes_scale(comps):
    net = LoRANetwork(4, 8)
    net.attach_hooks(comps["unet"], TARGETS["attn_ff"])
    try:
        for lora in net.loras.values():
            lora.up.data.normal_(0, 0.2)
        x, t, e = torch.randn(1, 4, 8, 8), torch.tensor([300]), torch.randn(1, 77, 32)
        with torch.no_grad():
            before = comps["unet"](x, t, e).sample
            net.set_alpha(1.0)
            after = comps["unet"](x, t, e).sample
        assert torch.allclose(before, after, atol=1e-5)
        assert all(m.scale == 0.25 for m in net.loras.values())
    finally:
        net.detach_hooks()


# -- trainer ----------------------------------------------------------------------------------------------------
def test_training_tiny_unet_lowers_validation_loss(comps, data):
    from identitylock.core.training.convergence import ControllerConfig

    cfg = TrainConfig(
        rank=4,
        alpha=4,
        schedule=Schedule([Phase("COARSE", lr=2e-3, alpha=4, min_steps=40, max_steps=40)], adaptive=False),
        controller=ControllerConfig(window=20),
        val_every=20,
    )
    net, tr = _trainer(comps, data, cfg)
    try:
        before = tr.validation_loss()
        res = tr.run()
    finally:
        net.detach_hooks()
    assert res.steps == 40
    assert res.final_val_loss < before * 0.97, (before, res.final_val_loss)


def test_phase_switch_changes_lr_loss_optimizer(comps, data):
    from pytorch_optimizer import AdamP

    seen = []
    cfg = _two_phase(max_a=6, max_b=6)
    holder = {}

    def on_step(info):
        seen.append((info.phase, info.lr, type(holder["tr"].optimizer).__name__, holder["tr"].phase.loss))

    net, tr = _trainer(comps, data, cfg, on_step=on_step)
    holder["tr"] = tr
    try:
        res = tr.run()
    finally:
        net.detach_hooks()
    first = [s for s in seen if s[0] == "COARSE"]
    second = [s for s in seen if s[0] == "FINE"]
    assert first and second
    assert {s[1] for s in first} == {2e-3} and {s[1] for s in second} == {5e-4}
    assert {s[2] for s in first} == {"AdamW"} and {s[2] for s in second} == {AdamP.__name__}
    assert {s[3] for s in first} == {"mse"} and {s[3] for s in second} == {"charbonnier"}
    assert [e.phase for e in res.exits] == ["COARSE", "FINE"]
    assert all(e.message().startswith(f"Exiting {e.phase} after ") for e in res.exits)


def test_resume_after_interrupt_matches_uninterrupted_run(comps, data, tmp_path):
    cfg = _two_phase(max_a=8, max_b=8, window=3)
    net_a, tr_a = _trainer(comps, data, cfg)
    try:
        res_a = tr_a.run()
        full = {k: v.clone() for k, v in net_a.kohya_state_dict().items()}
    finally:
        net_a.detach_hooks()

    class Stop(Exception):
        pass

    count = {"n": 0}

    def cancel_at_11():
        count["n"] += 1
        if count["n"] == 11:
            raise Stop

    ckpt = tmp_path / "state.pt"
    net_b, tr_b = _trainer(comps, data, cfg, check_cancel=cancel_at_11, checkpoint_path=ckpt)
    try:
        with pytest.raises(Stop):
            tr_b.run()
    finally:
        net_b.detach_hooks()
    assert ckpt.exists() and tr_b.step == 10

    net_c, tr_c = _trainer(comps, data, cfg, checkpoint_path=ckpt)
    try:
        tr_c.resume()
        assert tr_c.step == 10
        res_c = tr_c.run()
        resumed = net_c.kohya_state_dict()
    finally:
        net_c.detach_hooks()
    assert res_c.steps == res_a.steps
    assert res_c.losses == res_a.losses
    assert [e.phase for e in res_c.exits] == [e.phase for e in res_a.exits]
    for k, v in full.items():
        assert torch.equal(v, resumed[k]), k
    assert res_c.final_val_loss == res_a.final_val_loss


def test_bad_inputs_have_clear_messages(face_crops):
    with pytest.raises(ImageInputError, match="no training images"):
        ds.check_images([])
    with pytest.raises(ImageInputError, match="only one training image"):
        ds.check_images(face_crops[:1])
    with pytest.raises(ImageInputError, match="different sizes"):
        ds.check_images([face_crops[0], np.zeros((32, 32, 3), np.uint8)])
    for bad in ("", "   ", None):
        with pytest.raises(IdentityLockError, match="trigger word"):
            ds.make_captions(2, bad)
    caps = ds.make_captions(
        3, "lsa", captions=["smiling woman", None, "lsa at the beach"], template="photo of {trigger}"
    )
    assert caps == ["lsa, smiling woman", "photo of lsa", "lsa at the beach"]
    tr, va = ds.split_indices(10)
    assert len(va) == 2 and sorted(tr + va) == list(range(10))


def test_probe_selection_keeps_best_median_drift():
    tracker = ProbeTracker()
    # step -> per-sample drifts; None = no face found (counts as 1.0)
    probes = {
        100: [0.40, 0.35, 0.50],
        200: [0.20, 0.25, 0.90],  # median 0.25: best despite one bad sample
        300: [0.22, None, None],  # faces lost: median 1.0
        400: [0.30, 0.26, 0.28],
    }
    for step, drifts in probes.items():
        tracker.record(step, "COARSE", drifts, state_fn=lambda s=step: {"step": s})
    assert tracker.best.step == 200 and tracker.best_state == {"step": 200}
    assert tracker.curve() == [(100, 0.40), (200, 0.25), (300, 1.0), (400, 0.28)]
    assert tracker.records[2].faces_found == 1
    # with a score(image)->drift callable
    images = {"a": 0.3, "b": 0.1, "c": 0.2}
    probe = make_probe(lambda: list(images), images.get)
    t2 = ProbeTracker()
    t2.record(1, "MID", probe())
    assert t2.best.median == pytest.approx(0.2)


def test_trainer_runs_probe_and_keeps_best_state(comps, data):
    cfg = _two_phase(max_a=6, max_b=6)
    cfg.probe_every = 3
    drifts = iter([[0.5], [0.2], [0.3], [0.4]])
    net, tr = _trainer(comps, data, cfg, probe=lambda: next(drifts))
    try:
        res = tr.run()
    finally:
        net.detach_hooks()
    assert [r.step for r in res.probes.records] == [3, 6, 9, 12]
    assert res.probes.best.step == 6
    assert set(res.probes.best_state) == set(net.kohya_state_dict())


def test_comfy_weight_wrapper_mechanism_matches_hooks_and_trains(comps, data):
    """ComfyUI applies our LoRA as weight wrappers (w -> w + ΔW) on a ModelPatcher; emulate that on the tiny UNet."""
    import torch.nn.functional as F
    from identitylock.core.training.comfy_backend import SigmaBackend, ldm_to_diffusers_map, name_mapper

    unet = comps["unet"]
    x, t, e = torch.randn(1, 4, 8, 8), torch.tensor([400]), data.cond[:1]
    net = LoRANetwork(4, 4, seed=3)
    wrappers = net.weight_wrappers(unet, TARGETS["attn_ff"])
    mods = dict(unet.named_modules())
    for path, fn in wrappers:
        m = mods[path[: -len(".weight")]]
        m.forward = lambda inp, m=m, fn=fn: F.linear(inp, fn(m.weight), m.bias)
    try:
        for lora in net.loras.values():
            lora.up.data.normal_(0, 0.2)
        with torch.no_grad():
            wrapped = unet(x, t, e).sample
        cfg = _two_phase(max_a=5, max_b=5)
        sig = lambda p: float(14.6 ** (1 - p) * 0.03**p)  # noqa: E731
        backend = SigmaBackend(
            lambda xt, s, c: (
                xt
                - s.view(-1, 1, 1, 1)
                * unet(xt / (s**2 + 1).sqrt().view(-1, 1, 1, 1), (s * 50).long(), c).sample
            ),
            sig,
            lambda s, n, x0: x0 + s.view(-1, 1, 1, 1) * n,
        )
        before = {k: v.clone() for k, v in net.kohya_state_dict().items()}
        res = Trainer(net, backend, data, cfg).run()
        assert res.steps >= 2 and all(np.isfinite(res.losses))
        after = net.kohya_state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("lora_up.weight"))
    finally:
        for path, _ in wrappers:
            del mods[path[: -len(".weight")]].__dict__["forward"]
    net2 = LoRANetwork(4, 4, seed=3)
    net2.attach_hooks(unet, TARGETS["attn_ff"])
    try:
        net2.load_kohya_state_dict(before)
        with torch.no_grad():
            hooked = unet(x, t, e).sample
    finally:
        net2.detach_hooks()
    assert torch.allclose(hooked, wrapped, atol=1e-5)
    # ComfyUI's unet_to_diffusers map, inverted, turns LDM module paths into diffusers kohya names
    m = ldm_to_diffusers_map(
        {
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
        }
    )
    f = name_mapper(m)
    assert (
        kohya_name(f("input_blocks.1.1.transformer_blocks.0.attn1.to_q"))
        == "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    )
    assert f("middle_block.1.x") == "middle_block.1.x"


def test_cli_train_end_to_end(comps, face_crops, tmp_path, capsys):
    from diffusers import StableDiffusionPipeline
    from identitylock.core.cli import main
    from PIL import Image

    model = tmp_path / "tiny_sd"
    StableDiffusionPipeline(
        vae=comps["vae"], text_encoder=comps["text_encoder"], tokenizer=comps["tokenizer"], unet=comps["unet"],
        scheduler=comps["scheduler"], safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(model)  # fmt: skip
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, im in enumerate(face_crops[:3]):
        Image.fromarray(im).save(imgs / f"lisa_{i}.png")
    (imgs / "lisa_0.txt").write_text("smiling woman")
    phases = json.dumps([{"name": "ONLY", "lr": 1e-3, "alpha": 4, "min_steps": 3, "max_steps": 3}])
    out = tmp_path / "out" / "lisa.safetensors"
    args = ["train", "--images", str(imgs), "--model", str(model), "--trigger", "lsaperson", "--out", str(out),
            "--preset", "TINY_TEST", "--phases", phases, "--resolution", "64", "--device", "cpu", "--window", "3"]  # fmt: skip
    assert main(args) == 0
    meta = read_metadata(out)
    assert (
        meta["trigger_word"] == "lsaperson"
        and meta["steps"] == 3
        and meta["base_model_hash"].startswith("sha256")
    )
    assert meta["exits"][0]["phase"] == "ONLY" and meta["preset"] == "TINY_TEST"
    assert "Exiting ONLY after" in capsys.readouterr().out
    bad = list(args)
    bad[bad.index("--out") + 1] = str(tmp_path / "x" / "..bad.safetensors")
    assert main(bad) == 2
    bad2 = list(args)
    bad2[bad2.index("--trigger") + 1] = " "
    assert main(bad2) == 2


def _comfy_like_backend(unet):
    """x0 objective through a k-diffusion style sigma parametrisation, as the ComfyUI backend does."""
    from identitylock.core.training.comfy_backend import SigmaBackend

    sig = lambda p: float(14.6 ** (1 - p) * 0.03**p)  # noqa: E731
    return SigmaBackend(
        lambda xt, s, c: (
            xt
            - s.view(-1, 1, 1, 1) * unet(xt / (s**2 + 1).sqrt().view(-1, 1, 1, 1), (s * 50).long(), c).sample
        ),
        sig,
        lambda s, n, x0: x0 + s.view(-1, 1, 1, 1) * n,
    )


def _wrap_weights(unet, net):
    """Emulate ModelPatcher.add_weight_wrapper (w -> w + ΔW at every forward); returns an undo function."""
    import torch.nn.functional as F

    wrappers = net.weight_wrappers(unet, TARGETS["attn_ff"])
    mods = dict(unet.named_modules())
    for path, fn in wrappers:
        m = mods[path[: -len(".weight")]]
        m.forward = lambda inp, m=m, fn=fn: F.linear(inp, fn(m.weight), m.bias)

    def undo():
        for path, _ in wrappers:
            del mods[path[: -len(".weight")]].__dict__["forward"]

    return undo


def _to_inference_tensors(module):
    """Make every parameter an inference tensor, as ComfyUI's checkpoint loader (run under inference_mode) does."""
    with torch.inference_mode():
        for mod in module.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None:
                    mod._parameters[name] = torch.nn.Parameter(p.detach().clone(), requires_grad=False)


def test_comfy_backend_trains_under_comfyui_inference_mode(tmp_path, data):
    """Regression (LoRA never trained inside ComfyUI): ComfyUI runs nodes under torch.inference_mode() on weights
    loaded as inference tensors. Inside ``training_mode()`` + ``release_inference_tensors`` the LoRA must move
    and the loss must respond; without them the step cannot build a graph at all."""
    from identitylock.core.training.comfy_backend import release_inference_tensors, training_mode
    from identitylock.core.training.tiny import tiny_components

    unet = tiny_components(1, tmp_path)["unet"]
    _to_inference_tensors(unet)
    cfg = _two_phase(max_a=6, max_b=5)
    with torch.inference_mode(), torch.no_grad():  # what execution.py does around every node
        with training_mode():
            assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
            assert release_inference_tensors(unet) > 0
            net = LoRANetwork(4, 4, seed=0)
            undo = _wrap_weights(unet, net)
            try:
                res = Trainer(net, _comfy_like_backend(unet), data, cfg).run()
            finally:
                undo()
        # the same step left under inference_mode: no graph, a clear failure instead of a silent no-op
        net_b = LoRANetwork(4, 4, seed=0)
        undo = _wrap_weights(unet, net_b)
        try:
            with pytest.raises(RuntimeError):
                Trainer(net_b, _comfy_like_backend(unet), data, cfg).run()
        finally:
            undo()
    ups = [v for k, v in net.kohya_state_dict().items() if k.endswith("lora_up.weight")]
    assert sum(int(torch.count_nonzero(u)) for u in ups) > 0.5 * sum(u.numel() for u in ups)
    assert res.val_losses[-1][1] != res.val_losses[0][1]


def test_trainer_refuses_a_model_whose_output_ignores_the_lora(tmp_path, data):
    """The random checkpoint used for the first real-ComfyUI run had all GroupNorm weights at zero: the UNet's
    output was constant, every LoRA gradient exactly 0, and the node saved an untrained LoRA without a word."""
    from identitylock.core.training.tiny import tiny_components

    unet = tiny_components(2, tmp_path)["unet"]
    with torch.no_grad():
        unet.conv_norm_out.weight.zero_()
        unet.conv_norm_out.bias.zero_()
    net, tr = None, None
    net = LoRANetwork(4, 4, seed=0)
    net.attach_hooks(unet, TARGETS["attn_ff"])
    try:
        tr = Trainer(net, _comfy_like_backend(unet), data, _two_phase(max_a=5, max_b=5))
        with pytest.raises(RuntimeError, match="exactly zero"):
            tr.run()
    finally:
        net.detach_hooks()
