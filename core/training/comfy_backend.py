"""Backend pieces for training inside ComfyUI that do not import comfy (the glue is nodes/train.py).

ComfyUI 0.8's own trainer (comfy_extras/nodes_train.py) patches LoRA deltas into the model with
``ModelPatcher.add_weight_wrapper`` and trains an x0 objective through the model's ``model_sampling``:
x_t = noise_scaling(sigma, noise, x0), prediction = apply_model(x_t, sigma, c_crossattn=cond) (denoised x0),
target = x0. We do the same, driven by our core Trainer instead of a sampler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch


class SigmaBackend:
    """predict() for k-diffusion style models: u (0 = clean) -> percent 1-u -> sigma; x0 prediction vs x0."""

    def __init__(
        self,
        apply_model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        percent_to_sigma: Callable[[float], float],
        noise_scaling: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        device: torch.device | str = "cpu",
    ):
        self.apply_model, self.percent_to_sigma, self.noise_scaling = (
            apply_model,
            percent_to_sigma,
            noise_scaling,
        )
        self.device = torch.device(device)

    def predict(self, latents, cond, noise, u):
        sigma = torch.tensor([float(self.percent_to_sigma(1.0 - float(x))) for x in u], device=latents.device)
        xt = self.noise_scaling(sigma, noise, latents)
        return self.apply_model(xt, sigma, cond), latents


def ldm_to_diffusers_map(unet_to_diffusers: dict[str, str]) -> dict[str, str]:
    """Invert ComfyUI's ``comfy.utils.unet_to_diffusers(unet_config)`` (diffusers key -> LDM key) for module paths."""
    out = {}
    for diff_key, ldm_key in unet_to_diffusers.items():
        if diff_key.endswith(".weight") and ldm_key.endswith(".weight"):
            out[ldm_key[: -len(".weight")]] = diff_key[: -len(".weight")]
    return out


def name_mapper(ldm_map: dict[str, str]) -> Callable[[str], str]:
    """Module path in ComfyUI's diffusion_model -> diffusers path when known, else the LDM path.

    Both kohya spellings load in ComfyUI (shared/comfyui/LORA_KEYS.md); the diffusers one also loads in diffusers.
    """
    return lambda path: ldm_map.get(path, path)


def release_inference_tensors(module: torch.nn.Module) -> int:
    """Replace parameters/buffers created under ``torch.inference_mode`` (ComfyUI loads checkpoints that way) by
    ordinary frozen copies, so autograd can save them for the backward pass through the frozen base model.

    Values are unchanged; returns how many tensors were replaced. Call inside ``torch.inference_mode(False)``.
    """
    count = 0
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None and p.is_inference():
                mod._parameters[name] = torch.nn.Parameter(p.detach().clone(), requires_grad=False)
                count += 1
        for name, b in list(mod._buffers.items()):
            if b is not None and b.is_inference():
                mod._buffers[name] = b.clone()
                count += 1
    return count


@contextlib.contextmanager
def training_mode() -> Iterator[None]:
    """Autograd on, whatever the caller had: ComfyUI executes every node under ``torch.inference_mode()``, where
    no graph is recorded and new tensors are inference tensors. ``inference_mode(False)`` re-enables grad mode
    in current PyTorch; ``enable_grad()`` makes that explicit (as ComfyUI's own nodes_train.py does)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


# -- a ComfyUI ModelPatcher / VAE / CLIP, duck-typed (no comfy import): what the node used to do in closures ------
def comfy_encoders(
    model_patcher: Any, vae: Any, clip: Any
) -> tuple[Callable[[list[np.ndarray]], torch.Tensor], Callable[[list[str]], torch.Tensor]]:
    """(encode_images, encode_text) for ``dataset.prepare_data`` from the MODEL/VAE/CLIP the user wired.

    Frozen encoders run without autograd (their weights are inference tensors made by ComfyUI's loader); the
    results are cloned to ordinary CPU tensors so the training graph can use them.
    """

    @torch.no_grad()
    def encode_images(images: list[np.ndarray]) -> torch.Tensor:
        px = torch.from_numpy(np.stack(images)).float() / 255.0
        return model_patcher.model.process_latent_in(vae.encode(px[..., :3])).float().cpu().clone()

    @torch.no_grad()
    def encode_text(captions: list[str]) -> torch.Tensor:
        out = [clip.encode_from_tokens(clip.tokenize(c)) for c in captions]
        return torch.cat(out).float().cpu().clone()

    return encode_images, encode_text


def compute_dtype(model_patcher: Any) -> torch.dtype:
    """The dtype the model computes in: ComfyUI's ``manual_cast_dtype`` when its weights are stored in another one
    (fp8, or fp16 on a device without fp16), else the weights' dtype. Inputs go in at this dtype, never at fp8."""
    return getattr(model_patcher.model, "manual_cast_dtype", None) or model_patcher.model_dtype()


def sigma_backend(model_patcher: Any, device: torch.device | str) -> SigmaBackend:
    """The x0-objective backend on a ModelPatcher: its ``model_sampling`` and compute dtype, on ``device`` (the
    node passes ComfyUI's ``model_management.get_torch_device()``; core chooses no device itself)."""
    ms = model_patcher.get_model_object("model_sampling")
    dtype = compute_dtype(model_patcher)

    def apply_model(xt: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return model_patcher.model.apply_model(xt.to(dtype), sigma, c_crossattn=cond.to(dtype)).float()

    return SigmaBackend(apply_model, ms.percent_to_sigma,
                        lambda s, n, x: ms.noise_scaling(s, n, x, False), device)  # fmt: skip


def attach_lora(model_patcher: Any, network: Any, targets: Sequence[str], ldm_map: dict[str, str]) -> int:
    """Add the LoRA as weight wrappers (w -> w + ΔW) on the ModelPatcher's diffusion model; returns their count.

    Raises IdentityLockError when the model has no adaptable layer (only UNet families are supported yet).
    """
    from ..errors import IdentityLockError

    wrappers = network.weight_wrappers(
        model_patcher.model.diffusion_model, targets, name_map=name_mapper(ldm_map)
    )
    if not wrappers:
        raise IdentityLockError(
            "no attention/feed-forward layers found in this MODEL; only UNet models (SD1.x/SDXL) are supported"
        )
    for path, fn in wrappers:
        model_patcher.add_weight_wrapper(f"diffusion_model.{path}", fn)
    return len(wrappers)


def model_fingerprint(model_patcher: Any) -> str:
    """Hash of a few base weights (a ComfyUI MODEL has no file path here)."""
    import hashlib

    h = hashlib.sha256()
    for i, (name, p) in enumerate(model_patcher.model.diffusion_model.named_parameters()):
        if i % 50 == 0:
            h.update(name.encode())
            h.update(p.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return "weights-sha256:" + h.hexdigest()
