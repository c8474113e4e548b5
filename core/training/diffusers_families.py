"""What the standalone (diffusers) trainer does per family: encode images and captions, noise, run the denoiser.

Everything is read from the pipeline: its own ``encode_prompt``, its VAE config (scale/shift, latents mean/std,
Flux.2's batch-norm statistics), its latent packing helpers and its scheduler (prediction type, flow shift).
Only the family's row in ``core.families`` (timestep sampling, training guidance, adapter targets) comes from us.

- UNet families (SD1.x, SDXL): DDPM noise at t = u·T, target epsilon or v per the scheduler's prediction_type.
- Flow-matching families (FLUX.1, Flux.2, Z-Image, Qwen-Image, SD3.x, Chroma): σ from the family's timestep
  sampling, shifted as the pipeline shifts its schedule (static ``shift``, or dynamic ``mu`` from the image
  sequence length), x_t = (1-σ)·x0 + σ·noise, target = noise - x0, prediction = the velocity the pipeline
  steps with (Z-Image's transformer predicts its negative, at timestep 1-σ, as in its pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..families import Family, timestep_fraction


class CondBatch:
    """Per-sample text conditioning of several tensors (embeddings, pooled, masks, ids) that indexes, moves and
    repeats like one tensor, so the trainer caches and batches it exactly as SD1.5's single embedding tensor."""

    def __init__(self, **tensors: torch.Tensor):
        self.tensors = tensors
        n = {int(t.shape[0]) for t in tensors.values()}
        if len(n) != 1:
            raise ValueError(f"conditioning tensors disagree on the batch size: {sorted(n)}")
        self.shape = (n.pop(),)

    def __getitem__(self, idx: Any) -> CondBatch:
        return CondBatch(**{k: v[idx] for k, v in self.tensors.items()})

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self.__dict__["tensors"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __len__(self) -> int:
        return self.shape[0]

    def to(self, *args: Any, **kwargs: Any) -> CondBatch:
        return CondBatch(**{k: v.to(*args, **kwargs) for k, v in self.tensors.items()})

    def repeat_interleave(self, k: int, dim: int = 0) -> CondBatch:
        return CondBatch(**{key: v.repeat_interleave(k, dim=dim) for key, v in self.tensors.items()})


def _pixels(images: Sequence[np.ndarray], device, dtype) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x.to(device, dtype)


def _floats(t: torch.Tensor) -> torch.Tensor:
    return t.float().cpu() if t.is_floating_point() else t.cpu()


class DiffusersFamily:
    """One family's encode / predict on one pipeline. ``predict`` is the trainer's Backend contract."""

    flow = True
    batch = 4

    def __init__(self, pipe: Any, family: Family, resolution: int):
        self.pipe, self.family, self.resolution = pipe, family, int(resolution)
        self.denoiser = getattr(pipe, "transformer", None) or pipe.unet
        self.device = self.denoiser.device

    # -- caching -----------------------------------------------------------------------------------------------
    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> the latents the denoiser sees (distribution mean: the cache is deterministic)."""
        vae = self.pipe.vae
        shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        return (vae.encode(x).latent_dist.mean - shift) * float(vae.config.scaling_factor)

    @torch.no_grad()
    def encode_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        vae = self.pipe.vae
        dev = vae.device
        return torch.cat(
            [_floats(self._latents(_pixels(images[s : s + self.batch], dev, vae.dtype)))
             for s in range(0, len(images), self.batch)]
        )  # fmt: skip

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str]) -> CondBatch:
        out = self._encode(
            list(captions), self.pipe.text_encoder.device if self._text_encoder() else self.device
        )
        return CondBatch(**{k: _floats(v) for k, v in out.items()})

    def _text_encoder(self):
        return getattr(self.pipe, "text_encoder", None)

    def _encode(self, captions: list[str], device) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # -- the objective -----------------------------------------------------------------------------------------
    def sigmas(self, u: torch.Tensor, seq_len: int) -> torch.Tensor:
        """The family's timestep draw, shifted as the pipeline shifts its inference schedule."""
        s = timestep_fraction(self.family, u.float().cpu()).to(u.device)
        cfg = self.pipe.scheduler.config
        if cfg.get("use_dynamic_shifting", False):
            return self.pipe.scheduler.time_shift(self.mu(seq_len), 1.0, s)
        shift = float(cfg.get("shift", 1.0))
        return shift * s / (1 + (shift - 1) * s)

    def mu(self, seq_len: int) -> float:
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        c = self.pipe.scheduler.config
        return calculate_shift(
            seq_len, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096), c.get("base_shift", 0.5),
            c.get("max_shift", 1.15),
        )  # fmt: skip

    def seq_len(self, latents: torch.Tensor) -> int:
        return (latents.shape[-2] // 2) * (latents.shape[-1] // 2)

    def predict(self, latents, cond, noise, u):
        sigma = self.sigmas(u, self.seq_len(latents)).to(latents.device, torch.float32)
        s = sigma.view(-1, *([1] * (latents.ndim - 1)))
        xt = (1 - s) * latents + s * noise
        return self.velocity(xt, sigma, cond).float(), noise - latents

    def velocity(self, xt: torch.Tensor, sigma: torch.Tensor, cond: CondBatch) -> torch.Tensor:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    def _guidance(self, n: int, device) -> torch.Tensor | None:
        if not getattr(self.denoiser.config, "guidance_embeds", False):
            return None
        g = self.family.train_guidance if self.family.train_guidance is not None else 1.0
        return torch.full((n,), float(g), device=device, dtype=torch.float32)


class UNetFamily(DiffusersFamily):
    """SD1.x / SDXL: DDPM noise from the pipeline scheduler's betas; epsilon or v target per its prediction_type."""

    flow = False

    def __init__(self, pipe, family, resolution):
        super().__init__(pipe, family, resolution)
        from diffusers import DDPMScheduler

        # a DDPM view of the pipeline's scheduler (same betas, same prediction type) for add_noise / velocity
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.T = int(self.scheduler.config.num_train_timesteps)
        self.prediction_type = self.scheduler.config.prediction_type

    def _encode(self, captions, device):
        if self.family.key == "sd15":
            return {"prompt_embeds": self.pipe.encode_prompt(captions, device, 1, False)[0]}
        pe, _, pooled, _ = self.pipe.encode_prompt(captions, device=device, do_classifier_free_guidance=False)
        size = (self.resolution, self.resolution)
        proj = self.pipe.text_encoder_2.config.projection_dim
        ids = self.pipe._get_add_time_ids(size, (0, 0), size, pe.dtype, text_encoder_projection_dim=proj)
        return {"prompt_embeds": pe, "pooled": pooled, "time_ids": ids.repeat(len(captions), 1)}

    def predict(self, latents, cond, noise, u):
        t = (u * self.T).long().clamp_(0, self.T - 1)
        noisy = self.scheduler.add_noise(latents, noise, t)
        extra = {}
        if "pooled" in cond.tensors:
            extra["added_cond_kwargs"] = {
                "text_embeds": cond.pooled.to(self.dtype),
                "time_ids": cond.time_ids,
            }
        pred = self.denoiser(
            noisy.to(self.dtype), t, cond.prompt_embeds.to(self.dtype), **extra
        ).sample.float()
        if self.prediction_type == "v_prediction":
            return pred, self.scheduler.get_velocity(latents, noise, t)
        return pred, noise


class Flux1Family(DiffusersFamily):
    """FLUX.1 (and Chroma below): 2x2-packed tokens, CLIP pooled + T5 sequence, guidance input while training."""

    def _encode(self, captions, device):
        pe, pooled, _ = self.pipe.encode_prompt(captions, prompt_2=None, device=device)
        return {"prompt_embeds": pe, "pooled": pooled}

    def _pack(self, x):
        b, c, h, w = x.shape
        return self.pipe._pack_latents(x, b, c, h, w)

    def _unpack(self, x, h, w):
        f = self.pipe.vae_scale_factor
        return self.pipe._unpack_latents(x, h * f, w * f, f)

    def _ids(self, xt, cond):
        b, _, h, w = xt.shape
        img_ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, xt.device, self.dtype)
        txt_ids = torch.zeros(cond.prompt_embeds.shape[1], 3, device=xt.device, dtype=self.dtype)
        return img_ids, txt_ids

    def velocity(self, xt, sigma, cond):
        img_ids, txt_ids = self._ids(xt, cond)
        out = self.denoiser(
            hidden_states=self._pack(xt).to(self.dtype), timestep=sigma.to(self.dtype),
            guidance=self._guidance(xt.shape[0], xt.device), pooled_projections=cond.pooled.to(self.dtype),
            encoder_hidden_states=cond.prompt_embeds.to(self.dtype), txt_ids=txt_ids, img_ids=img_ids,
            return_dict=False,
        )[0]  # fmt: skip
        return self._unpack(out.float(), *xt.shape[-2:])


class ChromaFamily(Flux1Family):
    def _encode(self, captions, device):
        pe, _, mask, *_ = self.pipe.encode_prompt(captions, device=device, do_classifier_free_guidance=False)
        return {"prompt_embeds": pe, "mask": mask}

    def velocity(self, xt, sigma, cond):
        img_ids, txt_ids = self._ids(xt, cond)
        mask = self.pipe._prepare_attention_mask(xt.shape[0], self.seq_len(xt), self.dtype, cond.mask.bool())
        out = self.denoiser(
            hidden_states=self._pack(xt).to(self.dtype), timestep=sigma.to(self.dtype),
            encoder_hidden_states=cond.prompt_embeds.to(self.dtype), txt_ids=txt_ids, img_ids=img_ids,
            attention_mask=mask, return_dict=False,
        )[0]  # fmt: skip
        return self._unpack(out.float(), *xt.shape[-2:])


class SD3Family(DiffusersFamily):
    """SD3.x: unpacked latents, CLIP-L/G pooled + T5 sequence, timestep on the 0-1000 scale (as its pipeline)."""

    def _encode(self, captions, device):
        pe, _, pooled, _ = self.pipe.encode_prompt(
            captions, None, None, device=device, do_classifier_free_guidance=False
        )
        return {"prompt_embeds": pe, "pooled": pooled}

    def velocity(self, xt, sigma, cond):
        t = sigma * self.pipe.scheduler.config.num_train_timesteps
        return self.denoiser(
            hidden_states=xt.to(self.dtype), timestep=t.to(self.dtype),
            encoder_hidden_states=cond.prompt_embeds.to(self.dtype), pooled_projections=cond.pooled.to(self.dtype),
            return_dict=False,
        )[0].float()  # fmt: skip


class QwenImageFamily(Flux1Family):
    """Qwen-Image: Wan-style VAE (one frame, latents mean/std), 2x2 packing, Qwen2.5-VL embeddings + mask."""

    def _latents(self, x):
        vae = self.pipe.vae
        z = vae.encode(x.unsqueeze(2)).latent_dist.mean[:, :, 0]
        mean = torch.tensor(vae.config.latents_mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
        return (z - mean) / std

    def _encode(self, captions, device):
        pe, mask = self.pipe.encode_prompt(captions, device=device)
        if mask is None:  # the pipeline drops an all-ones mask
            mask = torch.ones(pe.shape[:2], dtype=torch.long, device=pe.device)
        return {"prompt_embeds": pe, "mask": mask}

    def _unpack(self, x, h, w):
        f = self.pipe.vae_scale_factor
        return self.pipe._unpack_latents(x, h * f, w * f, f)[:, :, 0]

    def velocity(self, xt, sigma, cond):
        b, _, h, w = xt.shape
        out = self.denoiser(
            hidden_states=self._pack(xt).to(self.dtype), timestep=sigma.to(self.dtype),
            guidance=self._guidance(b, xt.device), encoder_hidden_states_mask=cond.mask,
            encoder_hidden_states=cond.prompt_embeds.to(self.dtype), img_shapes=[[(1, h // 2, w // 2)]] * b,
            return_dict=False,
        )[0]  # fmt: skip
        return self._unpack(out.float(), h, w)


class Flux2Family(DiffusersFamily):
    """Flux.2 (Klein / Dev): 2x2 patchified latents normalised by the VAE's batch-norm statistics, one token per
    patch, 4-D position ids, the text encoder's stacked hidden layers; no guidance input on Klein."""

    def _latents(self, x):
        return self.pipe._encode_vae_image(x, generator=None)

    def _encode(self, captions, device):
        pe, _ = self.pipe.encode_prompt(captions, device=device)
        return {"prompt_embeds": pe}

    def seq_len(self, latents):
        return latents.shape[-2] * latents.shape[-1]

    def mu(self, seq_len):
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

        return compute_empirical_mu(seq_len, self.family.steps)

    def velocity(self, xt, sigma, cond):
        b, c, h, w = xt.shape
        ids = self.pipe._prepare_latent_ids(xt).to(xt.device)
        txt_ids = self.pipe._prepare_text_ids(cond.prompt_embeds).to(xt.device)
        out = self.denoiser(
            hidden_states=self.pipe._pack_latents(xt).to(self.dtype), timestep=sigma.to(self.dtype),
            guidance=self._guidance(b, xt.device), encoder_hidden_states=cond.prompt_embeds.to(self.dtype),
            txt_ids=txt_ids, img_ids=ids, return_dict=False,
        )[0]  # fmt: skip
        return out.float().permute(0, 2, 1).reshape(b, c, h, w)


class ZImageFamily(DiffusersFamily):
    """Z-Image: per-sample caption features of their own length, one-frame latents as a list, timestep 1-σ, and
    the transformer's output negated (its pipeline steps with ``-out``)."""

    def _encode(self, captions, device):
        embeds, _ = self.pipe.encode_prompt(captions, device=device, do_classifier_free_guidance=False)
        n = max(e.shape[0] for e in embeds)
        pe = torch.zeros(len(embeds), n, embeds[0].shape[-1], dtype=embeds[0].dtype, device=embeds[0].device)
        mask = torch.zeros(len(embeds), n, dtype=torch.bool, device=pe.device)
        for i, e in enumerate(embeds):
            pe[i, : e.shape[0]], mask[i, : e.shape[0]] = e, True
        return {"prompt_embeds": pe, "mask": mask}

    def velocity(self, xt, sigma, cond):
        caps = [pe[m.bool()].to(self.dtype) for pe, m in zip(cond.prompt_embeds, cond.mask, strict=True)]
        outs = self.denoiser(
            list(xt.to(self.dtype).unsqueeze(2).unbind(0)),
            (1 - sigma).to(self.dtype),
            caps,
            return_dict=False,
        )[0]
        return -torch.stack([o.float() for o in outs]).squeeze(2)


_CLASSES = {
    "sd15": UNetFamily, "sdxl": UNetFamily, "flux1": Flux1Family, "chroma": ChromaFamily, "sd3": SD3Family,
    "qwen_image": QwenImageFamily, "flux2": Flux2Family, "zimage": ZImageFamily,
}  # fmt: skip
DIFFUSERS_FAMILIES = tuple(_CLASSES)


def family_backend(pipe: Any, family: Family, resolution: int) -> DiffusersFamily:
    """The encode/predict object for ``family`` on ``pipe`` (the family is checked against the pipeline)."""
    from ..errors import IdentityLockError

    cls = _CLASSES.get(family.key)
    if cls is None:
        raise IdentityLockError(
            f"the standalone trainer has no diffusers path for {family.label}: train it inside ComfyUI with the "
            "LoRATrainAdaptive node"
        )
    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    if family.diffusers_denoiser and type(denoiser).__name__ != family.diffusers_denoiser:
        raise IdentityLockError(
            f"--family {family.key} expects a {family.diffusers_denoiser} but this model's denoiser is a "
            f"{type(denoiser).__name__}: give the matching --family (or leave it on auto)"
        )
    return cls(pipe, family, resolution)


# -- adapters and the names they are saved under -----------------------------------------------------------------
def _target_groups(family: Family, scope: str) -> dict[str, tuple[str, ...]]:
    """{container path ('' = the denoiser): suffixes} for ``family``'s diffusers targets in ``scope``."""
    if family.diffusers_targets is None or scope not in family.diffusers_targets:
        raise ValueError(f"{family.label} has no diffusers adapter targets for scope {scope!r}")
    groups: dict[str, list[str]] = {}
    for entry in family.diffusers_targets[scope]:
        container, _, suffix = entry.rpartition(".*.")
        groups.setdefault(container, []).append(suffix)
    return {k: tuple(v) for k, v in groups.items()}


_FLUX2_NATIVE = (  # Flux.2 modules ComfyUI's diffusers map (flux_to_diffusers, FLUX.1 names) does not cover
    (r"transformer_blocks\.(\d+)\.ff\.linear_in", r"double_blocks.\1.img_mlp.0"),
    (r"transformer_blocks\.(\d+)\.ff\.linear_out", r"double_blocks.\1.img_mlp.2"),
    (r"transformer_blocks\.(\d+)\.ff_context\.linear_in", r"double_blocks.\1.txt_mlp.0"),
    (r"transformer_blocks\.(\d+)\.ff_context\.linear_out", r"double_blocks.\1.txt_mlp.2"),
    (r"single_transformer_blocks\.(\d+)\.attn\.to_qkv_mlp_proj", r"single_blocks.\1.linear1"),
    (r"single_transformer_blocks\.(\d+)\.attn\.to_out", r"single_blocks.\1.linear2"),
)


def file_module_name(family: Family, path: str) -> str:
    """The LoRA-file module name of diffusers module ``path`` that ComfyUI's ``model_lora_keys_unet`` maps for this
    family: kohya ``lora_unet_*`` for the UNets, ``transformer.<diffusers path>`` where ComfyUI maps diffusers names
    (FLUX.1/Chroma via flux_to_diffusers, SD3 via mmdit_to_diffusers, Z-Image via z_image_to_diffusers, Qwen-Image
    whose names are ComfyUI's), and ComfyUI's own ``diffusion_model.*`` name for Flux.2's other modules."""
    import re

    from .lora_format import kohya_name

    if family.key in ("sd15", "sdxl"):
        return kohya_name(path)
    if family.key == "flux2":
        for pattern, native in _FLUX2_NATIVE:
            if re.fullmatch(pattern, path):
                return "diffusion_model." + re.sub(pattern, native, path)
    return "transformer." + path


def attach_lora(net: Any, denoiser: torch.nn.Module, family: Family, scope: str) -> dict[str, str]:
    """Hook ``net``'s adapters into the family's target Linears; returns {network key: file module name}."""
    from .lora_format import kohya_name
    from .network import target_linears

    names: dict[str, str] = {}
    for container, suffixes in _target_groups(family, scope).items():
        root = denoiser.get_submodule(container) if container else denoiser
        lead = container + "." if container else ""
        for path, _ in target_linears(root, suffixes):
            names[kohya_name(lead + path)] = file_module_name(family, lead + path)
        net.attach_hooks(root, suffixes, name_map=lambda p, lead=lead: lead + p)
    if not names:
        raise ValueError(f"no {scope} target layers found in this {family.label} denoiser")
    return names


def rename_for_file(state: dict[str, torch.Tensor], names: dict[str, str]) -> dict[str, torch.Tensor]:
    """Network (kohya-keyed) state -> the family's file keys (``.lora_down.weight`` / ``.lora_up.weight`` /
    ``.alpha`` suffixes kept: ComfyUI reads them under every prefix)."""
    out = {}
    for key, value in state.items():
        module, dot, suffix = key.partition(".")
        out[names.get(module, module) + dot + suffix] = value
    return out
