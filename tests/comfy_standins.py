"""CLEARLY LABELLED STAND-INS for ComfyUI's MODEL and VAE objects (CI cannot install ComfyUI).

They carry only what IdentityLock reads from a real ComfyUI MODEL: ``model.model.model_config`` (whose class
name is ComfyUI's ``supported_models`` class, e.g. ``Flux``), ``get_model_object("latent_format")`` with
``latent_channels``, ``concat_keys`` of an inpaint model and ``model_options``. The real objects are exercised
in a real ComfyUI 0.8 by scripts/check_generation_families.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# family key -> (ComfyUI supported_models class name, latent channels of its latent_format, downscale)
FAMILY_SHAPES = {
    "sd15": ("SD15", 4, 8),
    "sdxl": ("SDXL", 4, 8),
    "flux1": ("Flux", 16, 8),
    "flux2": ("Flux2", 128, 16),
    "zimage": ("ZImage", 16, 8),
    "qwen_image": ("QwenImage", 16, 8),
    "sd3": ("SD3", 16, 8),
    "chroma": ("Chroma", 16, 8),
    "lumina2": ("Lumina2", 16, 8),
}


@dataclass
class _LatentFormat:
    latent_channels: int


@dataclass
class _BaseModel:
    model_config: Any
    concat_keys: tuple = ()


@dataclass
class StandInModel:
    """A STAND-IN for comfy.model_patcher.ModelPatcher (not ComfyUI code)."""

    config_name: str = "SD15"
    channels: int = 4
    concat_keys: tuple = ()
    model_options: dict = field(default_factory=dict)

    def __post_init__(self):
        self.model = _BaseModel(type(self.config_name, (), {})(), self.concat_keys)

    def get_model_object(self, name: str):
        assert name == "latent_format", name
        return _LatentFormat(self.channels)


@dataclass
class StandInVAE:
    """A STAND-IN for comfy.sd.VAE: channels and downscale only (None = a VAE that does not say)."""

    latent_channels: int | None = None
    downscale: int | None = None

    def spacial_compression_encode(self) -> int:
        if self.downscale is None:
            raise AttributeError("spacial_compression_encode")
        return self.downscale


def standin_family(key: str, **kw) -> tuple[StandInModel, StandInVAE]:
    name, channels, down = FAMILY_SHAPES[key]
    return StandInModel(name, channels, **kw), StandInVAE(channels, down)


def standin_encode(vae: StandInVAE, pixels):
    """A STAND-IN for ``comfy.sd.VAE.encode`` (not ComfyUI code): IMAGE [B,H,W,3] -> a latent of this VAE's
    channels at its downscale, derived from the pixels (so two photos give two different latents)."""
    import torch.nn.functional as F

    down, channels = vae.downscale or 8, vae.latent_channels or 4
    gray = pixels[..., :3].float().mean(-1, keepdim=True).movedim(-1, 1)
    return F.avg_pool2d(gray, down).repeat(1, channels, 1, 1) + 0.01
