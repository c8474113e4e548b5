"""``identitylock curate`` and ``identitylock quality``: the portfolio curation commands (cheap to import)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def _k(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        k = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"k must be a positive integer or 'auto', got {value!r}") from exc
    if k < 1:
        raise argparse.ArgumentTypeError("k must be >= 1")
    return k


def _weights(value: str) -> dict[str, float]:
    """``0.5,0.3,0.2`` (sharpness, contrast, confidence[, face_size]) or ``sharpness=0.6,contrast=0.4``."""
    names = ["sharpness", "contrast", "confidence", "face_size"]
    out: dict[str, float] = {}
    try:
        for i, part in enumerate(p for p in value.split(",") if p.strip()):
            if "=" in part:
                k, v = part.split("=", 1)
                out[k.strip()] = float(v)
            else:
                out[names[i]] = float(part)
    except (ValueError, IndexError) as exc:
        raise argparse.ArgumentTypeError(f"bad --weights {value!r}: {exc}") from exc
    return out


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image folders (searched recursively) or files")
    p.add_argument(
        "--quality",
        default="B",
        help="threshold strategy: A/conservative, B/balanced (default), C/aggressive",
    )
    p.add_argument(
        "--weights", type=_weights, help="score weights, e.g. 0.5,0.3,0.2 or sharpness=0.6,contrast=0.4"
    )
    p.add_argument(
        "--calibrate", metavar="GOOD_DIR", help="derive curves and minimums from images you know are good"
    )
    p.add_argument("--config", metavar="JSON", help="a saved quality config (from --save-config)")
    p.add_argument(
        "--save-config", metavar="JSON", help="write the quality config used (e.g. after --calibrate)"
    )
    p.add_argument("--backend", default="dlib", choices=["dlib", "insightface", "auto"], help="face engine")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument(
        "--no-rescue", action="store_true", help="skip the detection rescue ladder (faster on no-face images)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "curate",
        help="score, de-duplicate, cluster and select a training portfolio from a folder of images",
        description="Writes PORTFOLIO/master_image_catalog.json, curated/curated_catalog.json, curated/images/, "
        "selection_report.json and selection_log.txt.",
    )
    _add_common(p)
    p.add_argument("--out", required=True, help="portfolio folder to create")
    p.add_argument("--target", type=int, default=70, help="how many images to select (default 70)")
    p.add_argument("--k", type=_k, default=8, help="clusters (default 8) or 'auto' (silhouette)")
    p.add_argument(
        "--strategy",
        default="balanced",
        choices=["quality-first", "balanced", "diversity-first"],
        help="selection",
    )
    p.add_argument(
        "--link", default="symlink", choices=["symlink", "hardlink", "copy", "none"], help="curated/images"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    p.add_argument("--no-dedup", action="store_true", help="keep near-duplicates")
    p.add_argument(
        "--max-hamming", type=int, default=6, help="pHash distance that counts as a near-duplicate"
    )
    p.add_argument(
        "--max-drift", type=float, default=None, help="reject faces this far from the set's identity"
    )
    p.add_argument("--clip-model", help="open_clip model name (e.g. ViT-B-32) for CLIP embeddings")
    p.add_argument("--clip-checkpoint", help="local open_clip checkpoint file (never downloaded)")
    p.add_argument("--clip-config", help="open_clip model-config JSON for custom models")
    p.set_defaults(func=cmd_curate)

    q = sub.add_parser("quality", help="score every image (face validation, sharpness, contrast, confidence)")
    _add_common(q)
    q.add_argument("--out", required=True, help="scores JSON to write")
    q.set_defaults(func=cmd_quality)


def _progress(args):
    if args.quiet:
        return None

    def cb(done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            print(f"\r{done}/{total} images", end="\n" if done == total else "", file=sys.stderr, flush=True)

    return cb


def _config(args):
    from ..config_fields import parse_json
    from ..errors import IdentityLockError
    from ..fileio import check_output_file, printable, write_json_atomic
    from ..images import iter_image_files
    from ..quality import QualityConfig, calibrate
    from ..records import iter_records

    replacing_config = bool(args.save_config) and Path(args.save_config).is_file()
    if args.save_config:  # before the calibration work, not after it
        check_output_file(args.save_config, overwrite=True, what="--save-config file")

    try:
        if args.config:
            cfg = QualityConfig.from_dict(
                parse_json(Path(args.config).read_text(), f"--config {args.config}")
            )
        else:
            cfg = QualityConfig.for_strategy(args.quality, args.weights)
        if args.weights and args.config:
            cfg.weights.update(args.weights)
        if args.calibrate:
            files = list(iter_image_files([args.calibrate]))
            recs = list(
                iter_records(files, config=cfg, workers=args.workers, engine_kwargs={"backend": args.backend})
            )
            metrics = [r.quality.metrics for r in recs if r.quality is not None]
            cfg = calibrate(metrics, cfg)
    except (ValueError, KeyError, OSError, UnicodeDecodeError) as exc:
        raise IdentityLockError(f"quality settings: {exc}") from None
    if args.save_config:
        write_json_atomic(args.save_config, cfg.to_dict(), indent=2)
        if replacing_config:
            print(
                f"note: replaced the existing quality config {printable(args.save_config)}", file=sys.stderr
            )
    return cfg


def cmd_curate(args) -> int:
    from ..cluster import ClipEmbedder, check_clip_source
    from ..curate import check_portfolio_out, curate, selection_log
    from ..errors import IdentityLockError

    # everything the user can get wrong is checked before any work (and before any open_clip call)
    if (args.clip_checkpoint or args.clip_config) and not args.clip_model:
        raise IdentityLockError("--clip-checkpoint/--clip-config need --clip-model NAME (e.g. ViT-B-32)")
    if args.clip_model:
        check_clip_source(args.clip_model, args.clip_checkpoint, args.clip_config)
    check_portfolio_out(Path(args.out), args.overwrite)
    cfg = _config(args)
    clip = None
    if args.clip_model:
        clip = ClipEmbedder.from_open_clip(args.clip_model, args.clip_checkpoint, args.clip_config)
    res = curate(
        args.inputs,
        args.out,
        target=args.target,
        k=args.k,
        strategy=args.strategy,
        config=cfg,
        link_mode=args.link,
        overwrite=args.overwrite,
        workers=args.workers,
        engine_kwargs={"backend": args.backend},
        analyze_kwargs={"rescue": not args.no_rescue},
        clip=clip,
        dedup=not args.no_dedup,
        max_hamming=args.max_hamming,
        max_drift=args.max_drift,
        progress=_progress(args),
    )
    print(selection_log(res.report), end="")
    print(f"portfolio written to {res.out_dir}")
    return EXIT_BAD_INPUT if res.report["counts"]["unreadable"] else EXIT_OK


def cmd_quality(args) -> int:
    from ..catalog import write_json
    from ..fileio import check_output_file, printable
    from ..records import score_paths

    replacing = Path(args.out).is_file()  # a scores file is a result to refresh: replaced, but never silently
    check_output_file(args.out, overwrite=True, what="scores file")  # before the work
    cfg = _config(args)
    records, doc = score_paths(
        args.inputs,
        config=cfg,
        workers=args.workers,
        engine_kwargs={"backend": args.backend},
        analyze_kwargs={"rescue": not args.no_rescue},
        progress=_progress(args),
    )
    write_json(args.out, doc)
    c = doc["counts"]
    print(
        f"{c['total']} images: {c['passed']} passed, {c['unreadable']} unreadable, rejected {c['rejected']}"
    )
    for r in records:
        if r.error:
            print(f"  unreadable: {r.path}: {r.error}")
    print(f"scores written to {printable(args.out)}" + (" (replaced the previous file)" if replacing else ""))
    return EXIT_BAD_INPUT if c["unreadable"] else EXIT_OK
