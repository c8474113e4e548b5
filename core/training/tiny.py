"""Tiny, randomly initialised Stable-Diffusion-shaped components built fully offline (tests, benchmarks, demos).

The UNet and text encoder have SD1.5's structure (cross-attention transformer blocks with attn1/attn2/ff, CLIP
encoder layers) at toy widths, so LoRA naming, training and the diffusers round trip run exactly as on SD1.5.
The CLIP tokenizer is built from the BPE vocabulary open_clip ships (token ids match open_clip's).
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

SD15_UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

TINY_UNET_CONFIG = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}


def clip_tokenizer_files(directory: str | os.PathLike | None = None) -> Path:
    """Write vocab.json + merges.txt for transformers' CLIPTokenizer from open_clip's BPE file."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    directory = Path(directory or tempfile.mkdtemp(prefix="identitylock_tok_"))
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "vocab.json").exists() and (directory / "merges.txt").exists():
        return directory
    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return directory


def tiny_components(seed: int = 0, tokenizer_dir: str | os.PathLike | None = None) -> dict:
    """unet, text_encoder, tokenizer, vae, scheduler — tiny and random but SD-shaped. Deterministic per seed."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=49408,
            max_position_embeddings=77,
            projection_dim=32,
        )
    )
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 16, 16, 16],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    tokenizer = CLIPTokenizer.from_pretrained(str(clip_tokenizer_files(tokenizer_dir)), model_max_length=77)
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        clip_sample=False,
    )
    for m in (unet, text_encoder, vae):
        m.eval()
    return {
        "unet": unet,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "vae": vae,
        "scheduler": scheduler,
    }
