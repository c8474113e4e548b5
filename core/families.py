"""The one table of what differs between model families (SD1.x, SDXL, FLUX.1, Flux.2, Z-Image, Qwen-Image, SD3.x,
Chroma, Lumina 2): adapter targets, timestep sampling, resolution, sampling defaults, file metadata, sizes.

Everything else (noise/target relation, latent scale/shift/channels, conditioning) is read from the model itself:
inside ComfyUI from its ``model_sampling``, ``latent_format`` and ``extra_conds``; in diffusers from the pipeline's
scheduler and VAE config. So a family is a row here, never a trainer or a sampler of its own.

Detection is duck-typed (no ComfyUI import): a ComfyUI MODEL is matched by the class names of its
``model.model_config`` (ComfyUI's ``supported_models`` entry) and ``model`` (``model_base``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import IdentityLockError

# adapter scopes: "attn" = attention projections only, "attn_ff" = attention + MLP (the presets name one)
SCOPES = ("attn", "attn_ff")


@dataclass(frozen=True)
class Family:
    """One model family. Sizes are the published parameter counts of the denoiser (billions), for the VRAM
    arithmetic in docs/training.md; ``targets`` are Linear-module name suffixes in ComfyUI's module tree."""

    key: str
    label: str
    comfy_configs: tuple[str, ...]  # class names in comfy.supported_models
    targets: dict[str, tuple[str, ...]]
    timesteps: (
        str  # "uniform" (SD, as kohya) or "logit_normal" (flow models, as ai-toolkit/musubi/OneTrainer)
    )
    resolution: int  # default training / render side in pixels
    modelspec: str  # modelspec.architecture of a LoRA for this family
    params_b: float  # denoiser parameters, billions
    # sampling defaults for probes and renders (what the family's official ComfyUI templates use)
    steps: int = 20
    cfg: float = 7.0
    sampler: str = "euler"
    scheduler: str = "normal"
    guidance: float | None = None  # FluxGuidance value for renders (guidance-distilled models)
    latent_downscale: int = 8  # image pixels per latent cell (Flux.2: 16, as EmptyFlux2LatentImage)
    train_guidance: float | None = (
        None  # guidance fed while training (1.0 for FLUX.1-dev, as the popular trainers)
    )
    default_preset: str = "FACE_RANK32"
    gradient_checkpointing: bool = False  # needed on a 24 GB card
    fp8_base_on_24gb: bool = False  # the bf16 base alone does not leave room on a 24 GB card
    diffusers_pipeline: str | None = None
    diffusers_denoiser: str | None = None  # the diffusers model class of the denoiser
    # the same scopes named in the diffusers denoiser's module tree (standalone trainer); None: no diffusers path.
    # "A.*.B" = suffix B only inside container A (Flux single blocks' proj_out, not the final layer's)
    diffusers_targets: dict[str, tuple[str, ...]] | None = None
    notes: str = ""
    variants: dict[str, float] = field(default_factory=dict)  # other published sizes (billions)

    def target_suffixes(self, scope: str) -> tuple[str, ...]:
        if scope not in self.targets:
            raise IdentityLockError(f"target scope {scope!r} is not one of {', '.join(self.targets)}")
        return self.targets[scope]


_SD_ATTN = ("to_q", "to_k", "to_v", "to_out.0")
_SD_FF = ("ff.net.0.proj", "ff.net.2")
_FLUX_ATTN = ("img_attn.qkv", "img_attn.proj", "txt_attn.qkv", "txt_attn.proj", "linear1", "linear2")
_FLUX_FF = ("img_mlp.0", "img_mlp.2", "txt_mlp.0", "txt_mlp.2")
_LUMINA_ATTN = ("attention.qkv", "attention.out")
_LUMINA_FF = ("feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
_QWEN_ATTN = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
              "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out")  # fmt: skip
_QWEN_FF = ("img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2")
_SD3_ATTN = ("attn.qkv", "attn.proj", "attn2.qkv", "attn2.proj")
_SD3_FF = ("mlp.fc1", "mlp.fc2")
# diffusers module names of the transformer families (core/training/diffusers_families.py)
_DF_JOINT = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
             "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out")  # fmt: skip
_DF_FF = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
_DF_FLUX_ATTN = _DF_JOINT + ("proj_mlp", "single_transformer_blocks.*.proj_out")
_DF_FLUX2_ATTN = _DF_JOINT + ("attn.to_qkv_mlp_proj", "single_transformer_blocks.*.attn.to_out")
_DF_FLUX2_FF = ("ff.linear_in", "ff.linear_out", "ff_context.linear_in", "ff_context.linear_out")
_DF_ZIMAGE_ATTN = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0")
_DF_SD3_ATTN = _DF_JOINT + ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")


def _scopes(attn: tuple[str, ...], ff: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {"attn": attn, "attn_ff": attn + ff}


# fmt: off
FAMILIES: dict[str, Family] = {f.key: f for f in (
    Family("sd15", "SD1.x", ("SD15", "SD15_instructpix2pix"), _scopes(_SD_ATTN, _SD_FF), "uniform", 512,
           "stable-diffusion-v1/lora", 0.86, diffusers_pipeline="StableDiffusionPipeline",
           diffusers_denoiser="UNet2DConditionModel", diffusers_targets=_scopes(_SD_ATTN, _SD_FF)),
    Family("sdxl", "SDXL", ("SDXL", "SDXL_instructpix2pix", "SSD1B", "Segmind_Vega", "KOALA_700M", "KOALA_1B"),
           _scopes(_SD_ATTN, _SD_FF), "uniform", 1024, "stable-diffusion-xl-v1-base/lora", 2.57, steps=25, cfg=6.0,
           sampler="dpmpp_2m", scheduler="karras", gradient_checkpointing=True,
           diffusers_pipeline="StableDiffusionXLPipeline", diffusers_denoiser="UNet2DConditionModel",
           diffusers_targets=_scopes(_SD_ATTN, _SD_FF)),
    Family("flux1", "FLUX.1", ("Flux", "FluxSchnell", "FluxInpaint"), _scopes(_FLUX_ATTN, _FLUX_FF), "logit_normal",
           1024, "flux-1-dev/lora", 11.9, cfg=1.0, scheduler="simple", guidance=3.5, train_guidance=1.0,
           default_preset="FACE_RANK16", gradient_checkpointing=True, fp8_base_on_24gb=True,
           diffusers_pipeline="FluxPipeline", diffusers_denoiser="FluxTransformer2DModel",
           diffusers_targets=_scopes(_DF_FLUX_ATTN, _DF_FF)),
    Family("flux2", "Flux.2", ("Flux2",), _scopes(_FLUX_ATTN, _FLUX_FF), "logit_normal", 1024, "flux-2-dev/lora",
           32.0, cfg=1.0, scheduler="simple", guidance=4.0, latent_downscale=16, train_guidance=1.0,
           default_preset="FACE_RANK16", gradient_checkpointing=True, fp8_base_on_24gb=True,
           diffusers_pipeline="Flux2Pipeline", diffusers_denoiser="Flux2Transformer2DModel",
           diffusers_targets=_scopes(_DF_FLUX2_ATTN, _DF_FLUX2_FF),
           notes="Klein 4B fits a 24 GB card in bf16; Klein 9B and Dev (32B) need an fp8 base",
           variants={"klein-4b": 4.0, "klein-9b": 9.0}),
    Family("zimage", "Z-Image", ("ZImage",), _scopes(_LUMINA_ATTN, _LUMINA_FF), "logit_normal", 1024, "z-image/lora",
           6.15, steps=8, cfg=1.0, scheduler="simple", default_preset="FACE_RANK16", gradient_checkpointing=True,
           diffusers_pipeline="ZImagePipeline", diffusers_denoiser="ZImageTransformer2DModel",
           diffusers_targets=_scopes(_DF_ZIMAGE_ATTN, _LUMINA_FF), notes="Turbo renders in 8 steps at cfg 1"),
    Family("qwen_image", "Qwen-Image", ("QwenImage",), _scopes(_QWEN_ATTN, _QWEN_FF), "logit_normal", 1024,
           "qwen-image/lora", 20.4, cfg=2.5, scheduler="simple", default_preset="FACE_RANK16",
           gradient_checkpointing=True, fp8_base_on_24gb=True, diffusers_pipeline="QwenImagePipeline",
           diffusers_denoiser="QwenImageTransformer2DModel", diffusers_targets=_scopes(_QWEN_ATTN, _QWEN_FF),
           notes="20B: even the fp8 base (20 GB) leaves little on a 24 GB card; rank 16 at 768 px"),
    Family("sd3", "SD3.x", ("SD3",), _scopes(_SD3_ATTN, _SD3_FF), "logit_normal", 1024,
           "stable-diffusion-v3.5-large/lora", 8.1, steps=28, cfg=4.5, scheduler="sgm_uniform",
           default_preset="FACE_RANK16", gradient_checkpointing=True, diffusers_pipeline="StableDiffusion3Pipeline",
           diffusers_denoiser="SD3Transformer2DModel", diffusers_targets=_scopes(_DF_SD3_ATTN, _DF_FF),
           variants={"medium": 2.5}),
    Family("chroma", "Chroma", ("Chroma",), _scopes(_FLUX_ATTN, _FLUX_FF), "logit_normal", 1024, "chroma/lora", 8.9,
           steps=26, cfg=4.0, scheduler="simple", default_preset="FACE_RANK16", gradient_checkpointing=True,
           diffusers_pipeline="ChromaPipeline", diffusers_denoiser="ChromaTransformer2DModel",
           diffusers_targets=_scopes(_DF_FLUX_ATTN, _DF_FF)),
    Family("lumina2", "Lumina Image 2.0", ("Lumina2",), _scopes(_LUMINA_ATTN, _LUMINA_FF), "logit_normal", 1024,
           "lumina-image-2/lora", 2.6, steps=25, cfg=4.0, scheduler="simple", default_preset="FACE_RANK16",
           gradient_checkpointing=True, diffusers_pipeline="Lumina2Pipeline",
           diffusers_denoiser="Lumina2Transformer2DModel"),
)}
# fmt: on

# the families the issue names first; SD3.x, Chroma and Lumina 2 come with the same mechanism
MAIN_FAMILIES = ("sd15", "sdxl", "flux1", "flux2", "zimage", "qwen_image")


def supported_sentence() -> str:
    return "supported model families: " + ", ".join(f.label for f in FAMILIES.values())


def get_family(key: str) -> Family:
    """The family of a key such as ``flux1`` (case-insensitive; ``auto`` is resolved by the caller)."""
    fam = FAMILIES.get(str(key).strip().lower().replace("-", "_").replace(".", ""))
    if fam is None:
        raise IdentityLockError(
            f"unknown model family {key!r}; {supported_sentence()} ({', '.join(FAMILIES)})"
        )
    return fam


def family_of_comfy_model(model: Any) -> Family:
    """The family of a ComfyUI MODEL (ModelPatcher or BaseModel), from its supported_models config class.

    Raises IdentityLockError naming the supported families when the model is something else (a video model, an
    unknown architecture)."""
    base = getattr(model, "model", model)
    config_name = type(getattr(base, "model_config", None)).__name__
    for fam in FAMILIES.values():
        if config_name in fam.comfy_configs:
            return fam
    raise IdentityLockError(
        f"this MODEL ({config_name} / {type(base).__name__}) is not a family IdentityLock can train or render; "
        f"{supported_sentence()}"
    )


def logit_normal_fraction(u: Any) -> Any:
    """Map uniform fractions u in (0, 1) to logit-normal ones (sigmoid of a standard normal quantile), so the
    trainer's uniform draws and fixed validation fractions keep their meaning and their reproducibility."""
    import torch

    u = torch.as_tensor(u, dtype=torch.float32).clamp(1e-4, 1 - 1e-4)
    return torch.sigmoid(torch.special.ndtri(u))


def timestep_fraction(family: Family, u: Any) -> Any:
    """The family's timestep draw from uniform ``u`` (fraction of the noise schedule, 0 = clean)."""
    import torch

    if family.timesteps == "logit_normal":
        return logit_normal_fraction(u)
    return torch.as_tensor(u, dtype=torch.float32).clamp(1e-4, 1 - 1e-4)
