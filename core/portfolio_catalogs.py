"""The three JSON documents of a curation run and the placing of the curated images.

``build_catalogs`` turns records + a selection into the master catalog, the curated catalog and the selection
report (schemas in catalog.py); ``selection_log`` is the human-readable summary the CLI and node print.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .fileio import short_stem
from .quality import tiers_for_rank
from .records import ImageRecord
from .selection import Selection

R_IDENTITY = "identity_outlier"


def _place(src: Path, dst: Path, mode: str) -> str:
    """Link or copy one image; falls back to a copy when links are not possible (other drive, Windows)."""
    if mode == "symlink":
        try:
            os.symlink(os.path.abspath(src), dst)
            return "symlink"
        except OSError:
            pass
    if mode == "hardlink":
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:
            pass
    shutil.copy2(src, dst)
    return "copy"


def _status(i: int, rec: ImageRecord, sel: Selection, chosen: set[int], outliers: set[int]) -> str:
    if rec.error is not None:
        return "unreadable"
    if i in chosen:
        return "selected"
    if i in sel.duplicates:
        return "duplicate"
    if rec.passed and i not in outliers:
        return "passed"
    return "rejected"


def build_catalogs(
    records: Sequence[ImageRecord],
    sel: Selection,
    run_id: str,
    inputs: list[str],
    settings: dict[str, Any],
    out: Path | None,
    link_mode: str = "none",
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The three JSON documents (see catalog.py for their schemas); places curated images when ``out`` is set."""
    chosen = set(sel.selected)
    outliers = set(sel.identity_outliers)  # a list: testing membership in it per record was O(n * outliers)
    entries = []
    for i, r in enumerate(records):
        status = _status(i, r, sel, chosen, outliers)
        q = r.quality.to_dict() if r.quality is not None else None
        if q is not None and i in outliers:
            q["passed"], q["reason"] = False, R_IDENTITY
            q["reasons"] = [R_IDENTITY]
        e: dict[str, Any] = {
            "filename": r.filename,
            "path": r.path,
            "seed": r.seed,
            "seed_source": r.meta.get("seed_source"),
            "status": status,
            "cluster": sel.clusters.get(i),
            "rank": sel.ranks.get(i),
            "quality_score": None if r.quality is None else round(r.quality.total, 2),
            "training_tiers": tiers_for_rank(sel.ranks[i]) if i in sel.ranks else [],
            "identity_drift": None if i not in sel.drift else round(sel.drift[i], 4),
            "pose": r.pose,
            "quality": q,
        }
        if isinstance(r.meta.get("prompt"), str):
            e["prompt"] = r.meta["prompt"]
        if r.error is not None:
            e["error"] = r.error
        if i in sel.duplicates:
            e["duplicate_of"] = records[sel.duplicates[i]].filename
        entries.append(e)
    counts = {
        "total": len(records),
        "unreadable": sum(1 for r in records if r.error is not None),
        "rejected": sum(1 for e in entries if e["status"] == "rejected"),
        "passed": len(sel.ranks),
        "duplicates": len(sel.duplicates),
        "selected": len(sel.selected),
    }
    master = {
        "schema": "identitylock.master_image_catalog/1",
        "session_info": {
            "run_id": run_id,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "input": inputs,
            "identitylock_version": __version__,
        },
        "settings": settings,
        "counts": counts,
        "catalog": entries,
    }
    curated_entries = []
    used_names: set[str] = set()
    images_dir = None if out is None else out / "curated" / "images"
    if images_dir is not None:
        images_dir.mkdir(parents=True, exist_ok=True)
    placed = Counter()
    for i in sel.selected:
        r = records[i]
        stem, ext = os.path.splitext(r.filename)
        stem = short_stem(stem)  # a legal 249-byte input name plus "_2" would exceed 255 bytes
        name = stem + ext
        n = 2
        while name.lower() in used_names:  # same name from different sub-folders
            name = f"{stem}_{n}{ext}"
            n += 1
        used_names.add(name.lower())
        if images_dir is not None and link_mode != "none":
            placed[_place(Path(r.path), images_dir / name, link_mode)] += 1
        ce = {
            "filename": name,
            "source": r.path,
            "image": f"images/{name}",
            "seed": r.seed,
            "cluster": sel.clusters[i],
            "rank": sel.ranks[i],
            "quality_score": round(r.quality.total, 2),
            "training_tiers": tiers_for_rank(sel.ranks[i]),
        }
        if isinstance(r.meta.get("prompt"), str):
            ce["prompt"] = r.meta["prompt"]
        curated_entries.append(ce)
    from .quality import TIERS

    curated = {
        "schema": "identitylock.curated_catalog/1",
        "run_id": run_id,
        "strategy": settings["strategy"],
        "target": settings["target"],
        "k": sel.k,
        "embedding": settings["embedding"],
        "link_mode": link_mode,
        "tiers": {
            f"tier_{t}": sum(1 for e in curated_entries if f"tier_{t}" in e["training_tiers"]) for t in TIERS
        },
        "catalog": curated_entries,
    }
    rejections = Counter()
    for e in entries:
        if e["status"] == "rejected" and e["quality"]:
            rejections[e["quality"]["reason"]] += 1
    cluster_rows = []
    members_of: dict[int, list[int]] = {}
    picked_of: dict[int, list[int]] = {}
    for i, cc in sel.clusters.items():
        members_of.setdefault(cc, []).append(i)
    for i in sel.selected:
        picked_of.setdefault(sel.clusters.get(i), []).append(i)
    for c in range(sel.k):  # one pass above instead of a scan of every record per cluster
        members, picked = members_of.get(c, []), picked_of.get(c, [])
        cluster_rows.append(
            {
                "cluster": c,
                "size": len(members),
                "selected": len(picked),
                "best_score": round(max((records[i].quality.total for i in members), default=0.0), 2),
                "seeds": len({records[i].seed for i in picked}),
            }
        )
    seeds_all = Counter(records[i].seed for i in sel.ranks if records[i].seed is not None)
    seeds_sel = Counter(records[i].seed for i in sel.selected if records[i].seed is not None)
    scores = [records[i].quality.total for i in sel.ranks]
    report = {
        "schema": "identitylock.selection_report/1",
        "run_id": run_id,
        "settings": {k2: v for k2, v in settings.items() if k2 != "quality"},
        "quality_thresholds": settings["quality"]["thresholds"],
        "counts": counts,
        "rejections": dict(rejections),
        "unreadable": [{"path": r.path, "error": r.error} for r in records if r.error is not None],
        "duplicates": [
            {"path": records[a].path, "duplicate_of": records[b].path}
            for a, b in sorted(sel.duplicates.items())
        ],
        "identity_outliers": [records[i].path for i in sel.identity_outliers],
        "clusters": cluster_rows,
        "k": sel.k,
        "silhouette": None if sel.silhouette is None else round(sel.silhouette, 4),
        "seeds": {
            "with_seed": sum(1 for r in records if r.seed is not None),
            "distinct_passing": len(seeds_all),
            "distinct_selected": len(seeds_sel),
            "max_selected_per_seed": max(seeds_sel.values(), default=0),
            "selected_without_seed": sum(1 for i in sel.selected if records[i].seed is None),
        },
        "score_distribution": {
            "passing_min": round(min(scores), 2) if scores else None,
            "passing_median": round(float(np.median(scores)), 2) if scores else None,
            "passing_max": round(max(scores), 2) if scores else None,
        },
        "placed": dict(placed),
        "warnings": list(sel.notes),
        "timings": {},
    }
    return master, curated, report


def selection_log(report: dict[str, Any]) -> str:
    """Human-readable summary of a selection report (also what the CLI and node print)."""
    c = report["counts"]
    s = report["settings"]
    lines = [
        f"IdentityLock curation run {report['run_id']}",
        f"strategy {s['strategy']}, target {s['target']}, k {report['k']} (requested {s['k']}), embedding {s['embedding']}",
        f"quality thresholds: {report['quality_thresholds']}",
        "",
        f"images found      {c['total']}",
        f"unreadable        {c['unreadable']}",
        f"rejected          {c['rejected']}  "
        + ", ".join(f"{k}: {v}" for k, v in sorted(report["rejections"].items())),
        f"passed (unique)   {c['passed']}",
        f"near-duplicates   {c['duplicates']}",
        f"selected          {c['selected']}",
        f"seeds: {report['seeds']['distinct_selected']} distinct among selected "
        f"(max {report['seeds']['max_selected_per_seed']} per seed), {report['seeds']['distinct_passing']} among passing",
        "",
        "cluster  size  selected  best  seeds",
    ]
    for row in report["clusters"]:
        lines.append(
            f"{row['cluster']:>7}  {row['size']:>4}  {row['selected']:>8}  {row['best_score']:>4.0f}  {row['seeds']:>5}"
        )
    if report["unreadable"]:
        lines += ["", "unreadable files:"] + [f"  {u['path']}: {u['error']}" for u in report["unreadable"]]
    if report["warnings"]:
        lines += ["", "notes:"] + [f"  {w}" for w in report["warnings"]]
    if report.get("timings"):
        lines += ["", "timings: " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings"].items())]
    return "\n".join(lines) + "\n"
