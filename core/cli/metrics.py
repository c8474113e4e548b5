"""``identitylock metrics``: identity-consistency report for a reference set and candidate folders.

Exit codes: 0 report written (failed face detections are data, not errors); 2 bad input (no reference face,
no candidate images, or some files were unreadable - the report is still written for the rest).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "metrics",
        help="identity-consistency dashboard, copycat report, CSV and JSON for generated images",
        description="Score candidate images (one group per folder, e.g. one per LoRA) against a reference set "
        "of real photos: similarity to the reference centroid with bootstrap CIs, significance tests between "
        "groups, pose/flexibility, overtraining warning, nearest-reference (copycat) pairing and black-hole "
        "ranking. Writes <prefix>.html (offline dashboard), <prefix>.csv and <prefix>.json into --out.",
    )
    ref = p.add_mutually_exclusive_group(required=True)
    ref.add_argument("--reference", type=Path, help="folder (or files) of the person's real photos")
    ref.add_argument("--identity", type=Path, help="an IdentityLock identity .safetensors instead of photos")
    p.add_argument(
        "--candidates",
        type=Path,
        nargs="+",
        required=True,
        help="candidate folders; a folder with images is one group (named after it), a folder holding only "
        "sub-folders contributes one group per sub-folder",
    )
    p.add_argument("--labels", nargs="+", help="group names instead of the folder names (same order)")
    p.add_argument("--out", type=Path, required=True, help="report folder (created)")
    p.add_argument("--backend", default="dlib", choices=("auto", "dlib", "insightface"), help="face backend")
    p.add_argument("--insightface-pack", help="insightface model pack folder or name (buffalo_l, antelopev2)")
    p.add_argument("--threshold", type=float, help="lock threshold (drift); default: the backend's")
    p.add_argument("--workers", type=int, default=0, help="face-analysis processes (0 = all cores)")
    p.add_argument("--prefix", default="identity_metrics", help="file name prefix (default identity_metrics)")
    p.add_argument("--title", default="IdentityLock metrics", help="dashboard title")
    p.add_argument("--no-thumbnails", action="store_true", help="smaller report without image thumbnails")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and t-SNE (reproducible)")
    p.set_defaults(func=cmd_metrics)


def _images(folder: Path) -> list[Path]:
    from ..images import iter_image_files

    return list(iter_image_files([folder], recursive=False))


def candidate_groups(dirs: list[Path], labels: list[str] | None) -> dict[str, list[Path]]:
    """Folder -> group; a folder of sub-folders -> one group per sub-folder. Duplicate names get a suffix."""
    from ..errors import IdentityLockError

    found: list[tuple[str, list[Path]]] = []
    for d in dirs:
        if not d.is_dir():
            raise IdentityLockError(f"{d}: candidate folder not found")
        direct = _images(d)
        if direct:
            found.append((d.resolve().name, direct))
            continue
        subs = [s for s in sorted(d.iterdir()) if s.is_dir() and _images(s)]
        if not subs:
            raise IdentityLockError(f"{d}: no images (and no sub-folders with images)")
        found.extend((s.name, _images(s)) for s in subs)
    if labels:
        if len(labels) != len(found):
            raise IdentityLockError(
                f"--labels gives {len(labels)} name(s) for {len(found)} candidate group(s)"
            )
        found = [(lab, files) for lab, (_, files) in zip(labels, found)]
    groups: dict[str, list[Path]] = {}
    for name, files in found:
        key, k = name, 2
        while key in groups or key == "reference":
            key, k = f"{name}_{k}", k + 1
        groups[key] = files
    return groups


def cmd_metrics(args: argparse.Namespace) -> int:
    from ..errors import IdentityLockError
    from ..fileio import check_output_dir, confined_name, printable
    from ..identity import IdentityReference
    from ..metrics import analyze_items, build_metrics
    from ..metrics.report import write_report
    from ..seed_inputs import check_threshold

    # Everything a user can get wrong is checked before minutes of face analysis.
    check_threshold(args.threshold, "--threshold")
    if args.workers < 0:
        raise IdentityLockError(f"--workers {args.workers}: give 0 (all cores) or a positive number")
    prefix = confined_name(args.prefix, "--prefix")  # a file-name prefix inside --out, never a path out of it
    check_output_dir(args.out, "--out folder")
    if args.reference is not None and not args.reference.exists():
        raise IdentityLockError(f"{args.reference}: reference folder or file not found")
    groups = candidate_groups(args.candidates, args.labels)
    engine_kwargs = {"insightface_pack": args.insightface_pack} if args.insightface_pack else {}
    workers = args.workers or None
    t0 = time.perf_counter()

    def progress(label: str):
        def cb(done: int, total: int) -> None:
            if done == total or done % 25 == 0:
                print(f"  {label}: {done}/{total}", file=sys.stderr)

        return cb

    # One face-analysis pass over every file (one process pool), then split back into reference + groups.
    ref_files: list[Path] = []
    if args.identity:
        reference = IdentityReference.load(args.identity)
        backend = reference.backend
    else:
        ref_files = _images(args.reference) if args.reference.is_dir() else [args.reference]
        if not ref_files:
            raise IdentityLockError(f"{args.reference}: no reference images")
        backend = args.backend
    files = ref_files + [f for fs in groups.values() for f in fs]
    analyzed_all = analyze_items(
        files, backend=backend, engine_kwargs=engine_kwargs, workers=workers, progress=progress("images")
    )
    if not args.identity:
        reference = analyzed_all[: len(ref_files)]
    analyzed, k = {}, len(ref_files)
    for name, fs in groups.items():
        analyzed[name] = analyzed_all[k : k + len(fs)]
        k += len(fs)
    t1 = time.perf_counter()
    result = build_metrics(reference, analyzed, threshold=args.threshold, seed=args.seed)
    paths = write_report(result, args.out, prefix=prefix, title=args.title, thumbnails=not args.no_thumbnails)
    t2 = time.perf_counter()
    print(result.summary_text())
    n = len(result.rows)
    print(
        f"{n} image(s): face analysis {t1 - t0:.1f} s, statistics + report {t2 - t1:.1f} s", file=sys.stderr
    )
    for kind, path in paths.items():
        print(f"{kind}: {printable(path)}")
    unreadable = [printable(r.name) for r in result.rows if r.status == "error"]
    if unreadable:
        print(f"error: could not read {len(unreadable)} file(s): {', '.join(unreadable)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK
