"""LoRATrainAdaptive run end to end without ComfyUI, on ComfyUI-shaped stand-ins built around the tiny UNet.

The stand-ins implement only the ModelPatcher / VAE / CLIP calls the node makes (clone, add_weight_wrapper,
get_model_object("model_sampling"), model.apply_model / process_latent_in, vae.encode on [B,H,W,C],
clip.tokenize / encode_from_tokens), with ComfyUI's signatures; the node, core glue, trainer and file writing
are the real code. Trains on lisa_* crops only (CC0, per SOURCES.md).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from identitylock.core.errors import IdentityLockError
from identitylock.core.fileio import default_file_mode
from identitylock.core.training import dataset as ds
from identitylock.core.training import diffusers_backend as db
from identitylock.core.training.lora_format import read_metadata
from identitylock.nodes import train as node_mod

PHASES = json.dumps(
    [
        {"name": "COARSE", "lr": 2e-3, "alpha": 8, "min_steps": 3, "max_steps": 4},
        {"name": "FINE", "lr": 5e-4, "alpha": 2, "loss": "charbonnier", "min_steps": 2, "max_steps": 3},
    ]
)


class ModelSampling:
    """k-diffusion style sigmas, as ComfyUI's ModelSamplingDiscrete exposes them."""

    def percent_to_sigma(self, percent: float) -> float:
        return float(14.6 ** (1 - percent) * 0.03**percent)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return latent_image + sigma.view(-1, 1, 1, 1) * noise


class SD15:
    """Stand-in for comfy.supported_models.SD15: the family table matches a MODEL by this class name."""

    unet_config: dict = {}


class CONDRegular:
    """Stand-in for comfy.conds.CONDRegular (process_cond repeats to the batch, concat is torch.cat)."""

    def __init__(self, cond):
        self.cond = cond

    def process_cond(self, batch_size, **kwargs):
        return CONDRegular(self.cond.repeat(batch_size, *([1] * (self.cond.ndim - 1))))

    def concat(self, others):
        return torch.cat([self.cond] + [o.cond for o in others])


class BaseModel:
    def __init__(self, unet):
        self.diffusion_model = unet
        self.model_config = SD15()

    def extra_conds(self, **kwargs):  # BaseModel.extra_conds for an SD1.x UNet: the text embedding only
        return {"c_crossattn": CONDRegular(kwargs["cross_attn"])}

    def requires_grad_(self, flag: bool):
        self.diffusion_model.requires_grad_(flag)
        return self

    def process_latent_in(self, latent):
        return latent * 0.18215

    def apply_model(self, x, t, c_crossattn=None):  # denoised x0, like BaseModel.apply_model
        s = t.view(-1, 1, 1, 1)
        return x - s * self.diffusion_model(x / (s**2 + 1).sqrt(), (t * 50).long(), c_crossattn).sample


class ModelPatcher:
    def __init__(self, unet, undo):
        self.model, self.load_device, self._undo = BaseModel(unet), torch.device("cpu"), undo

    def clone(self):
        return ModelPatcher(self.model.diffusion_model, self._undo)

    def get_model_object(self, name):
        assert name == "model_sampling"
        return ModelSampling()

    def model_dtype(self):
        return torch.float32

    def add_weight_wrapper(self, key, fn):  # applied at once here; ComfyUI applies it when patching the model
        path = key.removeprefix("diffusion_model.").removesuffix(".weight")
        m = dict(self.model.diffusion_model.named_modules())[path]
        m.forward = lambda inp, m=m, fn=fn: F.linear(inp, fn(m.weight), m.bias)
        self._undo.append(lambda: m.__dict__.pop("forward", None))


class VAE:
    def __init__(self, vae):
        self.vae = vae

    def encode(self, pixels):  # [B,H,W,C] 0..1
        return self.vae.encode(pixels.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean


class CLIP:
    def __init__(self, comps):
        self.comps = comps

    def tokenize(self, text):
        return text

    def encode_from_tokens(self, tokens):
        return db.encode_text(self.comps["tokenizer"], self.comps["text_encoder"], [tokens])

    def encode_from_tokens_scheduled(self, tokens):
        return [[self.encode_from_tokens(tokens), {}]]


@pytest.fixture(scope="module")
def crops(faces_dir):
    from identitylock.core.images import load_image

    out = [
        ds.resize_square(ds.centre_square(load_image(f)), 64) for f in sorted(faces_dir.glob("lisa_*.jpg"))
    ]
    assert len(out) >= 3
    return torch.from_numpy(np.stack(out).astype(np.float32) / 255.0)


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """Fresh tiny model per test (weight wrappers patch it); output/loras/phases folders under tmp_path."""
    from identitylock.core.training.tiny import tiny_components

    comps = tiny_components(0, tmp_path / "tok")
    undo: list = []
    dirs = {k: tmp_path / k for k in ("output", "loras", "phases")}
    monkeypatch.setattr(node_mod, "output_directory", lambda: str(dirs["output"]))
    monkeypatch.setattr(node_mod, "_loras_dir", lambda: str(dirs["loras"]))
    monkeypatch.setattr(node_mod, "_phases_dir", lambda: str(dirs["phases"]))
    sent: list = []
    monkeypatch.setattr(node_mod, "send_status", lambda event, data, node=None: sent.append((event, data)))
    yield SimpleNamespace(
        model=ModelPatcher(comps["unet"], undo), clip=CLIP(comps), vae=VAE(comps["vae"]), dirs=dirs, sent=sent
    )
    for fn in undo:
        fn()


def run_node(c, images, **kw):
    args = dict(trigger_word="lsaperson", lora_name="lisa", preset="TINY_TEST", schedule="adaptive", seed=5,
                phases_json=PHASES, window=3, patience=1, significance=1.0, checkpoint_every=2)  # fmt: skip
    args.update(kw)
    return node_mod.LoRATrainAdaptive().train(c.model, c.clip, c.vae, images, **args)


def test_node_trains_saves_reports_and_guards_the_saved_run(comfy, crops, monkeypatch):
    bars = []

    class RecordingProgress:
        def __init__(self, total):
            self.total, self.updates = total, []
            bars.append(self)

        def update(self, n=1, preview=None):
            self.updates.append(preview is not None)

    monkeypatch.setattr(node_mod, "Progress", RecordingProgress)
    mp, name, curve, report = run_node(comfy, crops)
    lora = comfy.dirs["loras"] / "lisa.safetensors"
    state = comfy.dirs["output"] / "identitylock_training" / "lisa.safetensors.state.pt"
    meta = read_metadata(lora)
    assert name == "lisa.safetensors" and meta["trigger_word"] == "lsaperson" and meta["seed"] == 5
    assert [e["phase"] for e in meta["exits"]] == ["COARSE", "FINE"] and 5 <= meta["steps"] <= 7
    assert str(meta["base_model_hash"]).startswith("weights-sha256:")
    assert tuple(curve.shape) == (1, 400, 800, 3) and "Exiting COARSE after" in report
    assert mp is not comfy.model and mp.model.diffusion_model is comfy.model.model.diffusion_model
    # progress: one update per step, previews at step 1 and validations; status per step and at the end
    assert len(bars[0].updates) == meta["steps"] and bars[0].updates[0]
    steps = [d["step"] for e, d in comfy.sent if e == "train"]
    assert steps == list(range(1, meta["steps"] + 1)) and comfy.sent[-1][0] == "train_done"
    # issue 15: files come out with the user's normal permissions (safetensors/mkstemp made them 0600)
    for f in (lora, state):
        assert (f.stat().st_mode & 0o777) == default_file_mode(), f
    # issue 15: a second run with the same name must not silently discard the saved run (and its LoRA)
    before = (lora.read_bytes(), state.read_bytes())
    with pytest.raises(IdentityLockError) as err:
        run_node(comfy, crops, seed=6)
    assert "overwrite widget" in str(err.value)
    assert (lora.read_bytes(), state.read_bytes()) == before
    lora.unlink()
    with pytest.raises(IdentityLockError) as err:
        run_node(comfy, crops, seed=6)
    assert "resume widget" in str(err.value) and "overwrite widget" in str(err.value)
    assert state.read_bytes() == before[1]
    # start over on request
    run_node(comfy, crops, seed=6, overwrite=True)
    assert read_metadata(lora)["seed"] == 6


def test_node_cancel_then_resume_is_bit_identical(comfy, crops, monkeypatch, tmp_path):
    """Cancel (ComfyUI's interrupt) mid-run keeps the state; resume=True continues it to the same LoRA as an
    uninterrupted run, with the saved run's seed even though the seed widget changed."""
    from safetensors.torch import load_file

    run_node(comfy, crops, lora_name="full")
    full = load_file(comfy.dirs["loras"] / "full.safetensors")

    class Interrupted(Exception):
        pass

    calls = {"n": 0}

    def interrupt_at_4():
        calls["n"] += 1
        if calls["n"] == 4:
            raise Interrupted

    monkeypatch.setattr(node_mod, "check_interrupted", interrupt_at_4)
    with pytest.raises(Interrupted):
        run_node(comfy, crops, lora_name="cut")
    state = comfy.dirs["output"] / "identitylock_training" / "cut.safetensors.state.pt"
    assert state.exists() and not (comfy.dirs["loras"] / "cut.safetensors").exists()
    monkeypatch.setattr(node_mod, "check_interrupted", lambda: None)
    run_node(comfy, crops, lora_name="cut", resume=True, seed=999)
    resumed = load_file(comfy.dirs["loras"] / "cut.safetensors")
    assert set(resumed) == set(full) and all(torch.equal(full[k], resumed[k]) for k in full)


def test_node_phases_json_names_only_inside_the_phases_folder(comfy, crops, tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text(PHASES)
    for bad in (str(outside), "../elsewhere", "/etc/hostname"):
        with pytest.raises(IdentityLockError, match="phases_json"):
            run_node(comfy, crops, phases_json=bad)
    assert not (comfy.dirs["loras"] / "lisa.safetensors").exists()
    comfy.dirs["phases"].mkdir()
    (comfy.dirs["phases"] / "short.json").write_text(PHASES)
    run_node(comfy, crops, phases_json="short")
    assert read_metadata(comfy.dirs["loras"] / "lisa.safetensors")["exits"][0]["phase"] == "COARSE"


def test_node_splits_by_facecropprep_photo_and_records_it(comfy, crops):
    """Issue 12: with FaceCropPrep's metadata_json wired, validation holds out whole photos; file and report say which."""
    batch = torch.cat(
        [crops, crops.flip(2)]
    )  # two "variants" of each photo, in FaceCropPrep's order per photo
    n = crops.shape[0]
    meta = json.dumps([{"source_index": i % n, "variant": "main" if i < n else "flip"} for i in range(2 * n)])
    _, _, _, report = run_node(comfy, batch, prep_metadata=meta)
    split = read_metadata(comfy.dirs["loras"] / "lisa.safetensors")["split"]
    assert split["by"] == "source photo" and split["validation"] and split["train"]
    assert sorted(split["train"] + split["validation"]) == sorted(f"photo {i}" for i in range(n))
    assert f"validated on {', '.join(split['validation'])}" in report


def test_node_gradient_checkpointing_trains_the_same_lora_and_leaves_the_model_as_it_was(comfy, crops):
    """Issue 12 item 3: the gradient_checkpointing widget recomputes the UNet's blocks (checkpoint_blocks) and the
    shared diffusion model gets its own forward back afterwards."""
    from safetensors.torch import load_file

    unet = comfy.model.model.diffusion_model
    blocks = [m for m in unet.modules() if type(m).__name__ in ("BasicTransformerBlock", "ResnetBlock2D")]
    assert blocks
    run_node(comfy, crops, lora_name="plain")
    run_node(comfy, crops, lora_name="ckpt", gradient_checkpointing=True)
    assert all("forward" not in m.__dict__ for m in blocks)
    plain, ckpt = (load_file(str(comfy.dirs["loras"] / f"{n}.safetensors")) for n in ("plain", "ckpt"))
    assert plain.keys() == ckpt.keys()
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-4, atol=1e-6)


def test_node_auto_preset_lokr_and_family_metadata(comfy, crops):
    """AUTO picks the family's preset (SD1.x: FACE_RANK32); adapter lokr writes LyCORIS keys; the file names the
    family (modelspec.architecture) and the adapted modules."""
    from safetensors import safe_open

    run_node(comfy, crops, preset="AUTO", lora_name="auto_lora")
    meta = read_metadata(comfy.dirs["loras"] / "auto_lora.safetensors")
    assert meta["preset"] == "FACE_RANK32" and meta["rank"] == 32 and meta["family"] == "sd15"
    assert meta["target_modules"] == ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]
    run_node(comfy, crops, lora_name="lisa_lokr", adapter="lokr")
    path = comfy.dirs["loras"] / "lisa_lokr.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        raw, keys = fh.metadata(), list(fh.keys())
    assert (
        raw["modelspec.architecture"] == "stable-diffusion-v1/lokr"
        and raw["ss_network_module"] == "lycoris.kohya"
    )
    assert keys and all(".lokr_" in k or k.endswith(".alpha") for k in keys)
    assert not any("lora_down" in k for k in keys)


def test_node_refuses_a_model_of_another_family_in_one_sentence(comfy, crops):
    class WAN21_T2V:  # stand-in for a video model's comfy.supported_models entry
        unet_config: dict = {}

    comfy.model.model.model_config = WAN21_T2V()
    with pytest.raises(IdentityLockError) as err:
        run_node(comfy, crops)
    msg = str(err.value)
    assert "WAN21_T2V" in msg and "FLUX.1" in msg and "Qwen-Image" in msg and "\n" not in msg
    assert not (comfy.dirs["loras"] / "lisa.safetensors").exists()
