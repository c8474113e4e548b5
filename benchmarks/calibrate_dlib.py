"""How the dlib lock threshold was chosen: pair drifts over the shared labelled photos.

    .venv/bin/python benchmarks/calibrate_dlib.py [FACES_DIR]

Single-face photos only; pairs cut from the same photograph (labels.csv notes: multi_3 -> obama_5, biden_2,
gates_1; multi_1 -> biden_3) are not independent and are left out.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from identitylock.core.calibration import equal_error_threshold, pair_drifts, ranking_auc, sweep
from identitylock.core.faces import analyze, get_engine
from identitylock.core.identity import default_threshold
from identitylock.core.images import load_image

SAME_PHOTOGRAPH = {
    "obama_5.jpg": "multi_3",
    "biden_2.jpg": "multi_3",
    "gates_1.jpg": "multi_3",
    "biden_3.jpg": "multi_1",
}


def main() -> int:
    faces = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
    )
    rows = [r for r in csv.DictReader(open(faces / "labels.csv")) if r["faces_expected"] == "1"]
    eng = get_engine("dlib")
    names, ids, vecs = [], [], []
    for r in rows:
        res = analyze(load_image(faces / r["file"]), eng)
        if not res.found:
            print(f"miss: {r['file']}")
            continue
        names.append(r["file"])
        ids.append(r["identity"])
        vecs.append(res.primary.embedding)
    pairs = pair_drifts(names, ids, vecs, [SAME_PHOTOGRAPH.get(n, n) for n in names])
    same = sorted((p for p in pairs if p.same), key=lambda p: p.drift)
    diff = sorted((p for p in pairs if not p.same), key=lambda p: p.drift)
    print(f"{len(names)} photos, {len(same)} same-person and {len(diff)} different-person independent pairs")
    print(f"ranking AUC: {ranking_auc(pairs):.4f}")
    print(
        f"same-person drift: median {np.median([p.drift for p in same]):.4f}, max {same[-1].drift:.4f} ({same[-1].a} / {same[-1].b})"
    )
    print(
        f"different-person drift: min {diff[0].drift:.4f} ({diff[0].a} / {diff[0].b}), median {np.median([p.drift for p in diff]):.4f}"
    )
    print(f"equal-error threshold: {equal_error_threshold(pairs):.4f}")
    print("\nthreshold  false-accepts  false-rejects")
    for row in sweep(pairs, [0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10]):
        mark = "  <- default" if abs(row["threshold"] - default_threshold("dlib")) < 1e-9 else ""
        print(
            f"  {row['threshold']:.2f}     {row['false_accepts']:3d}/{len(diff)}        {row['false_rejects']:3d}/{len(same)}{mark}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
