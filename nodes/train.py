"""LoRATrainAdaptive: adaptive multi-phase LoRA training on the MODEL the user wired (ComfyUI 0.8 mechanics:
weight wrappers on a cloned ModelPatcher, x0 objective through model_sampling). All logic lives in
core/training; this file only converts ComfyUI values, reports progress and honours cancel.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ._comfy import (
    CATEGORY,
    Progress,
    check_interrupted,
    image_to_numpy,
    model_folder_paths,
    numpy_to_image,
    output_directory,
    send_status,
)

_log = logging.getLogger("IdentityLock")

PRESET_NAMES = [  # the default first: the family's recommended preset; the seed's rank-512 presets stay
    "AUTO",
    "FACE_RANK32",
    "FACE_RANK16",
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


def _preset_tooltip() -> str:
    """What each preset costs, computed from the SD1.5 UNet shape (core.training.presets.footprint_text)."""
    from ..core.training.presets import footprint_text

    rows = "\n".join(f"{name}: {footprint_text(name)}" for name in PRESET_NAMES[1:])
    return (
        "LoRA shape and batching (rank, target modules, gradient accumulation). AUTO: the model family's preset "
        "that fits a 24 GB card (FACE_RANK32 on SD1.x/SDXL, FACE_RANK16 on FLUX, Flux.2, Z-Image, Qwen-Image, "
        "SD3.x, Chroma). The training state (weights + optimizer moments) is saved every checkpoint_every "
        f"steps. Sizes below are for SD1.5:\n{rows}"
    )


class LoRATrainAdaptive:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    "MODEL",
                    {
                        "tooltip": "Base model to train on: SD1.x, SDXL, FLUX.1, Flux.2, Z-Image, Qwen-Image, SD3.x, "
                        "Chroma or Lumina 2 (checkpoint or diffusion-model loader; the family is read from the model)."
                    },
                ),
                "clip": (
                    "CLIP",
                    {
                        "tooltip": "The model's text encoder(s), as its official workflow loads them; each caption is "
                        "encoded once (kept frozen)."
                    },
                ),
                "vae": (
                    "VAE",
                    {"tooltip": "VAE used to encode the training images to latents (cached once)."},
                ),
                "images": (
                    "IMAGE",
                    {
                        "tooltip": "Prepared training images, one size (FaceCropPrep output). About 20 % of the photos "
                        "(with all their variants) are held out for validation; at least 2 different photos."
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
                        "tooltip": _preset_tooltip(),
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
                "prep_metadata": (
                    "STRING",
                    {
                        "forceInput": True,
                        "tooltip": "FaceCropPrep's metadata_json: which photo each image was made from. Validation then "
                        "holds out whole photos (no rotated copy of a training photo is validated on). Unconnected: every "
                        "image counts as its own photo.",
                    },
                ),
                "identity": (
                    "IDENTITY",
                    {
                        "tooltip": "Optional identity reference: probe drift every probe_every steps and save the state with "
                        "the lowest drift."
                    },
                ),
                "probe_every": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 100000,
                        "tooltip": "Steps between identity probes (0 = every 200 steps when identity is connected, off "
                        "otherwise). The LoRA written is the probed state with the lowest drift, not the last step.",
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
                        "tooltip": "Add one color-jittered copy per image with this strength.",
                    },
                ),
                "phases_json": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Custom phases as JSON text (list of {name, lr, alpha, loss, optimizer, min_steps, max_steps}), "
                        "or the name of a .json file in models/identitylock/phases. Empty = seed phases.",
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
                        "tooltip": "A finished phase must lower the validation loss by more than min_val_gain at this one-sided level (paired t-test over held-out photos), "
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
                "overwrite": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Start over: discard the saved training state of this lora_name and replace its "
                        "LoRA file. Off: the node refuses to touch either (set resume to continue a saved run).",
                    },
                ),
                "gradient_checkpointing": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Recompute the model's transformer/resnet blocks in the backward pass instead of "
                        "keeping their activations: much less VRAM (what lets SDXL and the 12B+ flow models train "
                        "on a 24 GB card), about 30 % slower steps, same result. Off only with VRAM to spare.",
                    },
                ),
                "adapter": (
                    ["lora", "lokr"],
                    {
                        "default": "lora",
                        "tooltip": "lora: low-rank ΔW = up·down (kohya format). lokr: Kronecker-factored ΔW (LyCORIS "
                        "format), reported to hold likeness better on Z-Image and Flux.2 Klein. ComfyUI's ordinary "
                        "LoRA loaders read both.",
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
        "Train a LoRA (or LoKr) on SD1.x, SDXL, FLUX.1, Flux.2, Z-Image, Qwen-Image, SD3.x, Chroma or Lumina 2 that "
        "stops on statistical convergence (4 phases: COARSE/MID/MID_FINE/FINAL_FINE) and save it "
        "in kohya format to models/loras. Outputs the model with the LoRA applied, the file name, a loss curve with "
        "phase exits, and a report."
    )

    def train(self, model, clip, vae, images, trigger_word, lora_name, preset, schedule, seed, identity=None,
              probe_every=0, probe_samples=4, prep_metadata=None, rank=0, caption_template="", flip=False, color_jitter=0.0,
              phases_json="", window=50, patience=3, p_threshold=0.5, significance=0.05, min_val_gain=0.02, checkpoint_every=100, resume=False,
              overwrite=False, gradient_checkpointing=True, adapter="lora", unique_id=None):  # fmt: skip
        from ..core.errors import IdentityLockError
        from ..core.families import family_of_comfy_model
        from ..core.training import dataset as ds
        from ..core.training import job
        from ..core.training.lora_format import ADAPTER_KINDS, check_lora_name
        from ..core.training.presets import load_schedule

        # every check before any work (encoding, training): a bad value fails in a second, not after N steps
        if adapter not in ADAPTER_KINDS:  # checked here too: before any work, not when the network is built
            raise IdentityLockError(f"adapter must be one of {', '.join(ADAPTER_KINDS)} (got {adapter!r})")
        trigger = ds.check_trigger(trigger_word)
        file_name = check_lora_name(lora_name)
        arrays = image_to_numpy(images, "images")
        ds.check_images(arrays)
        sources = ds.sources_from_prep_metadata(prep_metadata, len(arrays))
        if sources is None:
            _log.warning(
                "LoRATrainAdaptive: prep_metadata is not connected, so every image counts as its own photo; connect "
                "FaceCropPrep's metadata_json so that variants of one photo are never split between training and validation"
            )  # fmt: skip
        # one source photo only: refused here, before any work
        ds.split_by_source(sources or [str(i) for i in range(len(arrays))])
        if preset not in PRESET_NAMES:  # never a file path from a prompt sent to the server
            raise IdentityLockError(f"preset {preset!r} is not one of {', '.join(PRESET_NAMES)}")
        phases = None
        if phases_json and phases_json.strip():
            try:
                phases = load_schedule(phases_json, folder=_phases_dir(), allow_paths=False).phases
            except ValueError as exc:
                raise IdentityLockError(f"phases_json: {str(exc).removeprefix('phases: ')}") from None
        probe_every = job.probe_interval(probe_every, identity is not None)

        def config(preset_name):
            return job.build_config(
                preset_name, len(arrays), schedule=schedule, phases=phases, seed=int(seed), rank=int(rank),
                checkpoint_every=int(checkpoint_every), probe_every=int(probe_every), window=int(window),
                patience=int(patience), p_threshold=float(p_threshold), significance=float(significance),
                min_val_gain=float(min_val_gain),
            )  # fmt: skip

        cfg = config(PRESET_NAMES[1] if preset == "AUTO" else preset)  # every value checked first
        captions = ds.make_captions(len(arrays), trigger, None, caption_template or None)
        lora_path = Path(_loras_dir()) / file_name
        state_path = job.node_state_path(output_directory(), file_name)
        job.check_outputs(
            lora_path, state_path, resume=bool(resume), overwrite=bool(overwrite), spelling=job.NODE
        )
        family = family_of_comfy_model(model)  # then the MODEL: an unsupported one gets one sentence
        if preset == "AUTO":
            cfg = config(family.default_preset)
        path, result, mp, split, extra = self._train(
            model, clip, vae, arrays, captions, cfg, state_path, lora_path, trigger, identity,
            int(probe_samples), bool(flip), float(color_jitter), bool(resume), unique_id, sources,
            bool(gradient_checkpointing), family, adapter,
        )  # fmt: skip
        from ..core.training.report import loss_curve_image, report_text

        report = report_text(result, cfg, str(path), split, extra.get("selected"), extra.get("probe_note"))
        send_status("train_done", {"lora": file_name, "report": report}, unique_id)
        return (mp, file_name, numpy_to_image([loss_curve_image(result)]), report)

    def _train(self, model, clip, vae, arrays, captions, cfg, state_path, lora_path, trigger, identity, probe_samples,
               flip, jitter, resume, unique_id, sources, gradient_checkpointing, family, adapter):  # fmt: skip
        """The ComfyUI side of a run: clone the MODEL, attach the adapters as weight wrappers, train, save."""
        from ..core.training import dataset as ds
        from ..core.training import job
        from ..core.training.checkpoint import adopt_saved_seed
        from ..core.training.comfy_backend import (
            attach_lora,
            caption_conds,
            compute_dtype,
            encode_images_with,
            model_fingerprint,
            release_inference_tensors,
            sigma_backend,
            training_mode,
        )
        from ..core.training.lora_format import save_lora
        from ..core.training.network import LoRANetwork
        from ..core.training.precision import precision_for_dtype
        from ..core.training.probe import drift_scorer, make_probe
        from ..core.training.report import lora_metadata
        from ..core.training.trainer import Trainer
        from ._training_glue import ldm_map, load_for_training, torch_device, trainable

        mp = model.clone()
        with training_mode():
            # loaded here, not under ComfyUI's inference mode: its tensors are updated in place while training;
            # the saved seed is adopted before anything seed-dependent (split, augmentation, LoRA init)
            resume_state = job.saved_state(state_path, resume=resume, spelling=job.NODE)
            if resume_state is not None:
                adopt_saved_seed(cfg, resume_state)
            mp.model.requires_grad_(False)
            device = torch_device(mp)
            encode_images = encode_images_with(mp, vae)
            conds = caption_conds(mp, clip, encode_images(arrays[:1]).shape[1:], device, family)
            data = ds.prepare_data(arrays, captions, encode_images, conds.index, flip=flip, jitter=jitter,
                                   seed=cfg.seed, sources=sources)  # fmt: skip
            net = LoRANetwork(cfg.rank, cfg.alpha, cfg.dropout, seed=cfg.seed, kind=adapter)
            targets = family.target_suffixes(cfg.target_modules)
            attach_lora(mp, net, targets, ldm_map(mp) if family.key in ("sd15", "sdxl") else {})
            load_for_training(mp)
            n_inf = release_inference_tensors(mp.model.diffusion_model)
            _log.info("LoRATrainAdaptive: %d frozen base tensors copied out of inference mode", n_inf)
            net.to(device)
            probe = None
            if cfg.probe_every and identity is not None:
                render = self._probe_renderer(mp, clip, vae, captions[0], data, probe_samples, family)
                probe = make_probe(render, drift_scorer(identity))
            reporter = job.StepReporter(
                Progress(max(1, sum(p.max_steps for p in cfg.schedule.phases))),
                lambda payload: send_status("train", payload, unique_id),
            )
            trainer = Trainer(net, sigma_backend(mp, device, conds, family), data, cfg, on_step=reporter,
                              check_cancel=check_interrupted, checkpoint_path=state_path, probe=probe,
                              precision=precision_for_dtype(compute_dtype(mp)))  # fmt: skip
            reporter.snapshot = trainer.snapshot
            if resume_state is not None:
                trainer.resume(state=resume_state)
            with trainable(mp.model.diffusion_model, gradient_checkpointing):
                result = trainer.run()
            net.requires_grad_(False)
            state, extra = job.lora_to_save(net, result)
            meta = lora_metadata(result, cfg, trigger, model_fingerprint(mp), split=data.split, family=family.key,
                                 target_modules=list(targets), **net.adapter_info(), **extra)  # fmt: skip
            path = save_lora(lora_path, state, meta)
        return path, result, mp, data.split, extra

    @staticmethod
    def _probe_renderer(mp, clip, vae, prompt, data, k, family):
        """K fixed-seed renders with the family's own sampling defaults, latent shape and guidance."""
        import numpy as np
        import torch

        from .seeds import ComfySampling

        sampling = ComfySampling()
        pos = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
        neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        if family.guidance is not None:  # what FluxGuidance does to the conditioning
            pos = [[c, {**d, "guidance": family.guidance}] for c, d in pos]
        latent = {"samples": torch.zeros((1, *data.latents.shape[1:]))}

        def render():
            with torch.no_grad():
                samples = sampling.sample(mp, list(range(1, k + 1)), latent, pos, neg, family.steps, family.cfg,
                                          family.sampler, family.scheduler, 1.0)  # fmt: skip
                imgs = sampling.decode(vae, samples)
            return [(np.clip(im.cpu().numpy(), 0, 1) * 255 + 0.5).astype(np.uint8) for im in imgs]

        return render


def _phases_dir() -> str | None:
    """The one folder whose ``NAME.json`` files phases_json may name: models/identitylock/phases (None outside
    ComfyUI, where only JSON text is accepted)."""
    folders = model_folder_paths("identitylock")
    return os.path.join(folders[0], "phases") if folders else None


NODE_CLASS_MAPPINGS = {"LoRATrainAdaptive": LoRATrainAdaptive}
NODE_DISPLAY_NAME_MAPPINGS = {"LoRATrainAdaptive": "LoRA Train (Adaptive, IdentityLock)"}
