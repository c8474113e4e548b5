"""Tiny, randomly initialised diffusers pipelines of every family the standalone trainer loads (tests, benchmarks).

Each pipeline is the family's real diffusers pipeline class with its real denoiser, VAE and text-encoder classes
at toy widths, so ``encode_prompt``, latent packing and the denoiser's forward run exactly as on the full model.
STAND-IN: the tokenizers are all the CLIP BPE tokenizer of ``tiny.py`` (offline; the real T5 / Qwen tokenizers
are downloads), given a minimal chat template where the pipeline asks for one. They only change which ids a caption
becomes, not how the pipeline uses them.
"""

from __future__ import annotations

import os
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_FAMILIES = ("sd15", "sdxl", "flux1", "flux2", "zimage", "qwen_image", "sd3", "chroma")


def _tokenizer(tokenizer_dir: str | os.PathLike | None, max_length: int = 77, chat: bool = False):
    from transformers import CLIPTokenizer

    from .tiny import clip_tokenizer_files

    tok = CLIPTokenizer.from_pretrained(str(clip_tokenizer_files(tokenizer_dir)), model_max_length=max_length)
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _clip(seed: int, projection: bool = False, hidden: int = 32):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=49408, max_position_embeddings=77, projection_dim=hidden,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _t5(seed: int, d_model: int = 32):
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(
        T5Config(d_model=d_model, d_ff=64, d_kv=8, num_layers=2, num_heads=4, vocab_size=49408,
                 relative_attention_num_buckets=8)
    )  # fmt: skip


def _vae(seed: int, latent_channels: int, **kw: Any):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[8, 16, 16, 16], layers_per_block=1,
        latent_channels=latent_channels, norm_num_groups=8, sample_size=64, **kw,
    )  # fmt: skip


def _qwen3(seed: int, layers: int, causal_lm: bool = False):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    torch.manual_seed(seed)
    cfg = Qwen3Config(
        hidden_size=16, intermediate_size=16, num_hidden_layers=layers, num_attention_heads=2,
        num_key_value_heads=2, head_dim=8, vocab_size=49408, max_position_embeddings=1024,
    )  # fmt: skip
    return (Qwen3ForCausalLM if causal_lm else Qwen3Model)(cfg)


def _sdxl(seed, tok_dir):
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], block_out_channels=[32, 64], layers_per_block=1,
        cross_attention_dim=64, attention_head_dim=[2, 4], norm_num_groups=8, transformer_layers_per_block=[1, 1],
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
        use_linear_projection=True,
    )  # fmt: skip
    sched = EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        steps_offset=1, timestep_spacing="leading",
    )  # fmt: skip
    return StableDiffusionXLPipeline(
        vae=_vae(seed + 2, 4, scaling_factor=0.13025), text_encoder=_clip(seed + 1),
        text_encoder_2=_clip(seed + 3, projection=True), tokenizer=_tokenizer(tok_dir),
        tokenizer_2=_tokenizer(tok_dir), unet=unet, scheduler=sched, force_zeros_for_empty_prompt=True,
    )  # fmt: skip


def _flow_scheduler(**kw: Any):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**kw)


def _flux1(seed, tok_dir):
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    tr = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    )  # fmt: skip
    return FluxPipeline(
        scheduler=_flow_scheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
        vae=_vae(seed + 2, 4, scaling_factor=0.3611, shift_factor=0.1159), text_encoder=_clip(seed + 1),
        tokenizer=_tokenizer(tok_dir), text_encoder_2=_t5(seed + 3), tokenizer_2=_tokenizer(tok_dir, 512),
        transformer=tr,
    )  # fmt: skip


def _chroma(seed, tok_dir):
    import torch
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    torch.manual_seed(seed)
    tr = ChromaTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=[4, 4, 8], approximator_hidden_dim=32,
        approximator_layers=1, approximator_num_channels=16,
    )  # fmt: skip
    return ChromaPipeline(
        scheduler=_flow_scheduler(shift=1.0), vae=_vae(seed + 2, 4, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=_t5(seed + 3), tokenizer=_tokenizer(tok_dir, 512), transformer=tr,
    )  # fmt: skip


def _sd3(seed, tok_dir):
    import torch
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    tr = SD3Transformer2DModel(  # ComfyUI's MMDiT has hidden = 64 x depth, heads = depth: same dims here
        sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=64, num_attention_heads=2,
        caption_projection_dim=128, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4,
        dual_attention_layers=(0,), qk_norm="rms_norm", pos_embed_max_size=32,
    )  # fmt: skip
    return StableDiffusion3Pipeline(
        scheduler=_flow_scheduler(shift=3.0), vae=_vae(seed + 2, 4, scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=_clip(seed + 1, projection=True), tokenizer=_tokenizer(tok_dir),
        text_encoder_2=_clip(seed + 4, projection=True), tokenizer_2=_tokenizer(tok_dir),
        text_encoder_3=_t5(seed + 3), tokenizer_3=_tokenizer(tok_dir, 256), transformer=tr,
    )  # fmt: skip


def _zimage(seed, tok_dir):
    import torch
    from diffusers import ZImagePipeline, ZImageTransformer2DModel

    torch.manual_seed(seed)
    tr = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
        axes_dims=[8, 4, 4], axes_lens=[256, 32, 32],
    )  # fmt: skip
    with torch.no_grad():  # torch.empty in diffusers' init: fix them (as diffusers' own tests do)
        tr.x_pad_token.copy_(torch.ones_like(tr.x_pad_token))
        tr.cap_pad_token.copy_(torch.ones_like(tr.cap_pad_token))
    return ZImagePipeline(
        scheduler=_flow_scheduler(shift=3.0), vae=_vae(seed + 2, 4, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=_qwen3(seed + 1, 3), tokenizer=_tokenizer(tok_dir, 512, chat=True), transformer=tr,
    )  # fmt: skip


def _qwen_image(seed, tok_dir):
    import torch
    from diffusers import AutoencoderKLQwenImage, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    tr = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=3,
        joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    )  # fmt: skip
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLQwenImage(
        base_dim=24, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.1, 0.05, 0.0], latents_std=[1.5, 2.0, 1.8, 2.2],
    )  # fmt: skip
    torch.manual_seed(seed + 1)
    te = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config={
                "hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 2, "vocab_size": 49408,
                "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                "rope_theta": 1000000.0,
            },
            vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                           "out_hidden_size": 16},
            hidden_size=16, vocab_size=49408, vision_end_token_id=49400, vision_start_token_id=49401,
            vision_token_id=49402, image_token_id=49403, video_token_id=49404,
        )
    ).eval()  # fmt: skip
    return QwenImagePipeline(
        scheduler=_flow_scheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                  time_shift_type="exponential"),
        vae=vae, text_encoder=te, tokenizer=_tokenizer(tok_dir, 1024), transformer=tr,
    )  # fmt: skip


def _flux2(seed, tok_dir):
    import torch
    from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel

    torch.manual_seed(seed)
    tr = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=48, timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=False,
    )  # fmt: skip
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLFlux2(
        sample_size=32, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, use_quant_conv=False, use_post_quant_conv=False,
    )  # fmt: skip
    with torch.no_grad():  # a trained VAE's batch-norm statistics are not 0/1: make the normalisation visible
        vae.bn.running_mean.copy_(torch.linspace(-0.2, 0.2, vae.bn.running_mean.numel()))
        vae.bn.running_var.copy_(torch.linspace(0.5, 2.0, vae.bn.running_var.numel()))
    return Flux2KleinPipeline(
        scheduler=_flow_scheduler(shift=3.0, use_dynamic_shifting=True), vae=vae,
        text_encoder=_qwen3(seed + 1, 27, causal_lm=True), tokenizer=_tokenizer(tok_dir, 512, chat=True),
        transformer=tr, is_distilled=False,
    )  # fmt: skip


_BUILDERS = {
    "sdxl": _sdxl, "flux1": _flux1, "chroma": _chroma, "sd3": _sd3, "zimage": _zimage,
    "qwen_image": _qwen_image, "flux2": _flux2,
}  # fmt: skip


def tiny_pipeline(family: str, seed: int = 0, tokenizer_dir: str | os.PathLike | None = None):
    """The family's diffusers pipeline at toy widths, random weights, fully offline; deterministic per seed."""
    from ..diffusion import _cache_root, build_tiny_pipeline

    tok_dir = tokenizer_dir or (_cache_root() / "tiny_tokenizer")
    if family == "sd15":
        return build_tiny_pipeline(seed, tok_dir)
    pipe = _BUILDERS[family](seed, tok_dir)
    for comp in pipe.components.values():
        if hasattr(comp, "eval"):
            comp.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
