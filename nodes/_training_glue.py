"""ComfyUI glue for LoRATrainAdaptive (imports comfy lazily, only inside ComfyUI): module-name mapping, the
compute device, full loading, and the autograd workaround for comfy-kitchen's rotary embedding."""

from __future__ import annotations

import contextlib
import sys


def ldm_map(mp) -> dict[str, str]:
    """ComfyUI's LDM -> diffusers module names for a UNet (SD1.x/SDXL; empty when ComfyUI cannot map it). The
    transformer families keep ComfyUI's own module paths: ComfyUI loads ``lora_unet_<path>`` for every one."""
    from ..core.training.comfy_backend import ldm_to_diffusers_map

    try:
        import comfy.utils  # type: ignore[import-not-found]

        return ldm_to_diffusers_map(comfy.utils.unet_to_diffusers(mp.model.model_config.unet_config))
    except Exception:
        return {}


def torch_device(mp):
    """ComfyUI's compute device (model management); the patcher's load device outside ComfyUI."""
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return mp.load_device
    return mm.get_torch_device()


def load_for_training(mp) -> None:
    """Load the patched model fully onto its device (no-op outside ComfyUI, where there is nothing to manage)."""
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return
    mm.load_models_gpu([mp], memory_required=1e20, force_full_load=True)


@contextlib.contextmanager
def differentiable_rope():
    """While training, route ComfyUI's rotary embedding (FLUX.1, Flux.2, Chroma, and the models that share its
    attention) through plain torch when gradients are recorded: comfy-kitchen's fused ``apply_rope`` op has no
    autograd formula ("Trying to backward through comfy_kitchen.apply_rope"). Sampling keeps the fused op."""
    try:
        import comfy.ldm.flux.math as flux_math  # type: ignore[import-not-found]
    except ImportError:
        yield
        return
    import torch

    def rope1(x, freqs_cis):  # ComfyUI's own fallback formula (comfy/ldm/flux/math.py without comfy-kitchen)
        x_ = x.to(dtype=freqs_cis.dtype).reshape(*x.shape[:-1], -1, 1, 2)
        out = freqs_cis[..., 0] * x_[..., 0] + freqs_cis[..., 1] * x_[..., 1]
        return out.reshape(*x.shape).type_as(x)

    fused, fused1 = flux_math.apply_rope, flux_math.apply_rope1

    def apply_rope(xq, xk, freqs_cis):
        if torch.is_grad_enabled():
            return rope1(xq, freqs_cis), rope1(xk, freqs_cis)
        return fused(xq, xk, freqs_cis)

    def apply_rope1(x, freqs_cis):
        return rope1(x, freqs_cis) if torch.is_grad_enabled() else fused1(x, freqs_cis)

    # Z-Image/Lumina, Qwen-Image, Wan... imported the functions by name: patch every comfy module holding them
    patched = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("comfy") or module is None:
            continue
        for attr, original, replacement in (
            ("apply_rope", fused, apply_rope),
            ("apply_rope1", fused1, apply_rope1),
        ):
            if getattr(module, attr, None) is original:
                setattr(module, attr, replacement)
                patched.append((module, attr, original))
    try:
        yield
    finally:
        for module, attr, original in patched:
            setattr(module, attr, original)


@contextlib.contextmanager
def trainable(diffusion_model, gradient_checkpointing: bool):
    """Everything ComfyUI's diffusion model needs to be trained, for the duration of a run: gradient
    checkpointing (optional), copies of the normalisation inputs that in-place residuals would change, and the
    differentiable rotary embedding. All undone afterwards: the MODEL's clone shares its diffusion model with the
    MODEL input."""
    from ..core.training.comfy_backend import protect_from_inplace_residuals
    from ..core.training.precision import checkpoint_blocks

    undo = checkpoint_blocks(diffusion_model) if gradient_checkpointing else None
    unprotect = protect_from_inplace_residuals(diffusion_model)
    try:
        with differentiable_rope():
            yield
    finally:
        unprotect()
        if undo is not None:
            undo()
