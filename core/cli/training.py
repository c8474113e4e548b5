"""``identitylock train``: adaptive LoRA training outside ComfyUI (diffusers + our core trainer).

Runs on one device, or under ``accelerate launch identitylock train ...`` on several GPUs.
"""

from __future__ import annotations

import argparse
import logging
import sys

_log = logging.getLogger("IdentityLock.training")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a LoRA that stops on statistical convergence",
        description="Train a kohya-format LoRA (loads in ComfyUI and diffusers) with the 4-phase adaptive schedule.",
    )
    p.add_argument(
        "--images",
        required=True,
        help="folder of prepared images (FaceCropPrep output); NAME.txt = caption. Validation holds out whole "
        "photos: variants are grouped by prep_metadata.json or their NAME_main/_rotate_*/_crop_* names",
    )
    p.add_argument(
        "--model",
        required=True,
        help="base model: local diffusers folder (SD1.x, SDXL, FLUX.1, Flux.2, Z-Image, Qwen-Image, SD3.x, Chroma) "
        "or a single .safetensors checkpoint",
    )
    p.add_argument(
        "--family",
        default="auto",
        help="model family: auto (default: from model_index.json or the checkpoint's keys), sd15, sdxl, flux1, "
        "flux2, zimage, qwen_image, sd3, chroma",
    )
    p.add_argument(
        "--config",
        help="local diffusers folder for a single-file checkpoint: SD1.5 needs none (its configs are written "
        "locally), SDXL's configs are read from it, a DiT transformer file takes its text encoders and VAE from "
        "it; nothing is downloaded",
    )
    p.add_argument("--trigger", required=True, help="trigger word put in every caption, e.g. lsaperson")
    p.add_argument("--out", required=True, help="output LoRA file, e.g. loras/lisa.safetensors")
    p.add_argument(
        "--preset",
        default="auto",
        help="built-in preset name or preset .json (default auto: the family's preset for a 24 GB card, FACE_RANK32 "
        "on SD1.x/SDXL, FACE_RANK16 on the large flow models; docs/training.md lists each preset's parameter "
        "count and state size)",
    )
    p.add_argument(
        "--schedule",
        choices=["adaptive", "fixed"],
        default="adaptive",
        help="4-phase adaptive or the preset's fixed steps",
    )
    p.add_argument("--phases", help="custom phases: JSON file or JSON string (list of phases)")
    p.add_argument("--rank", type=int, help="override the preset's rank")
    p.add_argument(
        "--caption-template", help="caption for images without a .txt, e.g. 'a photo of {trigger}'"
    )
    p.add_argument(
        "--resolution",
        type=int,
        help="training resolution (square; default: the family's, 512 for SD1.x, 1024 else)",
    )
    p.add_argument("--flip", action="store_true", help="add horizontally flipped copies")
    p.add_argument(
        "--color-jitter",
        type=float,
        default=0.0,
        help="add color-jittered copies with this strength (e.g. 0.1)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=int, default=50, help="convergence window (steps)")
    p.add_argument(
        "--patience", type=int, default=3, help="slope fitted over the last patience x window losses"
    )
    p.add_argument(
        "--significance",
        type=float,
        default=0.05,
        help="skip the remaining lower-lr phases when a phase's validation gain is not significant at this level",
    )
    p.add_argument(
        "--p-threshold", type=float, default=0.5, help="plateau when p(still decreasing) exceeds this"
    )
    p.add_argument(
        "--exit-on",
        choices=["validation", "train"],
        default="validation",
        help="what ends a phase: the validation-loss trend (default) or the training-loss slope",
    )
    p.add_argument(
        "--min-val-gain",
        type=float,
        default=0.02,
        help="a phase ends when finishing its max steps at the current rate would lower validation loss by less than this (relative; 0.02 = 2 %%)",
    )
    p.add_argument("--checkpoint", help="training-state file (default: OUT.state.pt)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over: discard a saved training state of this output and replace an existing --out file "
        "(without --resume or --overwrite, train refuses to touch either)",
    )
    p.add_argument(
        "--identity",
        help="identity reference .safetensors for the drift probe (from `identitylock embed`)",
    )
    p.add_argument(
        "--probe-every",
        type=int,
        default=0,
        help="render K fixed-seed samples and score drift every N steps (0: every 200 steps with --identity); "
        "the LoRA written is the state with the lowest drift",
    )
    p.add_argument("--device", help="cpu / cuda / cuda:1 (default: cuda if available)")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="forward-pass precision; LoRA weights stay fp32 (auto: bf16 on a GPU that has it, fp16 with loss "
        "scaling on an older GPU, fp32 on CPU)",
    )
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute the denoiser's blocks in the backward pass: much less VRAM, slower steps, same result "
        "(on by default for the families that need it on a 24 GB card)",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=int,
        default=2,
        help="training states kept on disk: the newest at --checkpoint plus older ones beside it (default 2)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..diffusion import detect_family, family_of_pipeline, load_pipeline
    from ..errors import IdentityLockError
    from ..families import get_family
    from ..training import dataset as ds
    from ..training import job
    from ..training.diffusers_backend import base_model_hash, train_diffusers
    from ..training.lora_format import check_lora_name
    from ..training.presets import get_preset, load_schedule

    trigger = ds.check_trigger(args.trigger)
    out = Path(args.out)
    check_lora_name(out.name)
    state_path = job.cli_state_path(out, args.checkpoint)
    job.check_outputs(out, state_path, resume=args.resume, overwrite=args.overwrite)  # before any work
    wanted = args.family
    if args.family in (None, "auto"):  # a missing model is load_pipeline's to report
        wanted = detect_family(args.model) if Path(args.model).exists() else "sd15"
    try:
        preset = get_preset(get_family(wanted).default_preset if args.preset == "auto" else args.preset)
        phases = load_schedule(args.phases).phases if args.phases else None
    except ValueError as exc:
        raise IdentityLockError(str(exc)) from None
    images, given = ds.load_folder(args.images)
    ds.check_images(images)
    sources = ds.folder_sources(args.images)  # variants of one photo stay on one side of the split
    ds.split_by_source(sources)  # one photo only: refused here, before the model loads
    captions = ds.make_captions(len(images), trigger, given, args.caption_template)
    cfg = job.build_config(
        preset, len(images), schedule=args.schedule, phases=phases, seed=args.seed, rank=args.rank or 0,
        checkpoint_every=args.checkpoint_every, window=args.window,
        probe_every=job.probe_interval(args.probe_every, bool(args.identity), "--identity"),
        patience=args.patience, p_threshold=args.p_threshold, significance=args.significance,
        exit_on=args.exit_on, min_val_gain=args.min_val_gain,
    )  # fmt: skip
    reference = None
    if args.identity:
        from ..identity import IdentityReference

        reference = IdentityReference.load(args.identity)
    resume_state = job.saved_state(state_path, resume=args.resume)
    device = args.device or _default_device()
    pipe = load_pipeline(
        args.model, config=args.config, family=args.family, dtype=weight_dtype(args.precision, device, wanted)
    )
    family = get_family(family_of_pipeline(pipe))
    result, path, report = train_diffusers(
        pipe,
        images,
        captions,
        cfg,
        out,
        trigger=trigger,
        base_hash=base_model_hash(args.model),
        resolution=family.resolution if args.resolution is None else args.resolution,
        flip=args.flip,
        jitter=args.color_jitter,
        checkpoint_path=state_path,
        resume_state=resume_state,
        probe_reference=reference,
        device=device,
        sources=sources,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing or family.gradient_checkpointing,
        keep_checkpoints=max(1, args.keep_checkpoints),
        family=family.key,
    )
    print(report, file=sys.stdout)
    return 0


def weight_dtype(precision: str, device: str, family: str):
    """The base weights' dtype: bf16 when the forward pass runs in bf16 on a model larger than SD1.5 (FLUX.1's 12B
    in fp32 is 48 GB, in bf16 24 GB; the LoRA weights stay fp32 either way), else fp32 as before."""
    import torch

    from ..training.precision import resolve_precision

    if family != "sd15" and resolve_precision(precision, device) == "bf16":
        return torch.bfloat16
    return torch.float32


def _default_device() -> str:
    """--device left out: the first CUDA device when there is one (the CLI chooses; core takes what it is given)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
