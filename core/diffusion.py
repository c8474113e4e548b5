"""Standalone generation with diffusers (outside ComfyUI): load a model offline, attach a LoRA, render by seed.

- ``load_pipeline``: a local diffusers folder of any family the standalone trainer knows (``detect_family``
  reads ``model_index.json`` or a single file's keys), or a single checkpoint file. A single SD1.5 file needs no
  config: we write SD1.5's configs (and a CLIP tokenizer made from open_clip's bundled BPE vocabulary) into a
  cache folder; the other families' single files need a local diffusers folder. Nothing is ever downloaded.
- ``build_tiny_pipeline``: a tiny randomly initialised SD-shaped pipeline (tests, benchmarks, demos); it reuses
  ``core.training.tiny`` so the trainer and the renderer share one tiny model.
- ``DiffusersRenderer``: txt2img / img2img with a per-call LoRA scale, and ``render(seed)`` / ``render_batch``
  callables for the seed search. Batched seeds use one generator per image, so a seed renders the same
  image alone or inside a batch.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IdentityLockError, ModelNotFoundError

_log = logging.getLogger("IdentityLock.diffusion")

LORA_ADAPTER = "identitylock"
SAMPLERS = ("default", "ddim", "euler", "euler_a", "dpmpp_2m", "pndm")

# SD1.5's component configs (public, from the v1.5 diffusers release), so single files load offline.
SD15_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.30.0",
    "feature_extractor": [None, None],
    "safety_checker": [None, None],
    "requires_safety_checker": False,
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SD15_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SD15_VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD15_TEXT_ENCODER = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}
TOKENIZER_CONFIG = {
    "tokenizer_class": "CLIPTokenizer",
    "model_max_length": 77,
    "do_lower_case": True,
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}


def _cache_root() -> Path:
    root = os.environ.get("IDENTITYLOCK_CACHE") or os.path.join(tempfile.gettempdir(), "identitylock_cache")
    return Path(root)


def sd15_config_dir(directory: str | os.PathLike | None = None) -> Path:
    """Write an SD1.5 diffusers config folder (no weights) for ``from_single_file(config=...)``; cached."""
    from .training.tiny import clip_tokenizer_files

    d = Path(directory) if directory else _cache_root() / "sd15_config"
    if (d / "model_index.json").exists() and (d / "tokenizer" / "vocab.json").exists():
        return d
    for sub, cfg, name in (
        ("unet", SD15_UNET, "config.json"),
        ("vae", SD15_VAE, "config.json"),
        ("text_encoder", SD15_TEXT_ENCODER, "config.json"),
        ("scheduler", SD15_SCHEDULER, "scheduler_config.json"),
        ("tokenizer", TOKENIZER_CONFIG, "tokenizer_config.json"),
    ):
        (d / sub).mkdir(parents=True, exist_ok=True)
        (d / sub / name).write_text(json.dumps(cfg, indent=2))
    clip_tokenizer_files(d / "tokenizer")
    (d / "model_index.json").write_text(json.dumps(SD15_MODEL_INDEX, indent=2))
    return d


# diffusers pipeline class -> family key (variants of one family share its row in core.families)
PIPELINE_FAMILY = {
    "StableDiffusionPipeline": "sd15", "StableDiffusionXLPipeline": "sdxl", "FluxPipeline": "flux1",
    "Flux2Pipeline": "flux2", "Flux2KleinPipeline": "flux2", "ZImagePipeline": "zimage",
    "QwenImagePipeline": "qwen_image", "StableDiffusion3Pipeline": "sd3", "ChromaPipeline": "chroma",
    "Lumina2Pipeline": "lumina2",
}  # fmt: skip
# single-file checkpoints: a key that only that family's checkpoint has (original / ComfyUI / diffusers naming,
# any "model.diffusion_model." / "diffusion_model." / "model." prefix removed); first match wins
_SINGLE_FILE_KEYS = (
    ("double_stream_modulation_img.lin.weight", "flux2"),
    ("single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight", "flux2"),
    ("distilled_guidance_layer.in_proj.weight", "chroma"),
    ("double_blocks.0.img_attn.qkv.weight", "flux1"),
    ("single_transformer_blocks.0.proj_mlp.weight", "flux1"),
    ("joint_blocks.0.context_block.attn.qkv.weight", "sd3"),
    ("transformer_blocks.0.ff_context.net.0.proj.weight", "sd3"),
    ("txt_norm.weight", "qwen_image"),
    ("x_pad_token", "zimage"),
    ("cap_embedder.1.weight", "lumina2"),
    ("conditioner.embedders.1.model.ln_final.weight", "sdxl"),
    ("label_emb.0.0.weight", "sdxl"),
    ("input_blocks.0.0.weight", "sd15"),
)


def _single_file_keys(path: Path) -> set[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
    except Exception as exc:  # safetensors raises its own error types for a damaged or foreign file
        raise ModelNotFoundError(f"{path.name} is not a readable .safetensors checkpoint: {exc}") from exc
    out = set()
    for k in keys:
        for prefix in ("model.diffusion_model.", "diffusion_model.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
                break
        out.add(k)
    return out


def detect_family(model: str | os.PathLike) -> str:
    """The family key of a local model: a diffusers folder's ``model_index.json`` ``_class_name``, or the keys of
    a single ``.safetensors`` checkpoint. Never reads weights, never touches the network."""
    from .families import supported_sentence

    path = Path(model)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ModelNotFoundError(f"{path} is a folder without model_index.json: not a diffusers pipeline")
        try:
            name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
        except (OSError, ValueError, AttributeError) as exc:
            raise ModelNotFoundError(f"{index} is not a readable model_index.json: {exc}") from exc
        for cls, fam in PIPELINE_FAMILY.items():
            base = cls.removesuffix("Pipeline")  # QwenImagePipeline -> QwenImage(Img2Img|Inpaint)Pipeline too
            if name in (cls, f"{base}Img2ImgPipeline", f"{base}InpaintPipeline"):
                return fam
        raise IdentityLockError(
            f"{path.name} is a {name or 'unnamed'} pipeline, not a family IdentityLock trains; {supported_sentence()}"
        )
    if path.suffix.lower() != ".safetensors":
        return "sd15"  # .ckpt: pickled, its keys cannot be read safely; the SD1.5 loader is the one that takes it
    keys = _single_file_keys(path)
    for key, fam in _SINGLE_FILE_KEYS:
        if key in keys:
            return fam
    raise IdentityLockError(
        f"could not tell the model family of {path.name} from its keys: give --family ({supported_sentence()})"
    )


def family_of_pipeline(pipe: Any) -> str:
    name = type(pipe).__name__
    if name not in PIPELINE_FAMILY:
        from .families import supported_sentence

        raise IdentityLockError(f"a {name} is not a family IdentityLock trains; {supported_sentence()}")
    return PIPELINE_FAMILY[name]


def _no_diffusers_path(family: Any) -> IdentityLockError:
    return IdentityLockError(
        f"the standalone trainer cannot load {family.label} through diffusers here: train it inside ComfyUI with "
        "the LoRATrainAdaptive node"
    )


def load_pipeline(
    model: str | os.PathLike,
    *,
    config: str | os.PathLike | None = None,
    dtype: Any = None,
    device: str | None = None,
    family: str | None = None,
):
    """The family's diffusers pipeline from a local diffusers folder or single checkpoint file; never touches the
    network (``local_files_only``). ``family``: a key of core.families, or None / "auto" to detect it.

    A single SD1.5 file needs no more (its configs are written locally). A single SDXL file needs ``config``: a
    local SDXL diffusers folder whose configs are read. A single transformer file of a DiT family (FLUX.1,
    Flux.2, Z-Image, Qwen-Image, SD3.x, Chroma) holds only the denoiser, so ``config`` must be a local diffusers
    folder of that family with its text encoders and VAE.
    """
    import diffusers
    import torch

    from .families import get_family

    path = Path(model)
    if not path.exists():
        raise ModelNotFoundError(
            f"model {path} not found: give a local diffusers folder (with model_index.json) or a "
            ".safetensors checkpoint"
        )
    found = detect_family(path) if path.is_dir() or not family or family == "auto" else None
    fam = get_family(found if not family or family == "auto" else family)
    if found and fam.key != found:
        raise IdentityLockError(f"--family {fam.key} does not match {path.name}, which is a {found} model")
    if fam.diffusers_pipeline is None or fam.diffusers_targets is None:
        raise _no_diffusers_path(fam)
    dtype = dtype or torch.float32
    kw: dict[str, Any] = {"torch_dtype": dtype, "local_files_only": True}
    if fam.key == "sd15":
        kw.update(safety_checker=None, requires_safety_checker=False)
    cfg = Path(config) if config else None
    try:
        if path.is_dir():
            pipe = diffusers.DiffusionPipeline.from_pretrained(str(path), **kw)
        elif fam.key in ("sd15", "sdxl"):
            if fam.key == "sdxl" and cfg is None:
                raise IdentityLockError(
                    f"{path.name} is a single SDXL file: give --config a local SDXL diffusers folder (its "
                    "configs are read, no weights), since nothing is downloaded"
                )
            pipe_cls = getattr(diffusers, fam.diffusers_pipeline)
            pipe = pipe_cls.from_single_file(str(path), config=str(cfg or sd15_config_dir()), **kw)
        else:
            if cfg is None or not (cfg / "model_index.json").is_file():
                raise IdentityLockError(
                    f"{path.name} holds only the {fam.label} transformer: give --config a local {fam.label} "
                    "diffusers folder (text encoders and VAE), or train inside ComfyUI with LoRATrainAdaptive"
                )
            denoiser = getattr(diffusers, fam.diffusers_denoiser).from_single_file(
                str(path), config=str(cfg), subfolder="transformer", local_files_only=True, torch_dtype=dtype
            )
            pipe = diffusers.DiffusionPipeline.from_pretrained(str(cfg), transformer=denoiser, **kw)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFoundError(f"could not load {path} offline: {exc}") from exc
    loaded = family_of_pipeline(pipe)
    if loaded != fam.key:
        raise IdentityLockError(f"--family {fam.key} does not match {path.name}, which loads as {loaded}")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device or "cpu")


def build_tiny_pipeline(seed: int = 0, tokenizer_dir: str | os.PathLike | None = None):
    """A tiny random SD-shaped StableDiffusionPipeline (64x64 output), fully offline; deterministic per seed."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from .training.tiny import tiny_components

    comps = tiny_components(seed=seed, tokenizer_dir=tokenizer_dir or (_cache_root() / "tiny_tokenizer"))
    scheduler = DDIMScheduler.from_config(comps["scheduler"].config)
    pipe = StableDiffusionPipeline(
        vae=comps["vae"],
        text_encoder=comps["text_encoder"],
        tokenizer=comps["tokenizer"],
        unet=comps["unet"],
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_scheduler(pipe, sampler: str):
    """A diffusers scheduler for a ComfyUI-style sampler name, from the pipeline's own config."""
    if sampler in ("default", "", None):
        return pipe.scheduler
    import diffusers

    names = {
        "ddim": ("DDIMScheduler", {}),
        "euler": ("EulerDiscreteScheduler", {}),
        "euler_a": ("EulerAncestralDiscreteScheduler", {}),
        "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
        "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    }
    if sampler not in names:
        raise IdentityLockError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    cls_name, extra = names[sampler]
    return getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **extra)


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    arr = np.clip(np.asarray(images, dtype=np.float32), 0, 1)
    return [(a * 255.0 + 0.5).astype(np.uint8) for a in arr]


class DiffusersRenderer:
    """txt2img / img2img over one pipeline with an optional LoRA whose scale is set per call."""

    def __init__(self, pipe, *, lora: str | os.PathLike | None = None, sampler: str = "default"):
        self.pipe = pipe
        self.sampler = sampler
        self.lora = str(lora) if lora else None
        self._img2img = None
        self._scale: float | None = None
        if self.lora:
            self.attach_lora(self.lora)
        if sampler not in ("default", "", None):
            self.pipe.scheduler = make_scheduler(pipe, sampler)

    # -- LoRA -------------------------------------------------------------------------------------------------
    def attach_lora(self, path: str | os.PathLike) -> None:
        p = Path(path)
        if not p.is_file():
            raise ModelNotFoundError(f"LoRA file {p} not found")
        try:
            self.pipe.load_lora_weights(str(p), adapter_name=LORA_ADAPTER)
        except Exception as exc:  # diffusers raises ValueError/KeyError/RuntimeError for foreign formats
            raise IdentityLockError(f"could not load LoRA {p.name} into this model: {exc}") from exc
        self.lora = str(p)
        self._scale = None

    def set_lora_scale(self, scale: float) -> None:
        if not self.lora or self._scale == float(scale):
            return
        self.pipe.set_adapters([LORA_ADAPTER], [float(scale)])
        self._scale = float(scale)

    @property
    def img2img_pipe(self):
        if self._img2img is None:
            from diffusers import StableDiffusionImg2ImgPipeline

            self._img2img = StableDiffusionImg2ImgPipeline(
                **self.pipe.components, requires_safety_checker=False
            )
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    def info(self) -> dict[str, Any]:
        return {
            "unet_params": int(sum(p.numel() for p in self.pipe.unet.parameters())),
            "lora": Path(self.lora).name if self.lora else None,
            "sampler": self.sampler,
            "scheduler": type(self.pipe.scheduler).__name__,
        }

    # -- rendering --------------------------------------------------------------------------------------------
    def _generators(self, seeds: Sequence[int]):
        import torch

        return [torch.Generator(device="cpu").manual_seed(int(s) % (2**63)) for s in seeds]

    def txt2img(
        self,
        prompt: str,
        seeds: int | Sequence[int],
        *,
        negative: str = "",
        steps: int = 25,
        cfg: float = 7.0,
        width: int | None = None,
        height: int | None = None,
        lora_scale: float = 1.0,
    ) -> list[np.ndarray]:
        """One uint8 RGB image per seed."""
        import torch

        seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        self.set_lora_scale(lora_scale)
        with torch.inference_mode():
            out = self.pipe(
                prompt=[prompt] * len(seeds),
                negative_prompt=[negative] * len(seeds) if negative else None,
                num_inference_steps=int(steps),
                guidance_scale=float(cfg),
                width=width,
                height=height,
                generator=self._generators(seeds),
                output_type="np",
            )
        return to_uint8(out.images)

    def img2img(
        self,
        image: np.ndarray,
        prompt: str,
        seed: int,
        *,
        negative: str = "",
        steps: int = 25,
        cfg: float = 7.0,
        strength: float = 0.5,
        lora_scale: float = 1.0,
    ) -> np.ndarray:
        import torch
        from PIL import Image

        self.set_lora_scale(lora_scale)
        with torch.inference_mode():
            out = self.img2img_pipe(
                prompt=prompt,
                negative_prompt=negative or None,
                image=Image.fromarray(image),
                strength=float(strength),
                num_inference_steps=int(steps),
                guidance_scale=float(cfg),
                generator=self._generators([seed])[0],
                output_type="np",
            )
        return to_uint8(out.images)[0]

    def seed_renderer(self, prompt: str, **kwargs: Any):
        """(render(seed), render_batch(seeds)) for ``core.seeds.search_seeds``."""

        def render(seed: int) -> np.ndarray:
            return self.txt2img(prompt, [seed], **kwargs)[0]

        def render_batch(seeds: list[int]) -> list[np.ndarray]:
            return self.txt2img(prompt, seeds, **kwargs)

        return render, render_batch


def make_test_lora(pipe, path: str | os.PathLike, rank: int = 4, seed: int = 0, std: float = 0.05) -> Path:
    """A kohya-format LoRA with random weights for ``pipe.unet``, written by the trainer's own code (tests/demos)."""
    import torch

    from .training.lora_format import save_lora
    from .training.network import LoRANetwork
    from .training.presets import TARGETS

    torch.manual_seed(seed)
    net = LoRANetwork(rank=rank, alpha=rank)
    net.attach_hooks(pipe.unet, TARGETS["attn"])
    net.detach_hooks()
    sd = net.kohya_state_dict()
    for k, v in sd.items():
        if k.endswith("lora_up.weight"):
            sd[k] = torch.randn_like(v) * std
    return save_lora(path, sd, {"trigger_word": "testchar"})
