"""CLI commands of the foundation: prep, embed, drift, doctor."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK

BACKENDS = ("auto", "dlib", "insightface")


def register(sub) -> None:
    p = sub.add_parser("prep", help="prepare photos: background removal, face crop, resize, augmentation")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=768)
    p.add_argument("--face-fraction", type=float, default=0.40, help="face width / output width")
    p.add_argument("--background", choices=("auto", "matting", "grabcut", "none"), default="auto")
    p.add_argument("--no-augment", action="store_true", help="write only the main prepared image per photo")
    p.add_argument("--multiple-faces", choices=("largest", "error"), default="largest")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.set_defaults(func=cmd_prep)

    e = sub.add_parser("embed", help="build an identity reference (.safetensors) from photos of one person")
    e.add_argument("images", nargs="+", help="image files or folders")
    e.add_argument("--out", required=True, help="output .safetensors file")
    e.add_argument("--backend", choices=BACKENDS, default="auto")
    e.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    e.add_argument(
        "--largest-face",
        action="store_true",
        help="use the largest face of a photo with several (default: refuse such photos)",
    )
    e.set_defaults(func=cmd_embed)

    d = sub.add_parser("drift", help="measure identity drift of images against a reference")
    d.add_argument("reference", help="identity .safetensors made by `identitylock embed`")
    d.add_argument("images", nargs="+", help="image files or folders")
    d.add_argument(
        "--threshold", type=float, default=None, help="lock threshold, 0 < t < 1 (default: the backend's)"
    )
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    d.add_argument(
        "--largest-face",
        action="store_true",
        help="measure the largest face of a photo with several (default: such photos are not locked)",
    )
    d.set_defaults(func=cmd_drift)

    doc = sub.add_parser("doctor", help="check backends, model files, onnxruntime flavour and providers")
    doc.add_argument("--json", action="store_true")
    doc.add_argument(
        "--model-dir", action="append", default=[], help="extra insightface / rembg model folder"
    )
    doc.set_defaults(func=cmd_doctor)


def _files(paths: list[str], problems: list[str] | None = None) -> list[Path]:
    from ..images import iter_image_files

    files = list(iter_image_files(paths, problems=problems))
    return files


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def cmd_prep(args) -> int:
    """Prepare every photo; a photo that cannot be used is one warning line (exit 2), never the end of the batch."""
    from ..background import failed
    from ..errors import IdentityLockError
    from ..faces import get_engine
    from ..fileio import check_output_dir, printable
    from ..images import load_image, save_png
    from ..prep import PrepOptions, PrepRecords, prepare_image

    opts = PrepOptions(
        size=args.size,
        face_fraction=args.face_fraction,
        background=args.background,
        augment=not args.no_augment,
        multiple_faces=args.multiple_faces,
    )
    try:
        opts.validate()
    except ValueError as exc:
        _warn(str(exc))
        return EXIT_BAD_INPUT
    problems: list[str] = []
    files = _files(args.images, problems)
    for msg in problems:
        _warn(printable(msg))
    if not files:
        _warn("no image files found in " + ", ".join(printable(p) for p in args.images))
        return EXIT_BAD_INPUT
    out = check_output_dir(args.out)  # before the work: a bad --out fails now, not after every photo
    book = PrepRecords(out)
    engine = get_engine(args.backend)
    failures, written = len(problems), 0
    for f in files:
        name = printable(f)
        try:
            prepared = prepare_image(load_image(f), opts, engine)
            stem = book.stem_for(f)
            new = []
            for p in prepared:
                output = f"{stem}_{p.meta['variant']}.png"
                save_png(p.image, out / output, {"identitylock": json.dumps(p.meta)})
                new.append({"file": str(f), "ok": True, "output": output, "stem": stem, **p.meta})
        # One line per bad photo: an IdentityLockError, or anything else a hostile file makes a library raise.
        except Exception as exc:
            failures += 1
            if isinstance(exc, IdentityLockError):
                text = str(exc)
            else:  # a library's message may span lines (OpenCV, dlib): one line, with its type
                text = " ".join(f"{type(exc).__name__}: {exc}".split())
            _warn(printable(text if str(f) in text else f"{f}: {text}"))
            book.replace(f, [{"file": str(f), "ok": False, "error": text}])
            continue
        book.replace(f, new)
        written += len(new)
        bg = prepared[0].meta["background"]
        if failed(bg):
            _warn(f"{name}: background removal failed, the background was kept: {bg}")
        print(
            f"{name}: {len(prepared)} image(s), background={bg}, face found by {prepared[0].meta['face_rescue']}"
        )
    try:
        book.save()
    except OSError as exc:  # the disk filled up or the folder went away during the run
        _warn(
            f"could not write {printable(book.path)} ({exc.strerror or exc}); the images are in {printable(out)}"
        )
        return EXIT_ERROR
    print(f"wrote {written} image(s) to {printable(out)}")
    return EXIT_BAD_INPUT if failures else EXIT_OK


MULTI_FACE_HINT = "crop it to one person or pass --largest-face"


def cmd_embed(args) -> int:
    from ..errors import IdentityLockError
    from ..faces import analyze, get_engine, select_face
    from ..fileio import check_output_file, printable
    from ..identity import reference_from_analyses
    from ..images import load_image

    out = Path(args.out)
    out = out if out.suffix == ".safetensors" else out.with_suffix(".safetensors")
    check_output_file(out, overwrite=args.overwrite, what="identity file")
    files = _files(args.images)
    if not files:
        _warn("no image files found in " + ", ".join(args.images))
        return EXIT_BAD_INPUT
    engine = get_engine(args.backend)
    analyses, names, failures = [], [], 0
    for f in files:
        try:
            res = analyze(load_image(f), engine, max_faces=1)
        except IdentityLockError as exc:
            failures += 1
            _warn(_name_in(exc, f))
            continue
        face, reason = select_face(res, largest=args.largest_face)
        if face is None:
            failures += 1
            hint = f"; {MULTI_FACE_HINT}" if res.face_count > 1 else ""
            _warn(f"{printable(f)}: {reason}{hint}")
            continue
        analyses.append(res)
        names.append(f.name)
    if not analyses:
        _warn("no usable face in any input; nothing written")
        return EXIT_BAD_INPUT
    ref = reference_from_analyses(analyses, names)
    path = ref.save(out)
    print(ref.summary())
    print(f"saved {printable(path)}")
    return EXIT_BAD_INPUT if failures else EXIT_OK


def _name_in(exc: Exception, f: Path) -> str:
    """An error message that names the file once (printable: a newline in a name cannot forge a line)."""
    from ..fileio import printable

    msg = str(exc)
    return printable(msg if str(f) in msg else f"{f}: {msg}")


def engine_for_reference(ref):
    """The engine that made a reference's vectors (so drift compares like with like)."""
    from ..faces import get_engine

    if ref.backend == "insightface":
        return get_engine("insightface", insightface_pack=ref.model)
    return get_engine(ref.backend)


def measure_drift(
    ref, files: list[Path], threshold: float | None = None, largest_face: bool = False
) -> list[dict]:
    """Rows of ``{"file","faces","face_found","drift","locked","rescue"}`` (+ "error" for unusable files,
    + "reason" when a photo has several faces and ``largest_face`` is off: then it is not locked)."""
    from ..errors import IdentityLockError
    from ..faces import analyze, select_face
    from ..identity import check_threshold
    from ..images import load_image

    engine = engine_for_reference(ref)
    limit = ref.lock_threshold if threshold is None else check_threshold(threshold)
    rows = []
    for f in files:
        row = {
            "file": str(f),
            "faces": 0,
            "face_found": False,
            "drift": None,
            "locked": False,
            "rescue": None,
        }
        try:
            res = analyze(load_image(f), engine, max_faces=1)
        except IdentityLockError as exc:
            row["error"] = _name_in(exc, f)
            rows.append(row)
            continue
        row.update(faces=res.face_count, face_found=res.found, rescue=res.rescue)
        face, reason = select_face(res, largest=largest_face)
        if face is not None:
            d = ref.drift_of(face.embedding, res.backend, res.model)
            row.update(drift=round(d, 5), locked=bool(d <= limit))
        elif res.found:
            row["reason"] = f"{reason}; {MULTI_FACE_HINT}"
        rows.append(row)
    return rows


def cmd_drift(args) -> int:
    from ..fileio import printable
    from ..identity import IdentityReference, check_threshold

    if args.threshold is not None:
        check_threshold(args.threshold, "--threshold")
    ref = IdentityReference.load(args.reference)
    files = _files(args.images)
    if not files:
        _warn("no image files found in " + ", ".join(args.images))
        return EXIT_BAD_INPUT
    rows = measure_drift(ref, files, args.threshold, args.largest_face)
    limit = ref.lock_threshold if args.threshold is None else args.threshold
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(
            f"reference: {printable(args.reference)} ({ref.backend}/{ref.model}, lock threshold {limit:.3f})"
        )
        print(f"{'drift':>8}  {'locked':6}  {'faces':>5}  {'found by':14}  file")
        for r in rows:
            name = printable(r["file"])
            if r.get("error"):
                print(f"{'-':>8}  {'-':6}  {'-':>5}  {'unreadable':14}  {name}")
            elif not r["face_found"]:
                print(f"{'MISS':>8}  {'no':6}  {0:>5}  {'-':14}  {name}")
            elif r["drift"] is None:
                print(f"{'MULTI':>8}  {'no':6}  {r['faces']:>5}  {r['rescue']:14}  {name}")
            else:
                locked = "yes" if r["locked"] else "no"
                print(f"{r['drift']:8.4f}  {locked:6}  {r['faces']:>5}  {r['rescue']:14}  {name}")
    for r in rows:
        if r.get("error"):
            _warn(r["error"])
        elif not r["face_found"]:
            _warn(f"{printable(r['file'])}: no face found (a miss, not a drift)")
        elif r.get("reason"):
            _warn(f"{printable(r['file'])}: {r['reason']}")
    return EXIT_BAD_INPUT if any(r["drift"] is None for r in rows) else EXIT_OK


def cmd_doctor(args) -> int:
    from ..doctor import check, format_report

    report = check(args.model_dir or None)
    print(json.dumps(report, indent=1, default=str) if args.json else format_report(report))
    return EXIT_OK
