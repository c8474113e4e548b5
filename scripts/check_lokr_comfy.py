"""Check that our LoKr (and LoRA) files load in a real ComfyUI exactly as we trained them.

Builds a tiny random-weight SD1.5-architecture UNet with ComfyUI's own classes (supported_models.SD15 ->
model_base.BaseModel -> ModelPatcher), attaches an IdentityLock adapter network with random factors, saves it with
``save_lora``, loads the file through ComfyUI's ``LoraLoaderModelOnly`` node (which runs ``LoraLoader.load_lora``,
``comfy.lora.load_lora`` and the LoKr weight adapter), patches the model and compares, per adapted weight, ComfyUI's
ΔW (patched minus original, strength 1 and 0.5) with our ``weight_delta()``; also ΔW of the adapter ComfyUI built
from the file applied to a zero weight (no W + ΔW - W rounding). Counts the log's "lora key not loaded" lines.

    PYTHONPATH=<dir holding an identitylock symlink> /tmp/cvenv/bin/python scripts/check_lokr_comfy.py \\
        --comfyui /work/comfy

Prints one row per adapter configuration; exits 1 when a key is not loaded or a ΔW differs by more than --tol.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (label, kind, rank, alpha, factor, decompose_both): full and low-rank factors, LoRA as the reference case
CONFIGS = [
    ("lora r4", "lora", 4, 8.0, -1, False),
    ("lokr r4 f-1 (full w1,w2)", "lokr", 4, 8.0, -1, False),
    ("lokr r4 f2 (low-rank w2)", "lokr", 4, 8.0, 2, False),
    ("lokr r2 f4 (low-rank w1,w2)", "lokr", 2, 3.0, 4, True),
]
SUFFIXES = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")


def _import_identitylock():
    try:
        import identitylock  # noqa: F401
    except (
        ImportError
    ):  # no PYTHONPATH given: a temporary folder with an ``identitylock`` link to this checkout
        tmp = tempfile.mkdtemp(prefix="identitylock_path_")
        os.symlink(REPO, os.path.join(tmp, "identitylock"))
        sys.path.insert(0, tmp)


class _KeyLog(logging.Handler):
    """Counts ComfyUI's 'lora key not loaded' / 'NOT LOADED' warnings."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if "lora key not loaded" in msg or "NOT LOADED" in msg:
            self.lines.append(msg)


def tiny_sd15_patcher(torch, seed: int = 0):
    """A ComfyUI ModelPatcher over a toy-width SD1.5 UNet (2 levels, 32/64 channels, context 64), random weights."""
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = {
        "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
        "adm_in_channels": None, "in_channels": 4, "out_channels": 4, "model_channels": 32,
        "num_res_blocks": [1, 1], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
        "channel_mult": [1, 2], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
        "context_dim": 64, "use_temporal_resblock": False, "use_temporal_attention": False,
    }  # fmt: skip
    config = comfy.supported_models.SD15(unet_config)
    model = config.get_model({})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # ComfyUI's ops leave weights uninitialised
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def check_config(torch, nodes, folder, mp, ldm_map, label, kind, rank, alpha, factor, both, seed, keylog):
    from identitylock.core.training.comfy_backend import name_mapper
    from identitylock.core.training.lora_format import save_lora
    from identitylock.core.training.network import LoRANetwork

    net = LoRANetwork(rank, alpha, seed=seed, kind=kind, factor=factor, decompose_both=both)
    wrappers = net.weight_wrappers(mp.model.diffusion_model, SUFFIXES, name_map=name_mapper(ldm_map))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # trained-looking factors: every one non-zero, so ΔW is not trivially 0
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    name = f"check_{kind}_{len(os.listdir(folder))}.safetensors"
    info = {"family": "sd15", "rank": rank, "alpha": alpha, "target_modules": "attn_ff", **net.adapter_info()}
    save_lora(os.path.join(folder, name), net.kohya_state_dict(), info)

    path_of = {id(fn.lora): path for path, fn in wrappers}
    ours = {path_of[id(m)]: m.weight_delta().detach() for m in net.loras.values()}
    sd = mp.model.diffusion_model.state_dict()
    before = {p: sd[p].detach().clone() for p in ours}
    keylog.lines.clear()
    out = {}
    for strength in (1.0, 0.5):
        (patched,) = nodes.LoraLoaderModelOnly().load_lora_model_only(mp, name, strength)
        patched.patch_model()
        try:
            after = patched.model.diffusion_model.state_dict()
            out[strength] = max(
                float((after[p] - before[p] - strength * d.reshape(before[p].shape)).abs().max())
                for p, d in ours.items()
            )
            n_patched = len([k for k in patched.patches if k.startswith("diffusion_model.")])
        finally:
            patched.unpatch_model()
    # the adapter ComfyUI built from the file, on a zero weight: its ΔW without the rounding of W + ΔW - W
    import comfy.lora
    import comfy.utils

    lora_sd = comfy.utils.load_torch_file(os.path.join(folder, name), safe_load=True)
    loaded = comfy.lora.load_lora(lora_sd, comfy.lora.model_lora_keys_unet(mp.model, {}))
    direct = 0.0
    for key, adapter in loaded.items():
        p = key.removeprefix("diffusion_model.")
        zero = torch.zeros_like(before[p])
        d = adapter.calculate_weight(zero, key, 1.0, 1.0, None, lambda a: a)
        direct = max(direct, float((d - ours[p].reshape(d.shape)).abs().max()))
    biggest = max(float(d.abs().max()) for d in ours.values())
    names = ",".join(sorted({a.name for a in loaded.values()}))
    return {"label": label, "adapter": names, "modules": len(ours), "patched": n_patched,
            "not_loaded": len(keylog.lines), "max_dW": biggest, "direct": direct, "diff_1": out[1.0],
            "diff_05": out[0.5]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", required=True, help="path of a ComfyUI 0.8 checkout")
    ap.add_argument("--tol", type=float, default=1e-6, help="largest allowed |ΔW difference| (default 1e-6)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(args.comfyui).resolve()))
    from comfy.cli_args import args as comfy_args

    comfy_args.cpu = True
    import comfy.utils
    import folder_paths
    import torch

    import nodes

    _import_identitylock()
    from identitylock.core.training.comfy_backend import ldm_to_diffusers_map

    keylog = _KeyLog()
    logging.getLogger().addHandler(keylog)
    folder = tempfile.mkdtemp(prefix="lokr_check_")
    folder_paths.add_model_folder_path("loras", folder, is_default=True)
    mp = tiny_sd15_patcher(torch, args.seed)
    ldm_map = ldm_to_diffusers_map(comfy.utils.unet_to_diffusers(mp.model.model_config.unet_config))

    from comfy.weight_adapter.base import factorization as comfy_factorization
    from identitylock.core.training.lokr import factorization

    splits = [(d, f) for d in range(1, 4097) for f in (-1, 1, 2, 4, 8, 16, 32)]
    wrong = [(d, f) for d, f in splits if factorization(d, f) != comfy_factorization(d, f)]
    print(f"factorization: {len(splits) - len(wrong)}/{len(splits)} (dim <= 4096, factor -1..32) equal ComfyUI's"
          + (f"; first differing: {wrong[:5]}" if wrong else ""))  # fmt: skip
    rows = [check_config(torch, nodes, folder, mp, ldm_map, *cfg, args.seed, keylog) for cfg in CONFIGS]
    print(f"{'network':28} {'comfy':>5} {'modules':>7} {'patched':>7} {'not loaded':>10} {'max|dW|':>8} "
          f"{'|dW diff|':>9} {'model s=1':>9} {'s=0.5':>9}")  # fmt: skip
    failed = bool(wrong)
    for r in rows:
        bad = r["not_loaded"] or r["patched"] != r["modules"] or r["adapter"] != r["label"][:4]
        bad = bad or max(r["direct"], r["diff_1"], r["diff_05"]) > args.tol
        failed |= bool(bad)
        print(f"{r['label']:28} {r['adapter']:>5} {r['modules']:7d} {r['patched']:7d} {r['not_loaded']:10d} "
              f"{r['max_dW']:8.3g} {r['direct']:9.3g} {r['diff_1']:9.3g} {r['diff_05']:9.3g}"
              f"{'  FAIL' if bad else ''}")  # fmt: skip
    print(
        "FAILED" if failed else f"OK: every file loads fully and ComfyUI's ΔW equals ours within {args.tol:g}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
