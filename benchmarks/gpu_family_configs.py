"""Published configs of the denoisers (and VAEs) benchmarked by gpu_families.py, in diffusers' names.

Written out here because nothing is downloaded; parameter counts on the meta device match the released models
(SD1.5 UNet 0.860 B, SDXL UNet 2.567 B, Z-Image Turbo 6.155 B, FLUX.1-dev 11.901 B, Qwen-Image 20.430 B,
FLUX.2-dev 32.223 B). ``--toy`` overrides shrink depth and width only.
Imports the pack (``identitylock``): gpu_families.py makes it importable first.
"""

from __future__ import annotations

from identitylock.core.training.tiny import SD15_UNET_CONFIG

SD15_UNET = SD15_UNET_CONFIG  # the pack's own copy of the released SD1.5 UNet config
SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "cross_attention_dim": 2048,
    "attention_head_dim": [5, 10, 20],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
FLUX1_DEV = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}
FLUX2_DEV = {
    "patch_size": 1,
    "in_channels": 128,
    "num_layers": 8,
    "num_single_layers": 48,
    "attention_head_dim": 128,
    "num_attention_heads": 48,
    "joint_attention_dim": 15360,
    "timestep_guidance_channels": 256,
    "mlp_ratio": 3.0,
    "axes_dims_rope": [32, 32, 32, 32],
    "rope_theta": 2000,
    "eps": 1e-6,
    "guidance_embeds": True,
}
ZIMAGE_TURBO = {
    "all_patch_size": [2],
    "all_f_patch_size": [1],
    "in_channels": 16,
    "dim": 3840,
    "n_layers": 30,
    "n_refiner_layers": 2,
    "n_heads": 30,
    "n_kv_heads": 30,
    "norm_eps": 1e-5,
    "qk_norm": True,
    "cap_feat_dim": 2560,
    "rope_theta": 256.0,
    "t_scale": 1000.0,
    "axes_dims": [32, 48, 48],
    "axes_lens": [1536, 512, 512],
}
QWEN_IMAGE = {
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 60,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 3584,
    "guidance_embeds": False,
    "axes_dims_rope": [16, 56, 56],
}
# VAEs (decoder timed once per render)
SD_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
}
FLUX_VAE = {**SD_VAE, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False}
FLUX2_VAE: dict = {}  # AutoencoderKLFlux2 defaults (32 latent channels) are the released config
QWEN_VAE: dict = {}  # AutoencoderKLQwenImage defaults are the released config

TOY_UNET = {"block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8}
TOY_VAE = {
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
}

# LoRA targets (peft full-match regexes): attention q/k/v/out (+ the text-stream projections of dual-stream
# blocks) and the MLP linears of every block; never embedders, modulation (adaLN) or final layers
_QKVO = r"to_q|to_k|to_v|to_out\.0"
_JOINT = _QKVO + r"|add_q_proj|add_k_proj|add_v_proj|to_add_out"
LORA_TARGETS = {
    "unet": rf".*\.(?:{_QKVO}|ff\.net\.0\.proj|ff\.net\.2)",
    "zimage": rf"(?:layers|noise_refiner|context_refiner)\.\d+\.(?:attention\.(?:{_QKVO})|feed_forward\.w[123])",
    "flux1": rf"transformer_blocks\.\d+\.(?:attn\.(?:{_JOINT})|ff(?:_context)?\.net\.(?:0\.proj|2))"
    r"|single_transformer_blocks\.\d+\.(?:attn\.to_[qkv]|proj_mlp|proj_out)",
    "qwen": rf"transformer_blocks\.\d+\.(?:attn\.(?:{_JOINT})|(?:img|txt)_mlp\.net\.(?:0\.proj|2))",
    "flux2": rf"transformer_blocks\.\d+\.(?:attn\.(?:{_JOINT})|ff(?:_context)?\.linear_(?:in|out))"
    r"|single_transformer_blocks\.\d+\.attn\.(?:to_qkv_mlp_proj|to_out)",
}


def family_specs(toy: bool) -> list[dict]:
    """Smallest first, so a run cut short still returns most rows."""

    def t(real: dict, small: dict) -> dict:
        return {**real, **small} if toy else dict(real)

    sd15_unet = t(SD15_UNET, {**TOY_UNET, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                              "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32,
                              "attention_head_dim": 4})  # fmt: skip
    sdxl_unet = t(SDXL_UNET, {**TOY_UNET, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                              "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "cross_attention_dim": 32,
                              "transformer_layers_per_block": [1, 2], "attention_head_dim": [2, 4],
                              "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 32 + 6 * 8})  # fmt: skip
    return [
        {
            "name": "SD1.5",
            "cls": "UNet2DConditionModel",
            "config": sd15_unet,
            "kind": "unet",
            "res": 64 if toy else 512,
            "text": (77, sd15_unet["cross_attention_dim"]),
            "steps": 25,
            "sample": "CFG, batch 2 (cond + uncond) per step",
            "vae": ("AutoencoderKL", t(SD_VAE, TOY_VAE), 4),
            "pack": True,
        },
        {
            "name": "SDXL",
            "cls": "UNet2DConditionModel",
            "config": sdxl_unet,
            "kind": "unet",
            "res": 64 if toy else 1024,
            "text": (77, sdxl_unet["cross_attention_dim"]),
            "steps": 30,
            "pooled": 32 if toy else 1280,
            "sample": "CFG, batch 2 (cond + uncond) per step",
            "vae": ("AutoencoderKL", t(SD_VAE, TOY_VAE), 4),
        },
        {
            "name": "Z-Image Turbo",
            "cls": "ZImageTransformer2DModel",
            "kind": "zimage",
            "config": t(
                ZIMAGE_TURBO,
                {
                    "dim": 64,
                    "n_layers": 2,
                    "n_refiner_layers": 1,
                    "n_heads": 2,
                    "n_kv_heads": 2,
                    "cap_feat_dim": 32,
                    "axes_dims": [8, 12, 12],
                },
            ),
            "res": 128 if toy else 1024,
            "text": (128, 32 if toy else 2560),
            "steps": 8,
            "sample": "no CFG (guidance 0), batch 1 per step",
            "vae": ("AutoencoderKL", t(FLUX_VAE, TOY_VAE), 16),
        },  # fmt: skip
        {
            "name": "FLUX.1-dev",
            "cls": "FluxTransformer2DModel",
            "kind": "flux1",
            "config": t(
                FLUX1_DEV,
                {
                    "num_layers": 1,
                    "num_single_layers": 2,
                    "attention_head_dim": 16,
                    "num_attention_heads": 2,
                    "joint_attention_dim": 32,
                    "pooled_projection_dim": 16,
                    "axes_dims_rope": [4, 6, 6],
                },
            ),
            "res": 128 if toy else 1024,
            "text": (512 if not toy else 16, 32 if toy else 4096),
            "pooled": 16 if toy else 768,
            "steps": 28,
            "sample": "guidance embedding (distilled CFG), batch 1 per step",
            "vae": ("AutoencoderKL", t(FLUX_VAE, TOY_VAE), 16),
        },  # fmt: skip
        {
            "name": "Qwen-Image",
            "cls": "QwenImageTransformer2DModel",
            "kind": "qwen",
            "config": t(
                QWEN_IMAGE,
                {
                    "num_layers": 2,
                    "attention_head_dim": 16,
                    "num_attention_heads": 2,
                    "joint_attention_dim": 32,
                    "axes_dims_rope": [4, 6, 6],
                },
            ),
            "res": 128 if toy else 1024,
            "text": (128 if not toy else 16, 32 if toy else 3584),
            "steps": 30,
            "sample": "true CFG: two batch-1 forwards (cond, negative) per step",
            "vae": (
                "AutoencoderKLQwenImage",
                {"base_dim": 8, "dim_mult": [1, 2], "temperal_downsample": [False]} if toy else QWEN_VAE,
                16,
            ),
        },  # fmt: skip
        {
            "name": "FLUX.2-dev",
            "cls": "Flux2Transformer2DModel",
            "kind": "flux2",
            "config": t(
                FLUX2_DEV,
                {
                    "num_layers": 1,
                    "num_single_layers": 2,
                    "attention_head_dim": 16,
                    "num_attention_heads": 2,
                    "joint_attention_dim": 48,
                    "axes_dims_rope": [4, 4, 4, 4],
                },
            ),
            "res": 128 if toy else 1024,
            "text": (512 if not toy else 16, 48 if toy else 15360),
            "steps": 28,
            "sample": "guidance embedding (distilled CFG), batch 1 per step",
            "vae": ("AutoencoderKLFlux2", TOY_VAE if toy else FLUX2_VAE, 32),
        },  # fmt: skip
    ]
