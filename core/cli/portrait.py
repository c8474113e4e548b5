"""``identitylock views DIR`` (view checker table) and ``identitylock portrait`` (matched portrait with diffusers).

Heavy imports (dlib, torch, diffusers) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from ..errors import IdentityLockError
from ..fileio import printable


def register(subparsers: Any) -> None:
    v = subparsers.add_parser(
        "views",
        help="classify each image's head view (front / three-quarter / profile, by frame edge) and check it",
        description="Measure the view every image shows (fused yaw: landmarks + keypoint asymmetry + detector "
        "behaviour) and compare it with the view the file claims (PNG text 'identitylock_view' or the file name, "
        "e.g. anna_3q_left.png, anna_profile_right.png, anna_front.png; left/right = the frame edge the nose "
        "points toward). Mirrored views are flagged.",
    )
    v.add_argument("paths", nargs="+", help="image files or folders")
    v.add_argument("--backend", default="dlib", help="face backend: dlib (default) | insightface | auto")
    v.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    v.add_argument("--strict", action="store_true", help="exit 1 when any expected view is wrong or mirrored")
    v.set_defaults(func=cmd_views)

    p = subparsers.add_parser(
        "portrait",
        help="put the person into a scene: inpaint the scene's face with diffusers, checked and composited",
        description="Detect the scene's face, crop head and shoulders, inpaint the face with diffusers (LoRA "
        "optional), check each render (mirror, pose, identity drift against --reference), retry with the next "
        "seed, color-match and composite back. Writes portrait_final.png, portrait_crop.png, portrait_mask.png "
        "and portrait_report.json to --out.",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model", help="local diffusers folder or SD1.5 .safetensors/.ckpt single file")
    g.add_argument("--tiny", action="store_true", help="tiny random pipeline (smoke tests / timing only)")
    p.add_argument(
        "--config", help="diffusers config folder for a single-file model (default: bundled SD1.5)"
    )
    p.add_argument("--scene", required=True, help="scene image with the face to replace")
    p.add_argument("--reference", required=True, help="identity reference .safetensors (identitylock embed)")
    p.add_argument("--lora", help="identity LoRA .safetensors")
    p.add_argument("--lora-scale", type=float, default=1.0)
    p.add_argument("--prompt", default="photo of a person", help="positive prompt (include the LoRA trigger)")
    p.add_argument("--negative", default="blurry, deformed, cartoon, mirrored")
    p.add_argument(
        "--no-scene-prompt", action="store_true", help="do not append the measured pose/light phrases"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attempts", type=int, default=4)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=6.0)
    p.add_argument("--denoise", type=float, default=0.75, help="inpaint strength (1.0 = from noise)")
    p.add_argument("--work-size", type=int, default=512, help="crop working size (multiple of 8)")
    p.add_argument("--feather", type=float, default=0.06, help="mask feather, fraction of face width")
    p.add_argument("--yaw-tolerance", type=float, default=15.0)
    p.add_argument(
        "--drift-threshold", type=float, default=None, help="default: the reference's lock threshold"
    )
    p.add_argument(
        "--color-match",
        "--colour-match",  # alias: the earlier spelling still works
        dest="color_match",
        type=float,
        default=1.0,
        help="0 = off, 1 = full LAB mean/std match",
    )
    p.add_argument("--seamless", action="store_true", help="Poisson blending before the feathered composite")
    p.add_argument(
        "--face-index", type=int, default=None, help="face counted from the frame's left (default: largest)"
    )
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_portrait)


# -- views ------------------------------------------------------------------------------------------------
def cmd_views(args: argparse.Namespace) -> int:
    from ..faces import get_engine
    from ..images import iter_image_files, load_image
    from ..portrait.views import check_view, expected_view

    engine = get_engine(args.backend)
    files = list(iter_image_files(args.paths))
    if not files:
        raise IdentityLockError(f"no images found in {' '.join(args.paths)}")
    bad_input = failed = 0
    if not args.json:
        print(f"{'file':32s} {'expected':20s} {'measured':20s} {'yaw':>6s} {'conf':>5s}  result")
    for path in files:
        try:
            img = load_image(path)
            exp = expected_view(path)
            chk = check_view(img, exp, engine)
        except IdentityLockError as exc:
            bad_input += 1
            row = {"file": str(path), "error": str(exc)}
            print(json.dumps(row) if args.json else f"{printable(path.name)[:32]:32s} error: {exc}")
            continue
        if chk.measured is None:
            bad_input += 1
        if chk.ok is False:
            failed += 1
        if args.json:
            print(json.dumps({"file": str(path), **chk.to_dict()}, default=str))
        else:
            yaw = "-" if chk.yaw is None else f"{chk.yaw:+.0f}"
            result = chk.message if chk.ok is not None else f"(no expected view) {chk.message}"
            print(
                f"{printable(path.name)[:32]:32s} {exp or '-':20s} {chk.measured or '-':20s} {yaw:>6s} "
                f"{chk.confidence:5.2f}  {result}"
            )
    if not args.json:
        print(
            f"\n{len(files)} image(s): {failed} wrong/mirrored, {bad_input} without a usable face",
            file=sys.stderr,
        )
    if bad_input:
        return 2
    return 1 if (args.strict and failed) else 0


# -- portrait ---------------------------------------------------------------------------------------------
def cmd_portrait(args: argparse.Namespace, pipe=None) -> int:

    from ..diffusion import build_tiny_pipeline, load_pipeline
    from ..faces import get_engine
    from ..fileio import check_output_dir, write_json_atomic
    from ..identity import IdentityReference
    from ..images import load_image, save_png
    from ..portrait.inpaint import DiffusersInpainter
    from ..portrait.pipeline import PortraitSettings, matched_portrait
    from ..portrait.scene import analyze_scene
    from .seeds import pick_device

    # Checked before any model is loaded or any face analyzed.
    if args.steps < 1:
        raise IdentityLockError(f"--steps must be at least 1, got {args.steps}")
    for name in ("cfg", "lora_scale"):
        if not math.isfinite(getattr(args, name)):
            raise IdentityLockError(f"--{name.replace('_', '-')} must be a finite number")
    if not (math.isfinite(args.denoise) and 0.0 < args.denoise <= 1.0):
        raise IdentityLockError(f"--denoise {args.denoise} must be in (0, 1] (1.0 = from noise)")
    pick_device(args.device)
    settings = PortraitSettings(
        seed=args.seed,
        attempts=args.attempts,
        work_size=max(64, args.work_size // 8 * 8),
        mask_feather=args.feather,
        yaw_tolerance=args.yaw_tolerance,
        drift_threshold=args.drift_threshold,
        color_match=args.color_match,
        seamless=args.seamless,
        face_index=args.face_index,
    ).validate()
    out = check_output_dir(args.out, "--out folder")
    ref = IdentityReference.load(args.reference)
    engine = get_engine(ref.backend)
    scene = load_image(args.scene)
    analysis = analyze_scene(scene, engine, face_index=settings.face_index)
    for w in analysis.warnings:
        print(f"warning: {w}", file=sys.stderr)
    prompt = args.prompt
    if not args.no_scene_prompt:
        prompt = ", ".join([prompt, *analysis.face.prompt_fragments()])
    if pipe is None:
        device = pick_device(args.device)
        pipe = (
            build_tiny_pipeline().to(device)
            if args.tiny
            else load_pipeline(args.model, config=args.config, device=device)
        )
    inpainter = DiffusersInpainter(pipe, prompt, args.negative, steps=args.steps, cfg=args.cfg, denoise=args.denoise,
                                   lora=args.lora, lora_scale=args.lora_scale)  # fmt: skip

    def progress(done: int, total: int) -> None:
        print(f"attempt {done}/{total}", file=sys.stderr)

    res = matched_portrait(scene, inpainter, ref, engine=engine, settings=settings, analysis=analysis,
                           progress=progress)  # fmt: skip
    rep = dict(res.report)
    rep["prompt"] = prompt
    meta = {
        "identitylock_portrait": json.dumps(
            {k: rep[k] for k in ("passed", "chosen_seed", "drift", "mirrored")}
        )
    }
    save_png(res.image, out / "portrait_final.png", meta)
    save_png(res.portrait, out / "portrait_crop.png")
    save_png((res.mask * 255 + 0.5).astype("uint8"), out / "portrait_mask.png")
    write_json_atomic(out / "portrait_report.json", rep, default=str)
    drift = "n/a" if rep["drift"] is None else f"{rep['drift']:.4f}"
    status = "PASSED" if res.passed else f"NOT PASSED ({rep['failure']})"
    print(
        f"{status}: seed {rep['chosen_seed']}, {rep['attempts_used']}/{rep['attempts_allowed']} attempts, "
        f"drift {drift}, scene yaw {rep['scene_pose']['yaw']:+.0f}, render yaw "
        f"{(rep['portrait_pose']['yaw'] or 0):+.0f}, light {rep['light_direction']}, "
        f"face {rep['face_fraction']:.0%} of width -> {out}"
    )
    return 0
