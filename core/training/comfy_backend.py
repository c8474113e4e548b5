"""Backend pieces for training inside ComfyUI that do not import comfy (the glue is nodes/train.py).

ComfyUI 0.8's own trainer (comfy_extras/nodes_train.py) patches LoRA deltas into the model with
``ModelPatcher.add_weight_wrapper`` and trains through the model's ``model_sampling``. We do the same for every
family (SD1.x to Qwen-Image), driven by our core Trainer: the noise/target relation comes from
``model_sampling``, latent scale/shift/channels from the model's latent format (``process_latent_in``), model
inputs from its ``extra_conds``; what differs per family otherwise is a row of ``core/families.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch


class SigmaBackend:
    """predict() for k-diffusion style models (ComfyUI's ``model_sampling``), in the model's native objective.

    ``u`` (0 = clean) becomes the family's timestep fraction (uniform for SD, logit-normal for flow models; the
    model's own shift, including a ModelSamplingFlux/AuraFlow patch, lives in ``percent_to_sigma``), then
    sigma; x_t = noise_scaling(sigma, noise, x0). ComfyUI's ``apply_model`` returns the denoised x0; the loss is
    taken on (x_t - x0_pred)/sigma against (x_t - x0)/sigma, which is exactly epsilon vs noise for eps models
    (x_t = x0 + sigma·noise) and velocity vs noise - x0 for flow models (x_t = sigma·noise + (1 - sigma)·x0):
    the objectives kohya, ai-toolkit and musubi-tuner train, from one formula and the model's own sampling.
    """

    def __init__(
        self,
        apply_model: Callable[..., torch.Tensor],
        percent_to_sigma: Callable[[float], float],
        noise_scaling: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        device: torch.device | str = "cpu",
        timesteps: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.apply_model, self.percent_to_sigma, self.noise_scaling = (
            apply_model,
            percent_to_sigma,
            noise_scaling,
        )
        self.device = torch.device(device)
        self.timesteps = timesteps or (lambda u: u.clamp(1e-4, 1 - 1e-4))

    def sigmas(self, u: torch.Tensor) -> torch.Tensor:
        frac = self.timesteps(u.detach().float().cpu())
        return torch.tensor([float(self.percent_to_sigma(1.0 - float(f))) for f in frac], dtype=torch.float32)

    def predict(self, latents, cond, noise, u):
        sigma = self.sigmas(u).to(latents.device)
        s = sigma.view(-1, *([1] * (latents.ndim - 1)))
        xt = self.noise_scaling(sigma, noise, latents)
        x0_pred = self.apply_model(xt, sigma, cond).float()
        return (xt - x0_pred) / s, (xt - latents) / s


def _signature(conds: dict[str, Any]) -> tuple:
    """What must be equal for ComfyUI conds of several captions to go through the model in one batch."""
    out = []
    for name in sorted(conds):
        value = conds[name].cond
        if isinstance(value, torch.Tensor):
            out.append((name, "t", tuple(value.shape)))
        elif isinstance(value, (list, tuple)):
            out.append((name, "l", tuple(tuple(getattr(v, "shape", ())) for v in value)))
        else:
            out.append((name, "c", repr(value)))
    return tuple(out)


def _to(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, dtype) if value.is_floating_point() else value.to(device)
    if isinstance(value, list):
        return [_to(v, device, dtype) for v in value]
    return value


class CaptionConds:
    """Per-caption model inputs built by ComfyUI's own ``model.extra_conds`` (cross-attention, SDXL's size
    embedding, FLUX guidance, Lumina's token count, attention masks...), encoded once and batched the way
    ComfyUI's sampler batches conds (``process_cond`` + ``concat``); captions whose conds cannot share a batch
    (different text lengths) go through the model in separate calls, as in ComfyUI's sampler.

    ``encode(caption)`` returns a dict of ComfyUI COND objects; ``index(captions)`` is the trainer's
    ``encode_text``: a tensor of indices into this table.
    """

    def __init__(self, encode: Callable[[str], dict[str, Any]]):
        self._encode = encode
        self.captions: list[str] = []
        self.conds: list[dict[str, Any]] = []

    def index(self, captions: Sequence[str]) -> torch.Tensor:
        out = []
        for caption in captions:
            if caption not in self.captions:
                self.captions.append(caption)
                self.conds.append(self._encode(caption))
            out.append(self.captions.index(caption))
        return torch.tensor(out, dtype=torch.long)

    def groups(self, indices: torch.Tensor) -> list[list[int]]:
        """Positions in the batch, grouped so that each group's conds concatenate."""
        by: dict[tuple, list[int]] = {}
        for pos, i in enumerate(indices.tolist()):
            by.setdefault(_signature(self.conds[i]), []).append(pos)
        return list(by.values())

    def batch(self, indices: Sequence[int], device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        """The model kwargs for captions ``indices`` (one group), on ``device`` at ``dtype``."""
        first = self.conds[indices[0]]
        out = {}
        for name in first:
            parts = [
                self.conds[i][name].process_cond(batch_size=1, area=None, device=device) for i in indices
            ]
            out[name] = _to(parts[0].concat(parts[1:]), device, dtype)
        return out


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
def encode_images_with(model_patcher: Any, vae: Any) -> Callable[[list[np.ndarray]], torch.Tensor]:
    """``encode_images`` for ``dataset.prepare_data``: the wired VAE, then the model's latent format
    (``process_latent_in``: scale/shift, Flux.2's 128 packed channels, Qwen-Image's video-shaped latents).

    One image per call: ComfyUI's 3-D VAEs (Qwen-Image's Wan VAE) read a batch of images as frames of one video.
    Frozen encoders run without autograd; results are ordinary CPU float tensors.
    """

    @torch.no_grad()
    def encode_images(images: list[np.ndarray]) -> torch.Tensor:
        out = []
        for image in images:
            px = torch.from_numpy(np.ascontiguousarray(image[None, ..., :3])).float() / 255.0
            out.append(model_patcher.model.process_latent_in(vae.encode(px)).float().cpu().clone())
        return torch.cat(out)

    return encode_images


def caption_conds(
    model_patcher: Any, clip: Any, latent_shape: Sequence[int], device: torch.device | str, family: Any
) -> CaptionConds:
    """The wired CLIP/text encoder's conditioning per caption, turned into model inputs by the model's own
    ``extra_conds`` exactly as ComfyUI's sampler does (``encode_model_conds``: noise, width/height, prompt type),
    plus the family's training guidance (FLUX.1-dev trains at guidance 1.0)."""
    base = model_patcher.model
    shape = tuple(int(v) for v in latent_shape)

    @torch.no_grad()
    def encode(caption: str) -> dict[str, Any]:
        scheduled = clip.encode_from_tokens_scheduled(clip.tokenize(caption))
        cond, extra = scheduled[0][0], dict(scheduled[0][1])
        extra.pop("model_conds", None)
        params = {**extra, "cross_attn": cond.float().cpu().clone()}
        if family.train_guidance is not None:
            params["guidance"] = float(family.train_guidance)
        params.update(device=torch.device(device), noise=torch.zeros((1, *shape)), prompt_type="positive",
                      width=shape[-1] * 8, height=shape[-2] * 8)  # fmt: skip
        return dict(base.extra_conds(**params))

    return CaptionConds(encode)


def compute_dtype(model_patcher: Any) -> torch.dtype:
    """The dtype the model computes in: ComfyUI's ``manual_cast_dtype`` when its weights are stored in another one
    (fp8, or fp16 on a device without fp16), else the weights' dtype. Inputs go in at this dtype, never at fp8."""
    return getattr(model_patcher.model, "manual_cast_dtype", None) or model_patcher.model_dtype()


def sigma_backend(
    model_patcher: Any, device: torch.device | str, conds: CaptionConds, family: Any
) -> SigmaBackend:
    """The native-objective backend on a ModelPatcher: its ``model_sampling`` and compute dtype, the family's
    timestep sampling, conds batched as ComfyUI batches them, on ``device`` (the node passes ComfyUI's
    ``model_management.get_torch_device()``; core chooses no device itself)."""
    from ..families import timestep_fraction

    ms = model_patcher.get_model_object("model_sampling")
    dtype = compute_dtype(model_patcher)
    dev = torch.device(device)

    def apply_model(xt: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        groups = conds.groups(cond)
        outs, order = [], []
        for positions in groups:
            kwargs = conds.batch([int(cond[p]) for p in positions], dev, dtype)
            pick = torch.tensor(positions, device=xt.device)
            outs.append(model_patcher.model.apply_model(xt[pick].to(dtype), sigma[pick], **kwargs).float())
            order += positions
        y = torch.cat(outs)
        return y if order == sorted(order) else y[torch.argsort(torch.tensor(order, device=y.device))]

    return SigmaBackend(apply_model, ms.percent_to_sigma, lambda s, n, x: ms.noise_scaling(s, n, x, False),
                        device, timesteps=lambda u: timestep_fraction(family, u))  # fmt: skip


def attach_lora(model_patcher: Any, network: Any, targets: Sequence[str], ldm_map: dict[str, str]) -> int:
    """Add the adapters as weight wrappers (w -> w + ΔW) on the ModelPatcher's diffusion model; returns their count.

    Raises IdentityLockError when none of the family's target layers exist in this model.
    """
    from ..errors import IdentityLockError

    wrappers = network.weight_wrappers(
        model_patcher.model.diffusion_model, targets, name_map=name_mapper(ldm_map)
    )
    if not wrappers:
        raise IdentityLockError(
            "none of this model family's attention/MLP layers were found in the MODEL "
            f"({', '.join(targets)}); is it a modified or quantised copy?"
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


def protect_from_inplace_residuals(root: torch.nn.Module) -> Callable[[], None]:
    """Let autograd through ComfyUI's transformer blocks, which add their residuals in place (``x += ...`` in
    FLUX.1/Flux.2/Chroma blocks, SD3's MMDiT, Qwen-Image): a normalisation layer saves its input for the backward
    pass, and the in-place add then changes that saved tensor ("modified by an inplace operation"). While
    gradients are recorded, every normalisation layer gets a copy of its input instead; sampling and validation
    (no grad) run unchanged. Returns an undo function."""
    handles = []

    def copy_input(module, args):
        if torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor):
            return (args[0].clone(), *args[1:])
        return None

    for mod in root.modules():
        if "Norm" in type(mod).__name__:
            handles.append(mod.register_forward_pre_hook(copy_input))

    def undo() -> None:
        for h in handles:
            h.remove()

    return undo
