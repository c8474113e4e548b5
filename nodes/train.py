"""LoRATrainAdaptive: adaptive multi-phase LoRA training on the MODEL the user wired (ComfyUI 0.8 mechanics:
weight wrappers on a cloned ModelPatcher, x0 objective through model_sampling). All logic lives in
core/training; this file only converts ComfyUI values, reports progress and honours cancel.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ._comfy import (
    CATEGORY,
    Progress,
    check_interrupted,
    image_to_numpy,
    numpy_to_image,
    output_directory,
    send_status,
)

_log = logging.getLogger("IdentityLock")

PRESET_NAMES = [
    "EXP_FACIAL_UNET_FOCUS_HIGH",
    "EXP_FACIAL_UNET_FOCUS_MID",
    "EXP_FACIAL_UNET_FOCUS_LOW",
    "LORA_IPADAPTER_CHARACTER",
    "TINY_TEST",
]


def _loras_dir() -> str:
    try:
        import folder_paths  # type: ignore[import-not-found]

        return folder_paths.get_folder_paths("loras")[0]
    except Exception:
        return os.path.join(output_directory(), "loras")


class LoRATrainAdaptive:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Base model to train on (from a checkpoint loader)."}),
                "clip": ("CLIP", {"tooltip": "Text encoder used to encode the captions (kept frozen)."}),
                "vae": (
                    "VAE",
                    {"tooltip": "VAE used to encode the training images to latents (cached once)."},
                ),
                "images": (
                    "IMAGE",
                    {
                        "tooltip": "Prepared training images, one size (FaceCropPrep output). 20 % is held out for validation."
                    },
                ),
                "trigger_word": (
                    "STRING",
                    {"default": "", "tooltip": "Rare token put in every caption; use it in prompts later."},
                ),
                "lora_name": (
                    "STRING",
                    {
                        "default": "identitylock_lora",
                        "tooltip": "File name in models/loras (no folders). Written only when training completes.",
                    },
                ),
                "preset": (
                    PRESET_NAMES,
                    {
                        "default": PRESET_NAMES[0],
                        "tooltip": "LoRA shape and batching (rank, target modules, gradient accumulation).",
                    },
                ),
                "schedule": (
                    ["adaptive", "fixed"],
                    {
                        "default": "adaptive",
                        "tooltip": "adaptive: 4 phases that end on statistical convergence; fixed: the preset's step count.",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 2**31 - 1,
                        "tooltip": "Seed for LoRA init, batches and noise; same seed = same result. resume continues the saved "
                        "run with its own seed, whatever this says (the front end randomises seeds after each queue).",
                    },
                ),
            },
            "optional": {
                "identity": (
                    "IDENTITY",
                    {
                        "tooltip": "Optional identity reference: probe drift every N steps and keep the best checkpoint."
                    },
                ),
                "probe_every": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 100000,
                        "tooltip": "Steps between identity probes (0 = off; needs identity).",
                    },
                ),
                "probe_samples": (
                    "INT",
                    {"default": 4, "min": 1, "max": 16, "tooltip": "Fixed-seed samples rendered per probe."},
                ),
                "rank": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 1024,
                        "tooltip": "Override the preset rank (0 = preset).",
                    },
                ),
                "caption_template": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Caption, e.g. 'a photo of {trigger}'. Empty = rotating templates.",
                    },
                ),
                "flip": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Add horizontally flipped copies (avoid for asymmetric faces).",
                    },
                ),
                "color_jitter": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 0.5,
                        "step": 0.01,
                        "tooltip": "Add one colour-jittered copy per image with this strength.",
                    },
                ),
                "phases_json": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Custom phases as JSON (list of {name, lr, alpha, loss, optimizer, min_steps, max_steps}). Empty = seed phases.",
                    },
                ),
                "window": (
                    "INT",
                    {"default": 50, "min": 3, "max": 10000, "tooltip": "Convergence window in steps."},
                ),
                "patience": (
                    "INT",
                    {
                        "default": 3,
                        "min": 1,
                        "max": 100,
                        "tooltip": "The slope is fitted over the last patience × window losses of a phase.",
                    },
                ),
                "p_threshold": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": 0.001,
                        "max": 0.999,
                        "step": 0.001,
                        "tooltip": "Plateau when p(loss still decreasing) is above this.",
                    },
                ),
                "significance": (
                    "FLOAT",
                    {
                        "default": 0.05,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "A finished phase must lower the validation loss beyond its standard error at this one-sided level (z-test), "
                        "otherwise the remaining lower-lr phases are skipped. 1.0 = never skip.",
                    },
                ),
                "min_val_gain": (
                    "FLOAT",
                    {
                        "default": 0.02,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.001,
                        "tooltip": "A phase ends when running it to its max_steps at the current rate of fall would lower "
                        "the validation loss by less than this fraction (0.02 = 2 %; slope test on the phase's validation "
                        "points). Lower = trains longer, closer to a full-length run.",
                    },
                ),
                "checkpoint_every": (
                    "INT",
                    {
                        "default": 100,
                        "min": 0,
                        "max": 100000,
                        "tooltip": "Save the full training state every N steps (and on cancel).",
                    },
                ),
                "resume": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Continue from the saved training state of this lora_name.",
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("MODEL", "STRING", "IMAGE", "STRING")
    RETURN_NAMES = ("model", "lora_name", "loss_curve", "report")
    FUNCTION = "train"
    CATEGORY = f"{CATEGORY}/training"
    OUTPUT_NODE = True
    DESCRIPTION = (
        "Train a LoRA that stops on statistical convergence (4 phases: COARSE/MID/MID_FINE/FINAL_FINE) and save it "
        "in kohya format to models/loras. Outputs the model with the LoRA applied, the file name, a loss curve with "
        "phase exits, and a report."
    )

    def train(self, model, clip, vae, images, trigger_word, lora_name, preset, schedule, seed, identity=None,
              probe_every=0, probe_samples=4, rank=0, caption_template="", flip=False, color_jitter=0.0,
              phases_json="", window=50, patience=3, p_threshold=0.5, significance=0.05, min_val_gain=0.02, checkpoint_every=100, resume=False,
              unique_id=None):  # fmt: skip
        import comfy.model_management as mm  # type: ignore[import-not-found]
        import comfy.utils  # type: ignore[import-not-found]
        import torch

        from ..core.errors import IdentityLockError
        from ..core.training import dataset as ds
        from ..core.training.checkpoint import adopt_saved_seed, load_checkpoint
        from ..core.training.comfy_backend import (
            SigmaBackend,
            ldm_to_diffusers_map,
            name_mapper,
            release_inference_tensors,
            training_mode,
        )
        from ..core.training.convergence import ControllerConfig
        from ..core.training.lora_format import check_lora_name, save_lora
        from ..core.training.network import LoRANetwork
        from ..core.training.presets import TARGETS, config_for, load_schedule
        from ..core.training.probe import drift_scorer, make_probe
        from ..core.training.report import lora_metadata, loss_curve_image, report_text
        from ..core.training.trainer import TrainData, Trainer

        trigger = ds.check_trigger(trigger_word)
        file_name = check_lora_name(lora_name)
        arrays = image_to_numpy(images, "images")
        ds.check_images(arrays)
        try:
            phases = load_schedule(phases_json).phases if phases_json.strip() else None
        except ValueError as exc:
            raise IdentityLockError(f"phases_json: {exc}") from exc
        if probe_every and identity is None:
            raise IdentityLockError("probe_every > 0 needs an IDENTITY input (IdentityEmbed)")
        cfg = config_for(
            preset, len(arrays), adaptive=schedule == "adaptive", phases=phases, seed=int(seed),
            checkpoint_every=int(checkpoint_every), probe_every=int(probe_every),
            controller=ControllerConfig(window=int(window), patience=int(patience), p_threshold=float(p_threshold),
                                        significance=float(significance), min_val_gain=float(min_val_gain)),
        )  # fmt: skip
        if rank:
            cfg.rank = cfg.alpha = int(rank)
        captions = ds.make_captions(len(arrays), trigger, None, caption_template or None)
        ckpt = os.path.join(output_directory(), "identitylock_training", file_name + ".state.pt")
        if resume and not os.path.exists(ckpt):
            raise IdentityLockError(f"resume: no saved training state for {file_name} at {ckpt}")

        mp = model.clone()
        with training_mode():
            if resume:
                # loaded here, not under ComfyUI's inference mode: its tensors are updated in place while training;
                # the saved seed is adopted before anything seed-dependent (split, augmentation, LoRA init)
                resume_state = load_checkpoint(ckpt)
                adopt_saved_seed(cfg, resume_state)
            mp.model.requires_grad_(False)
            ms = mp.get_model_object("model_sampling")
            dev = mp.load_device

            # frozen encoders: no autograd (their weights are inference tensors created by the loader)
            @torch.no_grad()
            def encode_images(ims):
                px = torch.from_numpy(__import__("numpy").stack(ims)).float() / 255.0
                return mp.model.process_latent_in(vae.encode(px[..., :3])).float().cpu().clone()

            @torch.no_grad()
            def encode_text(caps):
                out = [clip.encode_from_tokens(clip.tokenize(c)) for c in caps]
                return torch.cat(out).float().cpu().clone()

            data: TrainData = ds.prepare_data(
                arrays,
                captions,
                encode_images,
                encode_text,
                flip=bool(flip),
                jitter=float(color_jitter),
                seed=cfg.seed,
            )
            try:
                ldm_map = ldm_to_diffusers_map(
                    comfy.utils.unet_to_diffusers(mp.model.model_config.unet_config)
                )
            except Exception:
                ldm_map = {}
            net = LoRANetwork(cfg.rank, cfg.alpha, cfg.dropout, seed=cfg.seed)
            wrappers = net.weight_wrappers(
                mp.model.diffusion_model, TARGETS[cfg.target_modules], name_map=name_mapper(ldm_map)
            )
            if not wrappers:
                raise IdentityLockError(
                    "no attention/feed-forward layers found in this MODEL; only UNet models (SD1.x/SDXL) are supported"
                )
            for path, fn in wrappers:
                mp.add_weight_wrapper(f"diffusion_model.{path}", fn)
            mm.load_models_gpu([mp], memory_required=1e20, force_full_load=True)
            n_inf = release_inference_tensors(mp.model.diffusion_model)
            _log.info("LoRATrainAdaptive: %d frozen base tensors copied out of inference mode", n_inf)
            net.to(dev)
            dtype = mp.model_dtype()

            def apply_model(xt, sigma, cond):
                return mp.model.apply_model(xt.to(dtype), sigma, c_crossattn=cond.to(dtype)).float()

            backend = SigmaBackend(apply_model, ms.percent_to_sigma,
                                   lambda s, n, x: ms.noise_scaling(s, n, x, False), dev)  # fmt: skip
            probe = None
            if probe_every and identity is not None:
                probe = make_probe(
                    self._probe_renderer(mp, clip, vae, captions[0], data, int(probe_samples)),
                    drift_scorer(identity),
                )
            bar = Progress(max(1, sum(p.max_steps for p in cfg.schedule.phases)))

            def on_step(info):
                bar.total = max(1, info.max_total_steps)
                # live loss curve as the ProgressBar preview (a PIL drawing, ~ms) every 10 steps and at validations
                preview = None
                if info.step % 10 == 0 or info.val_loss is not None or info.step == 1:
                    preview = loss_curve_image(trainer.snapshot(), 400, 200)
                bar.update(1, preview)
                send_status("train", {
                    "phase": info.phase, "step": info.step, "loss": info.loss, "lr": info.lr, "slope": info.slope,
                    "p_value": info.p_value, "eta_seconds": round(info.eta_seconds, 1), "val_loss": info.val_loss,
                    "max_steps": info.max_total_steps,
                }, unique_id)  # fmt: skip

            trainer = Trainer(net, backend, data, cfg, on_step=on_step, check_cancel=check_interrupted,
                              checkpoint_path=ckpt, probe=probe)  # fmt: skip
            if resume:
                trainer.resume(state=resume_state)
            result = trainer.run()
            net.requires_grad_(False)
            state = net.kohya_state_dict()
            extra: dict[str, Any] = {"alpha": net.alpha}
            if result.probes.best_state is not None:
                state = result.probes.best_state
                extra["selected"] = f"best identity probe at step {result.probes.best.step}"
                net.load_kohya_state_dict(state)
                extra["alpha"] = net.alpha
            fp = _model_fingerprint(mp)
            path = save_lora(
                os.path.join(_loras_dir(), file_name), state, lora_metadata(result, cfg, trigger, fp, **extra)
            )
        curve = loss_curve_image(result)
        report = report_text(result, cfg, str(path))
        send_status("train_done", {"lora": file_name, "report": report}, unique_id)
        return (mp, file_name, numpy_to_image([curve]), report)

    @staticmethod
    def _probe_renderer(mp, clip, vae, prompt, data, k):
        import numpy as np
        import torch

        from .seeds import ComfySampling

        sampling = ComfySampling()
        pos = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
        neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        h, w = data.latents.shape[-2:]
        latent = {"samples": torch.zeros((1, 4, h, w))}

        def render():
            with torch.no_grad():
                samples = sampling.sample(
                    mp, list(range(1, k + 1)), latent, pos, neg, 20, 5.8, "euler", "normal", 1.0
                )
                imgs = sampling.decode(vae, samples)
            return [(np.clip(im.cpu().numpy(), 0, 1) * 255 + 0.5).astype(np.uint8) for im in imgs]

        return render


def _model_fingerprint(mp) -> str:
    """Hash of a few base weights (a ComfyUI MODEL has no file path here)."""
    import hashlib

    h = hashlib.sha256()
    for i, (name, p) in enumerate(mp.model.diffusion_model.named_parameters()):
        if i % 50 == 0:
            h.update(name.encode())
            h.update(p.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return "weights-sha256:" + h.hexdigest()


NODE_CLASS_MAPPINGS = {"LoRATrainAdaptive": LoRATrainAdaptive}
NODE_DISPLAY_NAME_MAPPINGS = {"LoRATrainAdaptive": "LoRA Train (Adaptive, IdentityLock)"}
