"""The standalone (diffusers) trainer on every family diffusers has: SDXL, FLUX.1, Flux.2 (Klein), Z-Image,
Qwen-Image, SD3.x, Chroma — tiny random-weight pipelines of the real diffusers classes (tiny_families.py; their
tokenizers are a labelled CLIP stand-in).

The objective test recomputes each family's validation loss BY HAND — the sigma draw and shift, the noising, the
2x2 packing, the ids, the denoiser call and the target written out here from the pipelines' formulas — and
compares it with the Trainer's own validation items.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from identitylock.core.errors import IdentityLockError
from identitylock.core.families import get_family
from identitylock.core.training import dataset as ds
from identitylock.core.training import job
from identitylock.core.training.diffusers_families import attach_lora, family_backend
from identitylock.core.training.network import LoRANetwork
from identitylock.core.training.presets import get_preset
from identitylock.core.training.tiny_families import tiny_pipeline
from identitylock.core.training.trainer import Trainer

FAMILIES = ("sdxl", "flux1", "flux2", "zimage", "qwen_image", "sd3", "chroma")
CAPTION = "a photo of lsaperson"
RES = 64


@pytest.fixture(scope="module")
def faces(faces_dir):
    from identitylock.core.images import load_image

    files = sorted(faces_dir.glob("lisa_*.jpg"))[:3]
    return [ds.resize_square(ds.centre_square(load_image(f)), RES) for f in files]


def _config(n: int, steps: int = 2):
    cfg = job.build_config(
        get_preset("FACE_RANK16"), n, schedule="fixed", seed=0, rank=4, checkpoint_every=0, window=3,
        probe_every=0, patience=3, p_threshold=0.5, significance=0.05, exit_on="validation", min_val_gain=0.02,
    )  # fmt: skip
    cfg.target_modules = "attn_ff"
    for ph in cfg.schedule.phases:
        ph.max_steps = ph.min_steps = steps
    return cfg


# -- the objective, by hand ----------------------------------------------------------------------------------------
def _sigma(fam, cfg, u: float, seq: int) -> float:
    s = min(max(u, 1e-4), 1 - 1e-4)
    s = 1 / (
        1 + math.exp(-math.sqrt(2) * torch.special.erfinv(torch.tensor(2 * s - 1)).item())
    )  # logit-normal
    if cfg.get("use_dynamic_shifting", False):
        if fam.key == "flux2":  # Flux.2's empirical mu at the family's step count
            a1, b1, a2, b2 = 8.73809524e-05, 1.89833333, 0.00016927, 0.45666666
            m200, m10 = a2 * seq + b2, a1 * seq + b1
            a = (m200 - m10) / 190.0
            mu = a * fam.steps + (m200 - 200.0 * a)
        else:
            m = (cfg["max_shift"] - cfg["base_shift"]) / (
                cfg["max_image_seq_len"] - cfg["base_image_seq_len"]
            )
            mu = seq * m + cfg["base_shift"] - m * cfg["base_image_seq_len"]
        return math.exp(mu) / (math.exp(mu) + (1 / s - 1))
    k = cfg.get("shift", 1.0)
    return k * s / (1 + (k - 1) * s)


def _pack(x):  # [B, C, H, W] -> [B, H/2 * W/2, 4C], channel-major inside each 2x2 patch
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w // 4, c * 4)


def _unpack(x, c, h, w):
    b = x.shape[0]
    return x.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def _grid_ids(h, w, lead=(0,), tail=()):
    return torch.tensor([[*lead, i, j, *tail] for i in range(h) for j in range(w)], dtype=torch.float32)


def _hand_latents(pipe, key, images):
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    vae = pipe.vae
    with torch.no_grad():
        if key == "qwen_image":
            z = vae.encode(x.unsqueeze(2)).latent_dist.mean[:, :, 0]
            mean, std = (
                torch.tensor(v).view(1, -1, 1, 1) for v in (vae.config.latents_mean, vae.config.latents_std)
            )
            return (z - mean) / std
        z = vae.encode(x).latent_dist.mean
        if key == "flux2":
            b, c, h, w = z.shape
            z = z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
            var = vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps
            return (z - vae.bn.running_mean.view(1, -1, 1, 1)) / var.sqrt()
        return (z - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor


@torch.no_grad()
def _hand_item(pipe, fam, x0, noise, u) -> float:
    """One validation item: MSE(prediction, target) for one image, one noise, one timestep fraction."""
    key, tr = fam.key, getattr(pipe, "transformer", None)
    x0, noise = x0[None], noise[None]
    c, h, w = x0.shape[1:]
    if key == "sdxl":
        sc = pipe.scheduler.config
        betas = torch.linspace(sc.beta_start**0.5, sc.beta_end**0.5, sc.num_train_timesteps) ** 2
        ac = torch.cumprod(1 - betas, 0)
        t = int((torch.tensor(u, dtype=torch.float32) * sc.num_train_timesteps).long())  # float32, as u is
        xt = ac[t].sqrt() * x0 + (1 - ac[t]).sqrt() * noise
        pe, _, pooled, _ = pipe.encode_prompt(CAPTION, device="cpu", do_classifier_free_guidance=False)
        ids = torch.tensor([[RES, RES, 0, 0, RES, RES]], dtype=torch.float32)
        pred = pipe.unet(
            xt, torch.tensor([t]), pe, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}
        ).sample
        return float(((pred - noise) ** 2).mean())
    seq = h * w if key == "flux2" else (h // 2) * (w // 2)
    s = _sigma(fam, pipe.scheduler.config, u, seq)
    xt = (1 - s) * x0 + s * noise
    sig = torch.tensor([s], dtype=torch.float32)
    if key in ("flux1", "chroma"):
        img_ids = _grid_ids(h // 2, w // 2)
        if key == "flux1":
            pe, pooled, _ = pipe.encode_prompt(CAPTION, prompt_2=None, device="cpu")
            kw = {"pooled_projections": pooled, "guidance": torch.tensor([1.0])}
        else:
            pe, _, mask, *_ = pipe.encode_prompt(CAPTION, device="cpu", do_classifier_free_guidance=False)
            kw = {"attention_mask": torch.cat([mask.bool(), torch.ones(1, seq, dtype=torch.bool)], 1)}
        out = tr(hidden_states=_pack(xt), timestep=sig, encoder_hidden_states=pe,
                 txt_ids=torch.zeros(pe.shape[1], 3), img_ids=img_ids, return_dict=False, **kw)[0]  # fmt: skip
        pred = _unpack(out, c, h, w)
    elif key == "qwen_image":
        pe, mask = pipe.encode_prompt(CAPTION, device="cpu")
        mask = torch.ones(pe.shape[:2], dtype=torch.long) if mask is None else mask
        out = tr(hidden_states=_pack(xt), timestep=sig, encoder_hidden_states_mask=mask, encoder_hidden_states=pe,
                 img_shapes=[[(1, h // 2, w // 2)]], return_dict=False)[0]  # fmt: skip
        pred = _unpack(out, c, h, w)
    elif key == "flux2":
        pe, _ = pipe.encode_prompt(CAPTION, device="cpu")
        txt_ids = torch.tensor([[0, 0, 0, i] for i in range(pe.shape[1])])[None]
        packed = xt.reshape(1, c, h * w).permute(0, 2, 1)
        out = tr(hidden_states=packed, timestep=sig, guidance=None, encoder_hidden_states=pe, txt_ids=txt_ids,
                 img_ids=_grid_ids(h, w, tail=(0,)).long()[None], return_dict=False)[0]  # fmt: skip
        pred = out.permute(0, 2, 1).reshape(1, c, h, w)
    elif key == "sd3":
        pe, _, pooled, _ = pipe.encode_prompt(
            CAPTION, None, None, device="cpu", do_classifier_free_guidance=False
        )
        pred = tr(hidden_states=xt, timestep=sig * 1000, encoder_hidden_states=pe, pooled_projections=pooled,
                  return_dict=False)[0]  # fmt: skip
    else:  # zimage: per-sample lists, timestep 1 - sigma, velocity = -output
        embeds, _ = pipe.encode_prompt(CAPTION, device="cpu", do_classifier_free_guidance=False)
        out = tr([xt[0].unsqueeze(1)], 1 - sig, embeds, return_dict=False)[0]
        pred = -out[0].squeeze(1)[None]
    return float(((pred - (noise - x0)) ** 2).mean())


@pytest.mark.parametrize("key", FAMILIES)
def test_loss_by_hand_matches_the_trainer(key, faces):
    pipe = tiny_pipeline(key)
    fam = get_family(key)
    backend = family_backend(pipe, fam, RES)
    latents = backend.encode_images(faces)
    assert torch.allclose(latents, _hand_latents(pipe, key, faces), atol=1e-5), "latent scale/shift/packing"
    data = ds.prepare_data(faces, [CAPTION] * len(faces), backend.encode_images, backend.encode_text,
                           sources=["a", "b", "c"])  # fmt: skip
    net = LoRANetwork(4, 4)
    attach_lora(net, backend.denoiser, fam, "attn_ff")
    trainer = Trainer(net, backend, data, _config(len(faces)))
    items = trainer.validation_items()
    k = len(items) // data.val_latents.shape[0]
    lat = data.val_latents.repeat_interleave(k, dim=0)
    hand = [
        _hand_item(pipe, fam, lat[i], trainer._val_noise[i], float(trainer._val_u[i]))
        for i in range(len(items))
    ]
    assert len(set(np.round(hand, 6))) == len(hand), "the timesteps must give different losses"
    np.testing.assert_allclose(items, hand, rtol=2e-4, atol=1e-6)


# -- training, files, keys -------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", FAMILIES)
def test_train_writes_the_keys_comfyui_maps(key, faces, tmp_path):
    from identitylock.core.training.diffusers_backend import train_diffusers
    from identitylock.core.training.lora_format import read_metadata
    from safetensors.torch import load_file

    pipe = tiny_pipeline(key)
    res, path, _ = train_diffusers(
        pipe, faces, [CAPTION] * 3, _config(3), tmp_path / "x.safetensors", trigger="lsaperson", resolution=RES,
        show_progress=False, sources=["a", "b", "c"], gradient_checkpointing=True,
    )  # fmt: skip
    assert res.steps >= 2 and all(math.isfinite(v) for v in res.losses)
    sd = load_file(str(path))
    modules = {k.rsplit(".lora_", 1)[0].removesuffix(".alpha") for k in sd}
    assert len(sd) == 3 * len(modules)
    assert any(float(v.abs().max()) > 0 for k, v in sd.items() if k.endswith("lora_up.weight")), "LoRA moved"
    denoiser = getattr(pipe, "transformer", None) or pipe.unet
    names = {n for n, _ in denoiser.named_modules()}
    if key == "sdxl":
        assert all(m.startswith("lora_unet_") for m in modules)
    else:  # diffusers names under "transformer." (ComfyUI maps them), ComfyUI's own names for Flux.2's others
        diffusers_names = {m.removeprefix("transformer.") for m in modules if m.startswith("transformer.")}
        assert diffusers_names and diffusers_names <= names
        native = modules - {f"transformer.{n}" for n in diffusers_names}
        assert (key == "flux2") == bool(native) and all(m.startswith("diffusion_model.") for m in native)
    assert read_metadata(path)["family"] == key


def test_flux2_native_names_follow_comfyui_module_tree():
    from identitylock.core.training.diffusers_families import file_module_name

    f = get_family("flux2")
    assert file_module_name(f, "single_transformer_blocks.3.attn.to_qkv_mlp_proj") == (
        "diffusion_model.single_blocks.3.linear1"
    )
    assert (
        file_module_name(f, "transformer_blocks.1.ff_context.linear_out")
        == "diffusion_model.double_blocks.1.txt_mlp.2"
    )
    assert (
        file_module_name(f, "transformer_blocks.1.attn.to_q") == "transformer.transformer_blocks.1.attn.to_q"
    )


def test_family_must_match_the_pipeline():
    with pytest.raises(IdentityLockError, match="ZImageTransformer2DModel"):
        family_backend(tiny_pipeline("flux1"), get_family("zimage"), RES)
    with pytest.raises(IdentityLockError, match="LoRATrainAdaptive"):
        family_backend(tiny_pipeline("flux1"), get_family("lumina2"), RES)


# -- detection from local files ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "family"),
    [
        ("model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "flux1"),
        ("double_stream_modulation_img.lin.weight", "flux2"),
        ("single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight", "flux2"),
        ("distilled_guidance_layer.in_proj.weight", "chroma"),
        ("model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight", "sd3"),
        ("txt_norm.weight", "qwen_image"),
        ("x_pad_token", "zimage"),
        ("conditioner.embedders.1.model.ln_final.weight", "sdxl"),
        ("model.diffusion_model.input_blocks.0.0.weight", "sd15"),
    ],
)
def test_detect_family_of_a_single_file(key, family, tmp_path):
    from identitylock.core.diffusion import detect_family
    from safetensors.torch import save_file

    f = tmp_path / "m.safetensors"
    save_file({key: torch.zeros(1), "other.weight": torch.zeros(1)}, str(f))
    assert detect_family(f) == family


def test_detect_family_of_folders_and_refusals(tmp_path):
    from identitylock.core.diffusion import detect_family
    from safetensors.torch import save_file

    for cls, fam in (("Flux2KleinPipeline", "flux2"), ("QwenImageImg2ImgPipeline", "qwen_image"),
                     ("ZImagePipeline", "zimage"), ("StableDiffusionXLPipeline", "sdxl")):  # fmt: skip
        d = tmp_path / cls
        d.mkdir()
        (d / "model_index.json").write_text(json.dumps({"_class_name": cls}))
        assert detect_family(d) == fam
    odd = tmp_path / "wan"
    odd.mkdir()
    (odd / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(IdentityLockError, match="supported model families"):
        detect_family(odd)
    f = tmp_path / "unknown.safetensors"
    save_file({"foo.weight": torch.zeros(1)}, str(f))
    with pytest.raises(IdentityLockError, match="--family"):
        detect_family(f)


def test_single_transformer_file_needs_a_local_folder(tmp_path):
    from identitylock.core.diffusion import load_pipeline
    from safetensors.torch import save_file

    f = tmp_path / "flux.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(1)}, str(f))
    with pytest.raises(IdentityLockError, match="--config a local FLUX.1 diffusers folder"):
        load_pipeline(f)


def test_cli_family_mismatch_exits_2_with_one_sentence(faces, tmp_path, capsys):
    from identitylock.core.cli import main as cli_main
    from PIL import Image

    model = tmp_path / "tiny_zimage"
    tiny_pipeline("zimage").save_pretrained(model)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, im in enumerate(faces):
        Image.fromarray(im).save(imgs / f"lisa_{i}.png")
    rc = cli_main(["train", "--images", str(imgs), "--model", str(model), "--family", "flux1", "--trigger",
                   "lsaperson", "--out", str(tmp_path / "o.safetensors"), "--resolution", "64"])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(err) == 1 and "--family flux1 does not match" in err[0]


def _train(key, faces, tmp_path, **kw):
    from identitylock.core.training.diffusers_backend import train_diffusers

    return train_diffusers(
        tiny_pipeline(key), faces, [CAPTION] * 3, _config(3), tmp_path / f"{key}.safetensors", trigger="lsaperson",
        resolution=RES, show_progress=False, sources=["a", "b", "c"], **kw,
    )  # fmt: skip


@pytest.mark.parametrize("key", ["flux2", "zimage"])
def test_gradient_checkpointing_changes_nothing_but_memory(key, faces, tmp_path):
    plain = _train(key, faces, tmp_path / "a")[0]
    ckpt = _train(key, faces, tmp_path / "b", gradient_checkpointing=True)[0]
    np.testing.assert_allclose(plain.losses, ckpt.losses, rtol=1e-5)
    assert plain.final_val_loss == pytest.approx(ckpt.final_val_loss, rel=1e-5)


@pytest.mark.parametrize("key", FAMILIES)
def test_bf16_autocast_trains_every_family(key, faces, tmp_path):
    """The precision switch on the diffusers path: bf16 forward (CPU autocast), fp32 LoRA weights in the file."""
    from safetensors.torch import load_file

    res, path, _ = _train(key, faces, tmp_path, precision="bf16")
    assert all(math.isfinite(v) for v in res.losses)
    assert {v.dtype for v in load_file(str(path)).values()} == {torch.float32}


def test_base_weights_in_bf16_only_where_the_forward_runs_in_bf16():
    from identitylock.core.cli.training import weight_dtype

    assert weight_dtype("bf16", "cpu", "flux1") == torch.bfloat16
    assert weight_dtype("fp32", "cuda", "qwen_image") == torch.float32
    assert weight_dtype("fp16", "cuda", "flux1") == torch.float32
    assert weight_dtype("bf16", "cpu", "sd15") == torch.float32  # SD1.5 keeps its fp32 base, as before


@pytest.mark.parametrize("key", FAMILIES)
def test_probe_renders_with_the_family_pipeline(key):
    """The identity probe's renders on the standalone path: the family's own pipeline call, fixed seeds."""
    from identitylock.core.training.diffusers_backend import render_probe_images

    pipe = tiny_pipeline(key)
    fam = get_family(key)
    a = render_probe_images(pipe, CAPTION, [1, 2], steps=2, guidance=fam.guidance or fam.cfg, size=RES)
    b = render_probe_images(pipe, CAPTION, [1], steps=2, guidance=fam.guidance or fam.cfg, size=RES)
    assert [im.shape for im in a] == [(RES, RES, 3)] * 2 and a[0].dtype == np.uint8
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], a[1])
