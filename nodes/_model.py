"""What the generation nodes (DriftSeedSearch, MatchedPortrait) read from a ComfyUI MODEL, so they work on every
family of ``core/families.py`` and never assume SD1.5.

- **Refusal**: a MODEL of no known family (a video model, an unknown architecture) gets one sentence
  (``core.families.family_of_comfy_model``).
- **Latent**: channels from the model's own ``latent_format`` (4 for SD, 16 for FLUX.1 / SD3 / Z-Image /
  Qwen-Image, 128 for Flux.2), downscale from the family table (/8, Flux.2 /16, as EmptyFlux2LatentImage),
  checked against the VAE. So an empty latent here is the one the family's own empty-latent node makes, and
  ``comfy.sample.fix_empty_latent_channels`` + ``prepare_noise`` give KSampler's noise for a seed.
- **Inpainting**: an inpaint model (SD/SDXL inpainting, FLUX.1 Fill) gets InpaintModelConditioning's concat
  conditioning; any other model gets Differential Diffusion with the noise mask (unless the MODEL already
  carries a denoise-mask function). Never an SD1.5-only path.

Guidance (FluxGuidance), reference latents (ReferenceLatent, TextEncodeQwenImageEdit) and sampling shifts
(ModelSamplingFlux / AuraFlow / SD3) are already in the MODEL and CONDITIONING: they are passed through untouched.
ComfyUI is imported inside the functions (these helpers are also used with stand-ins in tests).
"""

from __future__ import annotations

from typing import Any

from ..core.errors import IdentityLockError


def model_family(model: Any, node: str):
    """The family of a ComfyUI MODEL, or one sentence saying why this node cannot use it."""
    from ..core.families import family_of_comfy_model

    if not hasattr(model, "get_model_object") or not hasattr(model, "model"):
        raise IdentityLockError(
            f"{node}: the model input is not a ComfyUI MODEL; connect a checkpoint or diffusion-model loader"
        )
    try:
        return family_of_comfy_model(model)
    except IdentityLockError as exc:
        raise IdentityLockError(f"{node} cannot sample with {exc}") from None


def latent_channels(model: Any) -> int:
    return int(model.get_model_object("latent_format").latent_channels)


def _vae_downscale(vae: Any) -> int | None:
    try:
        return int(vae.spacial_compression_encode())
    except Exception:  # a stand-in or an exotic VAE without the method: the family's value is used
        return None


def check_vae(model: Any, vae: Any, node: str) -> None:
    """A VAE of another family decodes garbage (or crashes minutes later): refuse it now."""
    fam = model_family(model, node)
    channels = latent_channels(model)
    vae_channels = getattr(vae, "latent_channels", None)
    down = _vae_downscale(vae)
    if (isinstance(vae_channels, int) and vae_channels != channels) or (
        down is not None and down != fam.latent_downscale
    ):
        raise IdentityLockError(
            f"{node}: the VAE works on {vae_channels} channels at 1/{down} but this {fam.label} MODEL on "
            f"{channels} at 1/{fam.latent_downscale}; connect the VAE made for this model"
        )


def start_latent(model: Any, vae: Any, width: int, height: int, latent: dict | None, node: str) -> dict:
    """The LATENT to sample from: the connected one (checked against the model), else the family's empty latent
    (what EmptyLatentImage / EmptySD3LatentImage / EmptyFlux2LatentImage make for this width and height)."""
    import torch

    fam = model_family(model, node)
    check_vae(model, vae, node)
    channels = latent_channels(model)
    if latent is not None:
        samples = latent.get("samples") if isinstance(latent, dict) else None
        if not isinstance(samples, torch.Tensor) or samples.ndim not in (4, 5):
            raise IdentityLockError(
                f"{node}: the latent input is not a LATENT image (connect an encoded image)"
            )
        if samples.shape[1] != channels and bool(torch.count_nonzero(samples)):
            raise IdentityLockError(
                f"{node}: the LATENT has {samples.shape[1]} channels but this {fam.label} MODEL works on "
                f"{channels}; encode the image with this model's VAE"
            )
        return latent
    down = fam.latent_downscale
    return {"samples": torch.zeros([1, channels, height // down, width // down], dtype=torch.float32)}


def is_inpaint_model(model: Any) -> bool:
    """An inpainting model: one whose concat conditioning takes the mask (SD/SDXL inpainting, FLUX.1 Fill)."""
    base = getattr(model, "model", model)
    keys = tuple(getattr(base, "concat_keys", ()) or ())
    if any(k in keys for k in ("mask", "mask_inverted")):
        return True
    return type(getattr(base, "model_config", None)).__name__.endswith("Inpaint")


def inpaint_inputs(model: Any, positive: Any, negative: Any, vae: Any, pixels: Any, mask: Any, node: str):
    """(model, positive, negative, latent) for inpainting ``pixels`` under ``mask`` with what the family offers:
    an inpaint model gets InpaintModelConditioning's concat conditioning; any other model Differential
    Diffusion with the noise mask (SetLatentNoiseMask). ComfyUI's own node code does both."""
    model_family(model, node)
    check_vae(model, vae, node)
    if is_inpaint_model(model):
        cls = _comfy_node("nodes", "InpaintModelConditioning")
        positive, negative, latent = cls().encode(positive, negative, pixels, vae, mask, noise_mask=True)
        return model, positive, negative, latent
    latent = {"samples": vae.encode(pixels[:, :, :, :3])}
    latent["noise_mask"] = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))  # SetLatentNoiseMask
    if "denoise_mask_function" not in getattr(model, "model_options", {}):  # the user's own patch stays
        dd = _comfy_node("comfy_extras.nodes_differential_diffusion", "DifferentialDiffusion")
        out = dd.execute(model, strength=1.0)
        model = out.result[0] if hasattr(out, "result") else out[0]
    return model, positive, negative, latent


def _comfy_node(module: str, name: str) -> Any:
    """One of ComfyUI's own node classes (its module, not this pack's ``nodes`` package)."""
    import importlib

    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        cls = None
    if cls is None:
        raise IdentityLockError(f"this ComfyUI has no {name} node; update ComfyUI (0.8 or later)")
    return cls
