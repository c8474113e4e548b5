"""CLI command ``calibrate``: a lock threshold measured on the user's own labelled photos, for any backend."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from . import EXIT_BAD_INPUT, EXIT_OK

BACKENDS = ("auto", "dlib", "insightface", "arcface-onnx")


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure same/different-person drift on labelled photos: ROC AUC, EER, threshold at a FAR",
    )
    p.add_argument("folder", help="folder of photos, one face each; the person is the file-name prefix")
    p.add_argument(
        "--labels",
        help="CSV with columns file,identity (optional: source = the photograph a crop was cut from; "
        "faces_expected other than 1 skips the row) instead of file-name prefixes",
    )
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--model-dir", action="append", default=[], help="extra insightface model folder")
    p.add_argument("--far", type=float, default=0.001, help="false-accept rate for the threshold (0.001)")
    p.add_argument("--save", action="store_true", help="store the threshold as this backend/model's default")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_calibrate)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _read_labels(path: Path) -> dict[str, tuple[str, str]]:
    """file name -> (identity, source photograph) from a labels CSV."""
    from ..errors import IdentityLockError

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # spreadsheets write a BOM
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise IdentityLockError(f"{path}: labels file unreadable ({exc})") from None
    if not rows or not {"file", "identity"} <= set(rows[0]):
        raise IdentityLockError(f"{path}: a labels CSV needs the columns file and identity")
    out = {}
    for r in rows:
        if (r.get("faces_expected") or "1").strip() != "1" or not (r.get("identity") or "").strip():
            continue
        name = (r["file"] or "").strip()
        out[name] = (r["identity"].strip(), (r.get("source") or "").strip() or name)
    return out


def cmd_calibrate(args) -> int:
    from ..calibration import calibrate, format_calibration, identity_from_name
    from ..errors import IdentityLockError
    from ..faces import analyze_many, select_face
    from ..fileio import printable
    from ..identity import check_threshold, save_threshold, user_thresholds_path

    folder = Path(args.folder)
    if not folder.is_dir():
        raise IdentityLockError(f"{printable(folder)} is not a folder of photos")
    from ..images import iter_image_files

    problems: list[str] = []
    files = [f for f in iter_image_files([folder], recursive=False, problems=problems)]
    if args.labels:
        labels = _read_labels(Path(args.labels))
        missing = sorted(set(labels) - {f.name for f in files})
        problems += [f"{printable(folder / m)}: listed in the labels but not found" for m in missing]
        files = [f for f in files if f.name in labels]
    else:
        labels = {f.name: (identity_from_name(f.name), f.name) for f in files}
    if len(files) < 3:
        raise IdentityLockError(f"{printable(folder)}: calibration needs labelled photos of several people")
    engine_kwargs = {"backend": args.backend, "model_dirs": args.model_dir}
    results = analyze_many(files, workers=1, engine_kwargs=engine_kwargs)
    names, ids, sources, vectors, backend, model = [], [], [], [], None, None
    for f, (res, err) in zip(files, results):
        face, why = (None, err) if res is None else select_face(res)
        if face is None or face.embedding is None:
            problems.append(f"{printable(f)}: {why or 'no identity vector'}; left out")
            continue
        backend, model = res.backend, res.model
        names.append(f.name)
        ids.append(labels[f.name][0])
        sources.append(labels[f.name][1])
        vectors.append(face.embedding)
    for msg in problems:
        _warn(msg)
    result = calibrate(
        ids,
        vectors,
        backend=backend or "",
        model=model or "",
        far=args.far,
        names=names,
        source_photo=sources,
    )
    saved = None
    if args.save:
        if result.threshold is None:
            raise IdentityLockError("nothing to save: no threshold reaches that false-accept rate")
        check_threshold(result.threshold, "calibrated threshold")
        details = {
            "far": args.far,
            "roc_auc": round(result.auc, 4),
            "photos": result.photos,
            "identities": result.identities,
            "folder": str(folder.resolve()),
        }
        saved = save_threshold(result.backend, result.model, result.threshold, details)
    if args.json:
        print(
            json.dumps(
                {**result.to_dict(), "saved_to": str(saved) if saved else None, "left_out": problems},
                indent=1,
            )
        )
    else:
        print(format_calibration(result))  # numbers and the engine's names only: nothing from file names
        if saved:
            print(
                f"saved: lock threshold {result.threshold:.4f} for {result.backend}/{result.model} in {saved}"
            )
        else:
            print(
                f"(not saved; --save stores it as the default for {result.backend}/{result.model} in "
                f"{user_thresholds_path()})"
            )
    return EXIT_BAD_INPUT if problems else EXIT_OK
