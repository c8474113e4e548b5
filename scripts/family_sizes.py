"""Exact parameter counts of each family's denoiser and of its LoRA per unit of rank, from ComfyUI's own model
classes at their published widths, built on the meta device (no memory, no weights, no download).

The configs below are the ones ComfyUI 0.8's model_detection derives from the released checkpoints; the printed
denoiser totals are checked against the published sizes (a wrong config would show here). The LoRA counts use
the pack's own target matching (core/families.py, core/training/network.target_linears), so they are what the
trainer really adapts. core/families.py stores the results (``lora_params_per_rank``) for the VRAM arithmetic in
docs/training.md.

    python scripts/family_sizes.py --comfyui /path/to/ComfyUI
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SD15 = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
            adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
            transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
            use_linear_in_transformer=False, context_dim=768, num_heads=8,
            transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], use_temporal_attention=False,
            use_temporal_resblock=False)  # fmt: skip
SDXL = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
            num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=320,
            num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4],
            transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
            transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], use_temporal_attention=False,
            use_temporal_resblock=False)  # fmt: skip
FLUX1 = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
             hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
             theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[])  # fmt: skip
_FLUX2 = dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, axes_dim=[32, 32, 32, 32],
              mlp_ratio=3.0, theta=2000, patch_size=1, qkv_bias=False, global_modulation=True, mlp_silu_act=True,
              ops_bias=False, default_ref_method="index", ref_index_scale=10.0, txt_ids_dims=[3])  # fmt: skip
FLUX2_DEV = dict(_FLUX2, context_in_dim=15360, hidden_size=6144, num_heads=48, depth=8, depth_single_blocks=48,
                 guidance_embed=True)  # fmt: skip
FLUX2_KLEIN_4B = dict(_FLUX2, context_in_dim=7680, hidden_size=3072, num_heads=24, depth=5, depth_single_blocks=20,
                      guidance_embed=False)  # fmt: skip
ZIMAGE = dict(image_model="lumina2", patch_size=2, in_channels=16, dim=3840, cap_feat_dim=2560, n_layers=30,
              qk_norm=True, n_heads=30, n_kv_heads=30, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512],
              rope_theta=256.0, ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True, time_scale=1000.0,
              pad_tokens_multiple=32)  # fmt: skip
LUMINA2 = dict(image_model="lumina2", patch_size=2, in_channels=16, dim=2304, cap_feat_dim=2304, n_layers=26,
               qk_norm=True, n_heads=24, n_kv_heads=8, axes_dims=[32, 32, 32], axes_lens=[300, 512, 512],
               rope_theta=10000.0, ffn_dim_multiplier=4.0)  # fmt: skip
QWEN = dict(image_model="qwen_image", in_channels=64, num_layers=60)

# (family key, label, comfy.supported_models class, unet_config, published size in billions)
MODELS = [
    ("sd15", "SD1.5", "SD15", SD15, 0.86),
    ("sdxl", "SDXL", "SDXL", SDXL, 2.57),
    ("flux1", "FLUX.1-dev", "Flux", FLUX1, 11.9),
    ("flux2", "Flux.2-dev", "Flux2", FLUX2_DEV, 32.0),
    ("flux2", "Flux.2-klein-4B", "Flux2", FLUX2_KLEIN_4B, 4.0),
    ("zimage", "Z-Image", "ZImage", ZIMAGE, 6.15),
    ("qwen_image", "Qwen-Image", "QwenImage", QWEN, 20.4),
    ("lumina2", "Lumina Image 2.0", "Lumina2", LUMINA2, 2.6),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", required=True, help="a ComfyUI 0.8 checkout")
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.comfyui))
    pack = types.ModuleType(
        "identitylock"
    )  # the checkout as package "identitylock", without its node imports
    pack.__path__ = [str(REPO)]
    sys.modules.setdefault("identitylock", pack)
    import comfy.cli_args  # type: ignore[import-not-found]

    comfy.cli_args.args.cpu = True
    import comfy.supported_models as sm  # type: ignore[import-not-found]
    import torch
    from identitylock.core.families import get_family  # type: ignore[import-not-found]
    from identitylock.core.training.network import target_linears  # type: ignore[import-not-found]

    rows = []
    print(f"{'model':18} {'denoiser':>10} {'published':>9} {'LoRA/rank attn':>15} {'LoRA/rank attn_ff':>18}")
    for key, label, config_name, unet_config, published in MODELS:
        config = getattr(sm, config_name)(dict(unet_config))
        with torch.device("meta"):
            model = config.get_model({}, device=torch.device("meta"))
        root = model.diffusion_model
        total = sum(p.numel() for p in root.parameters())
        family = get_family(key)
        per_rank = {}
        for scope in ("attn", "attn_ff"):
            per_rank[scope] = sum(m.weight.shape[0] + m.weight.shape[1]
                                  for _, m in target_linears(root, family.target_suffixes(scope)))  # fmt: skip
        print(
            f"{label:18} {total / 1e9:>9.3f}B {published:>8.2f}B {per_rank['attn']:>15,} {per_rank['attn_ff']:>18,}"
        )
        blocks = [m for m in root.modules() if type(m).__name__ in DIT_BLOCKS]
        rows.append((label, family, total, per_rank["attn_ff"], blocks, unet_config))
    print()
    print(VRAM_HEAD)
    for label, family, total, per_rank, blocks, unet_config in rows:
        print(vram_row(label, family, total, per_rank, blocks, unet_config))
    return 0


DIT_BLOCKS = {"DoubleStreamBlock", "SingleStreamBlock", "JointTransformerBlock", "QwenImageTransformerBlock"}
TEXT_TOKENS = {"flux1": 512, "flux2": 512, "zimage": 256, "qwen_image": 256, "lumina2": 256}
OVERHEAD_GB = 2.0  # CUDA context, allocator slack, the VAE / text encoder offloaded between uses
GB = 1e9


def vram_row(label, family, total, lora_per_rank, blocks, unet_config) -> str:
    """Base weights (exact) + LoRA with fp32 master weights, gradients and AdamW moments (16 bytes/parameter,
    exact count) + activations with gradient checkpointing (estimate: each block's input kept in bf16, plus
    one block's recomputation at about 24 hidden-sized tensors) + a fixed overhead, at the family's resolution."""
    lora = {r: lora_per_rank * r * 16 / GB for r in (16, 32)}
    if blocks:
        hidden = unet_config.get("hidden_size") or unet_config.get("dim") or 3072
        patch = unet_config.get("patch_size", 2)
        downscale = 16 if family.key == "flux2" else 8  # Flux.2's latent is 1/16 with 128 packed channels
        tokens = (family.resolution // downscale // patch) ** 2 + TEXT_TOKENS.get(family.key, 256)
        act = 2 * tokens * hidden * (len(blocks) + 24) / GB
        act_text = f"{act:5.1f}"
    else:
        act, act_text = 0.0, "  n/a"
    cells = []
    for base_bytes in (2, 1):
        for r in (16, 32):
            need = total * base_bytes / GB + lora[r] + act + OVERHEAD_GB
            cells.append(f"{need:5.1f}{'*' if need > 24 else ' '}")
    return (f"| {label:18} | {total * 2 / GB:5.1f} | {total / GB:5.1f} | {lora[16]:4.2f} | {lora[32]:4.2f} | "
            f"{act_text} | " + " | ".join(cells) + f" | {family.default_preset} |")  # fmt: skip


VRAM_HEAD = (
    "| model | base bf16 GB | base fp8 GB | LoRA r16 GB | LoRA r32 GB | activations GB | bf16 r16 | bf16 r32 | "
    "fp8 r16 | fp8 r32 | AUTO preset |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


if __name__ == "__main__":
    raise SystemExit(main())
