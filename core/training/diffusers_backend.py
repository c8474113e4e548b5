"""Standalone backend: train a LoRA on a diffusers pipeline of any family in ``diffusers_families``.

The pipeline comes from ``core.diffusion.load_pipeline`` (one loader for the standalone diffusers concern:
local diffusers folder or single file, never downloads). ``DiffusersBackend`` / ``encode_images`` /
``encode_text`` are the bare SD-UNet pieces the tests and benchmarks build a Trainer from directly;
``train_diffusers`` runs every family through ``diffusers_families.family_backend``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

_log = logging.getLogger("IdentityLock.training")


class DiffusersBackend:
    """predict(): add DDPM noise at t = u·T and run the UNet; target is epsilon or v per the scheduler config."""

    def __init__(
        self, unet, scheduler, device: str | torch.device = "cpu", gradient_checkpointing: bool = False
    ):
        self.unet, self.scheduler = unet, scheduler
        self.device = torch.device(device)
        self.T = int(scheduler.config.num_train_timesteps)
        self.prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")
        self.unet.requires_grad_(False)
        if gradient_checkpointing:  # diffusers' own switch: blocks recompute activations in the backward pass
            unet.enable_gradient_checkpointing()

    def predict(self, latents, cond, noise, u):
        t = (u * self.T).long().clamp_(0, self.T - 1)
        noisy = self.scheduler.add_noise(latents, noise, t)
        # the UNet's own dtype (fp16/bf16 weights): the noise schedule runs in fp32, the model in its dtype
        dtype = self.unet.dtype
        pred = self.unet(noisy.to(dtype), t, cond.to(dtype)).sample.float()
        if self.prediction_type == "v_prediction":
            return pred, self.scheduler.get_velocity(latents, noise, t)
        return pred, noise


@torch.no_grad()
def encode_images(vae, images: Sequence[np.ndarray], device="cpu", batch: int = 4) -> torch.Tensor:
    """uint8 RGB images -> scaled VAE latents (distribution mean, so the cache is deterministic)."""
    out = []
    sf = float(getattr(vae.config, "scaling_factor", 0.18215))
    for s in range(0, len(images), batch):
        x = torch.from_numpy(np.stack(images[s : s + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        out.append(vae.encode(x.to(device, vae.dtype)).latent_dist.mean.float().cpu() * sf)
    return torch.cat(out)


@torch.no_grad()
def encode_text(tokenizer, text_encoder, captions: Sequence[str], device="cpu") -> torch.Tensor:
    ids = tokenizer(
        list(captions),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return text_encoder(ids.to(device))[0].float().cpu()


def base_model_hash(model: str | os.PathLike) -> str:
    """sha256 of the checkpoint file, or of the denoiser's (first) weights file of a diffusers folder."""
    from .lora_format import file_sha256

    path = Path(model)
    if path.is_file():
        return "sha256:" + file_sha256(path)
    for sub in ("unet", "transformer"):
        for cand in sorted((path / sub).glob("diffusion_pytorch_model*.safetensors")) + sorted(
            (path / sub).glob("*.bin")
        ):
            return f"sha256({sub}):" + file_sha256(cand)
    return "unknown"


def render_probe_images(
    pipe, prompt: str, seeds: Sequence[int], steps: int = 20, guidance: float = 5.8, size: int | None = None
) -> list[np.ndarray]:
    """K fixed-seed samples with the LoRA currently attached to the pipeline's denoiser."""
    images = []
    for s in seeds:
        g = torch.Generator(device="cpu").manual_seed(int(s))
        out = pipe(  # prompt by keyword: Flux2KleinPipeline's first positional parameter is the image
            prompt=prompt, num_inference_steps=steps, guidance_scale=guidance, generator=g, height=size, width=size,
            output_type="np",
        )  # fmt: skip
        images.append((np.clip(out.images[0], 0, 1) * 255 + 0.5).astype(np.uint8))
    return images


def accelerate_grad_sync():
    """(grad_sync, rank, is_main) under ``accelerate launch`` with several processes, else (None, 0, True)."""
    try:
        from accelerate import PartialState
    except ImportError:
        return None, 0, True
    state = PartialState()
    if state.num_processes <= 1:
        return None, 0, True
    import torch.distributed as dist

    def sync(grads):
        for g in grads:
            dist.all_reduce(g, op=dist.ReduceOp.SUM)
            g.div_(state.num_processes)

    return sync, state.process_index, state.is_main_process


def train_diffusers(
    pipe,
    images: Sequence[np.ndarray],
    captions: Sequence[str],
    config,
    out_path: str | os.PathLike,
    *,
    trigger: str,
    base_hash: str = "unknown",
    resolution: int = 512,
    flip: bool = False,
    jitter: float = 0.0,
    checkpoint_path: str | os.PathLike | None = None,
    resume_state: dict | None = None,
    probe_reference=None,
    probe_seeds: Sequence[int] = (1, 2, 3, 4),
    probe_steps: int = 20,
    keep_best_probe: bool = True,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
    sources: Sequence[str] | None = None,
    gradient_checkpointing: bool = False,
    precision: str = "auto",
    keep_checkpoints: int = 2,
    family: str | None = None,
):
    """Train a LoRA on the pipeline's denoiser (standalone, diffusers), write it atomically to ``out_path``.

    ``family``: a key of core.families (None: from the pipeline class). The file's keys are the ones ComfyUI maps
    for that family (``diffusers_families.file_module_name``) and its metadata names the family.

    ``resume_state``: a loaded training state to continue (``job.saved_state``). ``sources``: the source photo
    of each image (``dataset.folder_sources``) for the split by photo. Returns (TrainResult, path,
    report text). Runs one process or several under ``accelerate launch``
    (gradients all-reduced, data order differs per rank, only the main process writes files).
    """
    from ..diffusion import family_of_pipeline
    from ..families import get_family
    from . import dataset as ds
    from .checkpoint import adopt_saved_seed
    from .diffusers_families import attach_lora, family_backend, rename_for_file
    from .job import lora_to_save
    from .lora_format import save_lora
    from .network import LoRANetwork
    from .probe import drift_scorer, make_probe
    from .report import lora_metadata, report_text
    from .trainer import Trainer

    if config.train_text_encoder:
        raise ValueError("text-encoder LoRA training is not supported yet; use a unet-only preset")
    grad_sync, rank, is_main = accelerate_grad_sync()
    dev = torch.device(device)
    if grad_sync is not None and dev.type == "cuda":
        dev = torch.device("cuda", rank % max(1, torch.cuda.device_count()))
    if int(resolution) < 8 or int(resolution) % 8:
        raise ds.ImageInputError(
            f"resolution {resolution} must be a positive multiple of 8 (latents are 1/8 size)"
        )
    fam = get_family(family if family and family != "auto" else family_of_pipeline(pipe))
    pipe.to(dev)
    backend = family_backend(pipe, fam, resolution)
    if resolution % (8 * (2 if backend.flow else 1)):
        raise ds.ImageInputError(
            f"resolution {resolution} must be a multiple of 16 for {fam.label} (latents are 1/8 size, packed 2x2)"
        )
    ds.check_images(images)
    images = [ds.resize_square(im, resolution) for im in images]
    if resume_state is not None:
        # before anything seed-dependent: the split, augmentation and LoRA init belong to the saved run
        adopt_saved_seed(config, resume_state)
    data = ds.prepare_data(
        images,
        captions,
        backend.encode_images,
        backend.encode_text,
        flip=flip,
        jitter=jitter,
        seed=config.seed,
        sources=sources,
    )
    net = LoRANetwork(config.rank, config.alpha, config.dropout, seed=config.seed)
    names = attach_lora(net, backend.denoiser, fam, config.target_modules)
    net.to(dev)
    if gradient_checkpointing:  # diffusers' own switch: blocks recompute activations in the backward pass
        backend.denoiser.enable_gradient_checkpointing()
    backend.denoiser.requires_grad_(False)
    probe = None
    if probe_reference is not None and config.probe_every:
        score = drift_scorer(probe_reference)
        prompt = captions[0]
        # the family's render guidance (FLUX.1-dev's distilled guidance, else its cfg); SD keeps the trainer's 5.8
        g = (fam.guidance or fam.cfg) if backend.flow else 5.8
        probe = make_probe(
            lambda: render_probe_images(pipe, prompt, probe_seeds, probe_steps, guidance=g, size=resolution),
            score,
        )
    bar = None
    if show_progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(desc="LoRA", unit="step")

    def on_step(info):
        if bar is not None:
            bar.total = info.max_total_steps
            bar.update(1)
            p = f"{info.p_value:.2f}" if info.p_value is not None else "-"
            bar.set_postfix_str(f"{info.phase} loss {info.loss:.4f} p {p}")

    trainer = Trainer(
        net,
        backend,
        data,
        config,
        on_step=on_step,
        checkpoint_path=checkpoint_path if is_main else None,
        probe=probe,
        grad_sync=grad_sync,
        rank_offset=rank,
        precision=precision,
        keep_checkpoints=keep_checkpoints,
    )
    if resume_state is not None:
        trainer.resume(state=resume_state)
    try:
        result = trainer.run()
    finally:
        if bar is not None:
            bar.close()
    state, extra = lora_to_save(net, result, keep_best_probe)
    path = None
    if is_main:
        meta = lora_metadata(result, config, trigger, base_hash, split=data.split, family=fam.key, **extra)
        path = save_lora(out_path, rename_for_file(state, names), meta)
    net.detach_hooks()
    report = report_text(
        result,
        config,
        str(path) if path else None,
        data.split,
        extra.get("selected"),
        extra.get("probe_note"),
    )
    return result, path, report
