"""``identitylock seeds`` / ``identitylock render`` / ``identitylock profile``: seed search and stylized renders
with diffusers, outside ComfyUI. Heavy imports happen inside the command functions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import IdentityLockError
from ..fileio import printable


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model", help="local diffusers folder or SD1.5 .safetensors/.ckpt single file")
    g.add_argument("--tiny", action="store_true", help="tiny random pipeline (smoke tests / timing only)")
    p.add_argument(
        "--config", help="diffusers config folder for a single-file model (default: bundled SD1.5)"
    )
    p.add_argument("--lora", help="LoRA .safetensors (kohya or diffusers format)")
    p.add_argument("--sampler", default="default", help="default | ddim | euler | euler_a | dpmpp_2m | pndm")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--fp16", action="store_true", help="half precision (GPU)")
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--width", type=int, default=None, help="default: the model's native size")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--backend", default=None, help="face backend (default: the reference's backend)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "seeds",
        help="render a prompt over many seeds and rank them by identity drift",
        description="Render over seeds with diffusers, score each render's drift from the reference, keep the "
        "locked ones. Prints a table; writes seed_search.jsonl (one line per seed, as it goes; --resume reads it), "
        "seed_search.json and verify_seed_<seed>_drift_<d>.png to --out.",
    )
    _model_args(p)
    p.add_argument("--reference", required=True, help="identity reference .safetensors (identitylock embed)")
    p.add_argument("--prompt", required=True, help="prompt (include the LoRA trigger word)")
    p.add_argument("--seeds", default="0:32", help="'start:end' (end exclusive), 'a:b:step' or '5,17,42'")
    p.add_argument("--stop-after", type=int, default=0, help="stop after K locked seeds (0 = all)")
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--cfg", type=float, default=5.8)
    p.add_argument("--lora-scale", type=float, default=1.0)
    p.add_argument("--threshold", type=float, default=None, help="lock threshold (default: the backend's)")
    p.add_argument("--batch", type=int, default=1, help="seeds per batch")
    p.add_argument("--save", choices=("none", "locked", "top", "all"), default="top")
    p.add_argument(
        "--no-rescue", action="store_true", help="skip the detection rescue ladder (faster misses)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip the seeds already in --out/seed_search.jsonl (a killed search goes on; same settings only)",
    )
    p.set_defaults(func=cmd_seeds)

    r = subparsers.add_parser(
        "render",
        help="stylized render: 3-pass (identity lock, scene, realism + rescue) or 2-pass export",
        description="Render with drift measured after every pass; all prompts and parameters go into the PNG "
        "metadata and render.json.",
    )
    _model_args(r)
    r.add_argument("--passes", type=int, choices=(2, 3), default=3)
    r.add_argument("--reference", help="identity reference .safetensors (drift per pass)")
    r.add_argument("--prompt", required=True, help="identity prompt with the trigger word (3-pass: pass 1)")
    r.add_argument("--scene", default="", help="scene prompt (3-pass pass 2), e.g. 'urban rooftop at sunset'")
    r.add_argument("--realism-prompt", default=None)
    r.add_argument("--realism-model", default=None, help="2-pass: realism checkpoint (default: --model)")
    r.add_argument("--seed", type=int, default=0, help="seed of pass 1 (use a locked seed from `seeds`)")
    r.add_argument("--rescue", type=float, default=0.30, help="3-pass rescue blend toward pass 1")
    r.add_argument("--rescue-mode", choices=("always", "if-better", "off"), default="always")
    r.add_argument("--out", required=True)
    r.add_argument("--name", default="render", help="file stem")
    r.set_defaults(func=cmd_render)

    q = subparsers.add_parser(
        "profile",
        help="pick lora_ipadapter / lora_only / ipadapter_only / img2img from a character's assets",
    )
    q.add_argument("--lora")
    q.add_argument("--identity", help="identity reference .safetensors")
    q.add_argument("--image", help="reference image (needed for IPAdapter or img2img)")
    q.add_argument("--ipadapter", help="IPAdapter model file")
    q.set_defaults(func=cmd_profile)


def _check_args(args) -> None:
    """Refuse numbers that would crash the sampler minutes later or silently render garbage (NaN cfg)."""
    import math

    if args.steps < 1:
        raise IdentityLockError(f"--steps must be at least 1, got {args.steps}")
    for name in ("width", "height"):
        v = getattr(args, name)
        if v is not None and (v < 64 or v > 8192 or v % 8):
            raise IdentityLockError(f"--{name} {v}: give a multiple of 8 between 64 and 8192")
    for name in ("cfg", "lora_scale", "rescue"):
        v = getattr(args, name, None)
        if v is not None and not math.isfinite(v):
            raise IdentityLockError(f"--{name.replace('_', '-')} must be a finite number, got {v}")
    if getattr(args, "rescue", None) is not None and not 0.0 <= args.rescue <= 1.0:
        raise IdentityLockError(
            f"--rescue {args.rescue} must be between 0 and 1 (the share of pass 1 blended back)"
        )
    for name in ("batch", "top_k", "stop_after"):
        v = getattr(args, name, None)
        if v is not None and v < (1 if name == "batch" else 0):
            raise IdentityLockError(f"--{name.replace('_', '-')} {v} is too small")


def pick_device(name: str | None) -> str:
    """``--device`` checked before any model loads: a typo or an absent GPU is one sentence, not a traceback."""
    import torch

    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise IdentityLockError(f"--device {name!r} is not a torch device: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise IdentityLockError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise IdentityLockError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return name


def _renderer(args, model: str | None = None, lora: str | None = None):
    import torch

    from ..diffusion import DiffusersRenderer, build_tiny_pipeline, load_pipeline

    device = pick_device(args.device)
    if args.tiny and model is None:
        pipe = build_tiny_pipeline().to(device)
    else:
        dtype = torch.float16 if args.fp16 else torch.float32
        pipe = load_pipeline(model or args.model, config=args.config, dtype=dtype, device=device)
    return DiffusersRenderer(pipe, lora=lora, sampler=args.sampler)


def _reference(path: str | None):
    if not path:
        return None
    from ..identity import IdentityReference

    return IdentityReference.load(path)


def _engine(args, reference):
    if reference is None:
        return None
    from ..faces import get_engine

    return get_engine(args.backend or reference.backend)


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cmd_seeds(args) -> int:
    from ..fileio import check_output_dir
    from ..seed_inputs import check_threshold, parse_seeds
    from ..seed_results import RESULTS_NAME
    from ..seeds import search_seeds, write_report

    _check_args(args)
    pick_device(args.device)
    seeds = parse_seeds(args.seeds)
    check_threshold(args.threshold, "--threshold")
    check_output_dir(args.out, "--out folder")
    reference = _reference(args.reference)
    engine = _engine(args, reference)
    renderer = _renderer(args, lora=args.lora)
    kw = {"negative": args.negative, "steps": args.steps, "cfg": args.cfg, "width": args.width,
          "height": args.height, "lora_scale": args.lora_scale}  # fmt: skip
    render, render_batch = renderer.seed_renderer(args.prompt, **kw)
    params = {"model": "tiny" if args.tiny else str(args.model), "lora": args.lora, "prompt": args.prompt, **kw,
              "sampler": args.sampler}  # fmt: skip

    def on_result(rec, image, done, total):
        d = "miss" if rec.drift is None else f"{rec.drift:.4f}{' locked' if rec.locked else ''}"
        print(f"[{done}/{total}] seed {rec.seed}: {d}", file=sys.stderr, flush=True)

    result = search_seeds(
        render, seeds, reference, engine=engine, threshold=args.threshold, stop_after=args.stop_after or None,
        top_k=args.top_k, rescue=not args.no_rescue, batch_size=args.batch,
        render_batch=render_batch if args.batch > 1 else None, keep_images="none", save=args.save,
        out_dir=args.out, extra=params, on_result=on_result, results=Path(args.out) / RESULTS_NAME,
        resume=args.resume, on_oom=_empty_cuda_cache,
    )  # fmt: skip
    report = write_report(result, args.out)
    print(result.table())
    if result.no_lock_reason():
        print(f"note: {result.no_lock_reason()}", file=sys.stderr)
    print(f"report: {printable(report)}")
    return 0


def cmd_render(args) -> int:
    from ..fileio import check_output_dir, confined_name
    from ..profile import consistency_profile
    from ..render import render_three_pass, render_two_pass

    if args.passes == 3 and not args.scene.strip():
        raise IdentityLockError("--passes 3 needs --scene (the scene prompt of pass 2)")
    _check_args(args)
    pick_device(args.device)
    name = confined_name(args.name, "--name")  # a file stem inside --out, never a path out of it
    check_output_dir(args.out, "--out folder")
    reference = _reference(args.reference)
    engine = _engine(args, reference)
    profile = consistency_profile(lora=args.lora, identity=args.reference)
    if not args.lora:
        print("note: no --lora given; the LoRA scales of each pass have no effect", file=sys.stderr)
    renderer = _renderer(args, lora=args.lora)
    extra = {"model": "tiny" if args.tiny else str(args.model), "lora": Path(args.lora).name if args.lora else None,
             "consistency_method": profile.method, "sampler": args.sampler}  # fmt: skip
    common = {"reference": reference, "engine": engine, "width": args.width, "height": args.height,
              "negative": args.negative, "seed": args.seed, "steps": args.steps, "extra": extra}  # fmt: skip
    if args.passes == 3:
        res = render_three_pass(
            renderer, args.prompt, args.scene, realism_prompt=args.realism_prompt, rescue=args.rescue,
            rescue_mode=args.rescue_mode, **common,
        )  # fmt: skip
    else:
        realism = None
        if args.realism_model:
            realism = _renderer(args, model=args.realism_model)
            realism.name = Path(args.realism_model).name
        res = render_two_pass(renderer, args.prompt, realism_renderer=realism, realism_prompt=args.realism_prompt,
                              **common)  # fmt: skip
    paths = res.save(args.out, name)
    print(res.table())
    print(f"wrote {printable(paths[0])} (+ per-pass PNGs and {printable(paths[-1].name)})")
    return 0


def cmd_profile(args) -> int:
    from ..profile import consistency_profile

    prof = consistency_profile(lora=args.lora, identity=args.identity, reference_image=args.image,
                               ipadapter=args.ipadapter)  # fmt: skip
    print(json.dumps(prof.to_dict(), indent=2))
    given = {
        "lora": args.lora,
        "identity": args.identity,
        "reference_image": args.image,
        "ipadapter": args.ipadapter,
    }
    missing = [k for k, v in given.items() if v and prof.assets.get(k) is None]
    if missing:  # the profile is printed, but a file the user named was not usable: bad input
        print(f"error: not found or not usable: {', '.join(missing)} (see notes)", file=sys.stderr)
        return 2
    return 0
