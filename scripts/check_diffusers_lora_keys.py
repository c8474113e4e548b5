"""Proof that LoRA files written by the standalone (diffusers) trainer load in a real ComfyUI with every key used.

For each family: build the tiny diffusers pipeline (core/training/tiny_families.py), train a few steps with
``train_diffusers`` on real face crops, then build ComfyUI's OWN model of that family (supported_models config ->
model_base -> ModelPatcher) at the SAME dims as the tiny diffusers denoiser, load the file through
``comfy.sd.load_lora_for_models`` (what LoraLoader / LoraLoaderModelOnly call), count the "lora key not loaded"
log lines and the shape-mismatch warnings, patch the model and count the weights the LoRA changed.

Usage: python scripts/check_diffusers_lora_keys.py --comfyui /path/to/ComfyUI [--families flux1,zimage]
When ComfyUI's Python lacks diffusers, run it in two steps: ``--train-to DIR`` with the pack's Python (writes
DIR/FAMILY.safetensors), then ``--comfyui PATH --loras DIR`` with ComfyUI's.
Proof harness only (needs a ComfyUI checkout; CI cannot fetch one). Exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAMILIES = ("sd15", "sdxl", "flux1", "flux2", "zimage", "qwen_image", "sd3", "chroma")

# ComfyUI unet_config of each family at the tiny diffusers denoiser's dims (tiny_families.py)
_UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1],
    "channel_mult": [1, 2], "use_spatial_transformer": True, "legacy": False, "use_temporal_attention": False,
    "use_temporal_resblock": False, "disable_self_attentions": None, "num_classes": None,
}  # fmt: skip
COMFY = {
    # transformer_depth_output is popped from its end: deepest level first
    "sd15": ("SD15", {**_UNET, "model_channels": 32, "context_dim": 32, "adm_in_channels": None,
                      "use_linear_in_transformer": False, "transformer_depth": [1, 0],
                      "transformer_depth_middle": 1, "transformer_depth_output": [1, 1, 0, 0]}),
    "sdxl": ("SDXL", {**_UNET, "model_channels": 32, "context_dim": 64, "adm_in_channels": 80,
                      "num_classes": "sequential", "use_linear_in_transformer": True, "transformer_depth": [0, 1],
                      "transformer_depth_middle": 1, "transformer_depth_output": [0, 0, 1, 1]}),
    "flux1": ("Flux", {"image_model": "flux", "in_channels": 4, "out_channels": 4, "vec_in_dim": 32,
                       "context_in_dim": 32, "hidden_size": 32, "mlp_ratio": 4.0, "num_heads": 2, "depth": 1,
                       "depth_single_blocks": 1, "axes_dim": [4, 4, 8], "theta": 10000, "patch_size": 2,
                       "qkv_bias": True, "guidance_embed": True, "txt_ids_dims": []}),
    "chroma": ("Chroma", {"image_model": "chroma", "in_channels": 4, "out_channels": 4, "context_in_dim": 32,
                          "hidden_size": 32, "mlp_ratio": 4.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
                          "axes_dim": [4, 4, 8], "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64,
                          "out_dim": 17, "hidden_dim": 32, "n_layers": 1, "txt_ids_dims": [], "vec_in_dim": None}),
    "flux2": ("Flux2", {"image_model": "flux2", "in_channels": 16, "out_channels": 16, "vec_in_dim": None,
                        "context_in_dim": 48, "hidden_size": 32, "mlp_ratio": 3.0, "num_heads": 2, "depth": 1,
                        "depth_single_blocks": 1, "axes_dim": [4, 4, 4, 4], "theta": 2000, "patch_size": 1,
                        "qkv_bias": False, "guidance_embed": False, "txt_ids_dims": [3], "global_modulation": True,
                        "mlp_silu_act": True, "ops_bias": False, "default_ref_method": "index",
                        "ref_index_scale": 10.0}),
    "zimage": ("ZImage", {"image_model": "lumina2", "patch_size": 2, "in_channels": 4, "dim": 32, "cap_feat_dim": 16,
                          "n_layers": 2, "n_refiner_layers": 1, "qk_norm": True, "n_heads": 2, "n_kv_heads": 2,
                          "axes_dims": [8, 4, 4], "axes_lens": [256, 32, 32], "rope_theta": 256.0,
                          "ffn_dim_multiplier": 8.0 / 3.0, "multiple_of": 1, "z_image_modulation": True,
                          "time_scale": 1000.0, "pad_tokens_multiple": 32}),
    "qwen_image": ("QwenImage", {"image_model": "qwen_image", "patch_size": 2, "in_channels": 16, "out_channels": 4,
                                 "num_layers": 2, "attention_head_dim": 16, "num_attention_heads": 3,
                                 "joint_attention_dim": 16, "axes_dims_rope": (8, 4, 4)}),
    "sd3": ("SD3", {"in_channels": 4, "out_channels": 4, "patch_size": 2, "depth": 2, "input_size": None,
                    "adm_in_channels": 64, "pos_embed_scaling_factor": None, "pos_embed_max_size": 32,
                    "num_patches": 1024, "qk_norm": "rms", "x_block_self_attn_layers": [0],
                    "context_embedder_config": {"target": "torch.nn.Linear",
                                                "params": {"in_features": 32, "out_features": 128}}}),
}  # fmt: skip


class _Count(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.unloaded = self.mismatch = 0

    def emit(self, record):
        msg = record.getMessage()
        self.unloaded += "lora key not loaded" in msg
        self.mismatch += "SHAPE MISMATCH" in msg


def train_file(family: str, out: Path) -> tuple[Path, int]:
    """A LoRA trained for a few steps on real face crops by the standalone trainer; (path, tensors in it)."""
    import numpy as np
    from identitylock.core.images import load_image
    from identitylock.core.training import dataset as ds
    from identitylock.core.training import job
    from identitylock.core.training.diffusers_backend import train_diffusers
    from identitylock.core.training.presets import get_preset
    from identitylock.core.training.tiny_families import tiny_pipeline

    faces = sorted((REPO / "tests" / "fixtures" / "faces").glob("lisa_*.jpg"))[:3]
    images = [ds.resize_square(ds.centre_square(load_image(f)), 64) for f in faces]
    cfg = job.build_config(
        get_preset("FACE_RANK16"), len(images), schedule="fixed", seed=0, rank=4, checkpoint_every=0, window=5,
        probe_every=0, patience=3, p_threshold=0.5, significance=0.05, exit_on="validation", min_val_gain=0.02,
    )  # fmt: skip
    cfg.target_modules = "attn_ff"
    for ph in cfg.schedule.phases:
        ph.max_steps = ph.min_steps = 2
    _, path, _ = train_diffusers(
        tiny_pipeline(family), images, ["a photo of lsaperson"] * len(images), cfg, out, trigger="lsaperson",
        resolution=64, show_progress=False, family=family,
    )  # fmt: skip
    from safetensors.torch import load_file

    sd = load_file(str(path))
    assert all(np.isfinite(v.numpy()).all() for v in sd.values())
    return path, len(sd)


def comfy_model(family: str):
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    import torch
    from comfy_toys import random_init

    cls, unet_config = COMFY[family]
    config = getattr(sm, cls)(dict(unet_config))
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    random_init(base.diffusion_model, 0)
    dev = mm.unet_offload_device()
    return comfy.model_patcher.ModelPatcher(base.to(dev), load_device=dev, offload_device=dev)


def check(family: str, work: Path, loras: Path | None) -> dict:
    import comfy.sd
    import comfy.utils
    import torch

    if loras is None:
        path, n_tensors = train_file(family, work / f"{family}.safetensors")
    else:
        path = loras / f"{family}.safetensors"
        n_tensors = len(comfy.utils.load_torch_file(str(path)))
    mp = comfy_model(family)
    before = {k: v.detach().clone() for k, v in mp.model.state_dict().items()}
    counter = _Count()
    logging.getLogger().addHandler(counter)
    try:
        patched, _ = comfy.sd.load_lora_for_models(mp, None, comfy.utils.load_torch_file(str(path)), 1.0, 0.0)
        patched.patch_model()
    finally:
        logging.getLogger().removeHandler(counter)
    after = patched.model.state_dict()
    # the weights the LoRA patches (a module whose up matrix got no gradient yet, e.g. Qwen-Image's last text MLP
    # whose output nothing reads, is loaded but leaves its weight as it was)
    changed = [k for k in patched.patches if not torch.equal(before[k], after[k])]
    delta = max((float((after[k] - before[k]).abs().max()) for k in changed), default=0.0)
    finite = all(bool(torch.isfinite(after[k]).all()) for k in patched.patches)
    modules = n_tensors // 3
    ok = counter.unloaded == 0 and counter.mismatch == 0 and bool(changed) and delta > 0 and finite
    return {"family": family, "modules": modules, "patched": len(patched.patches), "unloaded": counter.unloaded,
            "mismatch": counter.mismatch, "weights_changed": len(changed), "max_delta": delta, "ok": ok}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", help="path of a ComfyUI checkout (0.8)")
    ap.add_argument("--train-to", help="only train: write FAMILY.safetensors files into this folder")
    ap.add_argument("--loras", help="check the FAMILY.safetensors files of this folder instead of training")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--toys", default=str(REPO / "scripts"), help="folder holding comfy_toys.py")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    families = [f.strip() for f in args.families.split(",")]
    if args.train_to:
        out = Path(args.train_to)
        out.mkdir(parents=True, exist_ok=True)
        for fam in families:
            print(fam, *train_file(fam, out / f"{fam}.safetensors"))
        return 0
    if not args.comfyui:
        ap.error("--comfyui is required unless --train-to is given")
    sys.path.insert(0, args.toys)
    from comfy_toys import setup_comfy

    work = Path(tempfile.mkdtemp(prefix="il_dkeys_"))
    setup_comfy(args.comfyui, str(work / "comfy_base"))
    rows, failed = [], 0
    for fam in families:
        try:
            rows.append(check(fam, work, Path(args.loras) if args.loras else None))
        except Exception as exc:  # one family's failure is a row, the others still run
            rows.append({"family": fam, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:160]})
    print(
        "| family | LoRA modules | ComfyUI patches | lora key not loaded | shape mismatch | weights changed | max |dW| | ok |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['family']} | error: {r['error']} | | | | | | no |")
        else:
            print(f"| {r['family']} | {r['modules']} | {r['patched']} | {r['unloaded']} | {r['mismatch']} | "
                  f"{r['weights_changed']} | {r['max_delta']:.2e} | {'yes' if r['ok'] else 'NO'} |")  # fmt: skip
        failed += not r["ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
