"""Per-image rows and per-group statistics of identity consistency.

Similarity is the cosine between an image's primary-face vector and the normalised centroid of the reference
set; a reference image is scored against the centroid of the *other* references (leave-one-out), so it does
not flatter itself and outliers in the dataset show up. Groups get bootstrap confidence intervals and every
pair of groups a significance test (:mod:`.stats`); the value types are in :mod:`.results`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendMismatchError, IdentityLockError
from ..identity import IdentityReference, normalize
from .copycat import band_of, bands_for, black_hole_ranking, nearest_references
from .results import REFERENCE_GROUP, AnalyzedImage, GroupStats, ImageRow, MetricsResult
from .stats import ALPHA, MIN_RELIABLE, N_BOOT, bootstrap_ci, compare_groups, wilson_ci

# Similarity spread below which a group that also sits in the danger band is "frozen" (overtraining).
OVERTRAIN_STD = {"dlib": 0.004, "insightface": 0.02}


# -- face analysis ----------------------------------------------------------------------------------------
def analyze_items(
    items: Sequence[str | os.PathLike | np.ndarray],
    names: Sequence[str] | None = None,
    *,
    backend: str = "dlib",
    engine_kwargs: dict[str, Any] | None = None,
    workers: int | None = 1,
    progress: Callable[[int, int], None] | None = None,
    keep_pixels: bool = False,
) -> list[AnalyzedImage]:
    """Run the face engine on files or arrays (in order); unreadable files become error rows, not exceptions."""
    from ..faces import analyze_many, get_engine

    kwargs = {"backend": backend, **(engine_kwargs or {})}
    # Build the engine here first: a missing model file is one clear error (ModelNotFoundError), not a pool of
    # worker processes that die one after another.
    get_engine(**kwargs)
    results = analyze_many(list(items), workers=workers, engine_kwargs=kwargs, progress=progress)
    out = []
    for i, (item, (res, err)) in enumerate(zip(items, results)):
        is_path = isinstance(item, (str, os.PathLike))
        name = names[i] if names else (Path(item).name if is_path else f"#{i}")
        out.append(
            AnalyzedImage(
                name=name,
                analysis=res,
                error=err,
                path=str(item) if is_path else None,
                image=None if is_path or not keep_pixels else item,
            )
        )
    return out


# -- rows -----------------------------------------------------------------------------------------------------
def _face_shape(face) -> float | None:
    kp = face.keypoints or {}
    if not all(k in kp for k in ("eye_fl", "eye_fr", "nose")):
        return None
    el, er, n = (np.asarray(kp[k], dtype=np.float64) for k in ("eye_fl", "eye_fr", "nose"))
    mid = (el + er) / 2
    down = float(np.linalg.norm(n - mid))
    return float(np.linalg.norm(er - el) / down) if down > 1e-6 else None


def _row_from(item: AnalyzedImage, index: int, group: str, kind: str) -> ImageRow:
    row = ImageRow(index=index, group=group, kind=kind, name=item.name, status="error", path=item.path)
    row.pixels = item.image
    res = item.analysis
    if res is None:
        row.error = item.error or "could not be analyzed"
        return row
    row.image_width, row.image_height = (int(x) for x in res.image_size)
    row.n_faces = len(res.faces)
    if not res.found:
        row.status = "failed"
        row.error = "no face found (rescue ladder tried: " + ", ".join(res.tried) + ")"
        return row
    f = res.primary
    row.status = "ok" if res.rescue in (None, "direct") else "rescued"
    row.rescue = res.rescue
    row.det_score = float(f.det_score)
    w, h = f.width, f.height
    row.bbox = tuple(float(x) for x in f.bbox)
    row.face_aspect = float(h / w) if w > 0 else None
    row.face_shape = _face_shape(f)
    iw, ih = res.image_size
    row.face_fraction = float(w / iw) if iw else None
    row.face_area_fraction = float(f.area / (iw * ih)) if iw and ih else None
    if f.pose is not None:
        row.yaw, row.pitch, row.roll = float(f.pose.yaw), float(f.pose.pitch), float(f.pose.roll)
        row.pose_confidence = float(f.pose.confidence)
    row.age = None if f.age is None else float(f.age)
    if f.embedding is None:
        row.status = "failed"
        row.error = "face found but no identity vector"
        return row
    row.embedding = np.asarray(f.embedding, dtype=np.float32)
    return row


def _check_backend(items: Sequence[AnalyzedImage], backend: str, model: str, dim: int) -> None:
    for it in items:
        res = it.analysis
        if res is None or not res.found or res.primary.embedding is None:
            continue
        if (res.backend, res.model, len(res.primary.embedding)) != (backend, model, dim):
            raise BackendMismatchError(
                f"{it.name} was analyzed with {res.backend}/{res.model} but the reference with "
                f"{backend}/{model}; analyze every image with the same face backend"
            )


def _std(v: list[float]) -> float | None:
    return float(np.std(v, ddof=1)) if len(v) >= 2 else None


def _var(v: list[float]) -> float | None:
    return float(np.var(v, ddof=1)) if len(v) >= 2 else None


def _group_stats(
    name: str, kind: str, rows: list[ImageRow], backend: str, seed: int, n_boot: int, alpha: float
) -> GroupStats:
    faces = [r for r in rows if r.similarity is not None]
    sims = np.array([r.similarity for r in faces], dtype=np.float64)
    # A found face without a similarity: a lone reference photo (leave-one-out needs another reference).
    found = sum(r.embedding is not None for r in rows)
    g = GroupStats(
        name=name,
        kind=kind,
        n=len(rows),
        n_face=found,
        n_failed=sum(r.status == "failed" for r in rows),
        n_rescued=sum(r.status == "rescued" for r in rows),
        n_errors=sum(r.status == "error" for r in rows),
        detection_rate=found / len(rows) if rows else 0.0,
    )
    g.band_counts = {b: sum(r.band == b for r in rows) for b in ("low", "ok", "watch", "danger", "failed")}
    if not len(sims):
        if found:
            g.warnings.append(
                f"{name}: {found} face(s) found, but leave-one-out similarity needs at least 2 reference faces; "
                "add photos to measure the reference set's own consistency"
            )
        else:
            g.warnings.append(f"{name}: no face found in any image")
        return g
    g.median = float(np.median(sims))
    g.median_ci = bootstrap_ci(sims, np.median, n_boot, alpha, seed)
    g.mean = float(np.mean(sims))
    g.mean_ci = bootstrap_ci(sims, np.mean, n_boot, alpha, seed)
    g.std = float(np.std(sims, ddof=1)) if len(sims) >= 2 else 0.0
    q1, q3 = np.quantile(sims, [0.25, 0.75])
    g.iqr = float(q3 - q1)
    g.min, g.max = float(sims.min()), float(sims.max())
    locked = sum(bool(r.locked) for r in faces)
    g.lock_rate = locked / len(faces)
    g.lock_rate_ci = wilson_ci(locked, len(faces), alpha)
    yaws = [r.yaw for r in faces if r.yaw is not None]
    pitches = [r.pitch for r in faces if r.pitch is not None]
    g.yaw_std, g.pitch_std = _std(yaws), _std(pitches)
    g.abs_yaw_max = float(max(abs(y) for y in yaws)) if yaws else None
    g.face_aspect_var = _var([r.face_aspect for r in faces if r.face_aspect is not None])
    g.face_shape_var = _var([r.face_shape for r in faces if r.face_shape is not None])
    g.face_fraction_std = _std([r.face_fraction for r in faces if r.face_fraction is not None])
    ages = [r.age for r in faces if r.age is not None]
    g.age_median = float(np.median(ages)) if ages else None
    g.det_score_median = float(np.median([r.det_score for r in faces]))
    single = [r.single_ref_sim for r in faces if r.single_ref_sim is not None]
    g.single_ref_mean = float(np.mean(single)) if single else None
    if g.detection_rate < 0.8:
        g.warnings.append(
            f"{name}: faces found in only {100 * g.detection_rate:.0f}% of the images ({g.n_failed} failed, "
            f"{g.n_errors} unreadable); failures are excluded from the similarity statistics"
        )
    if kind == "candidate":
        danger = bands_for(backend)[2]
        frozen_sim = g.std is not None and g.std <= OVERTRAIN_STD.get(backend, 0.02)
        frozen_geo = (g.face_fraction_std is not None and g.face_fraction_std < 0.01) and (
            g.yaw_std is not None and g.yaw_std < 3.0
        )
        if g.median >= danger and len(faces) >= 3 and (frozen_sim or frozen_geo):
            g.overtraining = True
            g.warnings.append(
                f"{name}: possible overtraining - median similarity {g.median:.3f} is in the danger band "
                f"(> {danger}) with near-zero variance (sd {g.std:.4f}, face-size sd "
                f"{g.face_fraction_std or 0:.3f}, yaw sd {g.yaw_std or 0:.1f} deg): the model may be copying "
                "its training photos instead of learning the face"
            )
        if len(faces) < MIN_RELIABLE:
            g.warnings.append(f"{name}: only {len(faces)} face(s); statistics are weak")
    return g


def build_metrics(
    reference: Sequence[AnalyzedImage] | IdentityReference,
    groups: dict[str, Sequence[AnalyzedImage]],
    *,
    threshold: float | None = None,
    n_boot: int = N_BOOT,
    alpha: float = ALPHA,
    seed: int = 0,
    tsne: bool = True,
) -> MetricsResult:
    """Rows, group statistics, comparisons, copycat pairing and black holes for a reference + candidate groups.

    ``reference`` is either analyzed reference images (rows, leave-one-out, thumbnails) or an
    :class:`IdentityReference` (vectors only: references appear by their source names).
    """
    if REFERENCE_GROUP in groups:
        raise IdentityLockError(f"'{REFERENCE_GROUP}' is reserved for the reference set; rename that group")
    rows: list[ImageRow] = []
    if isinstance(reference, IdentityReference):
        ref = reference
        ref_rows: list[ImageRow] = []
    else:
        ref_rows = [_row_from(it, i, REFERENCE_GROUP, "reference") for i, it in enumerate(reference)]
        found = [r for r in ref_rows if r.embedding is not None]
        if not found:
            raise IdentityLockError(
                "no face was found in any reference image; use clear photos of the person's face"
            )
        first = next(it.analysis for it in reference if it.analysis is not None and it.analysis.found)
        ref = IdentityReference(
            np.stack([r.embedding for r in found]), first.backend, first.model, [r.name for r in found]
        )
        _check_backend(reference, ref.backend, ref.model, ref.dim)
    if threshold is not None:
        ref.threshold = threshold
    backend, lock = ref.backend, ref.lock_threshold
    centroid = ref.centroid.astype(np.float64)

    # reference rows: leave-one-out similarity and nearest *other* reference
    if ref_rows:
        found = [r for r in ref_rows if r.embedding is not None]
        loo = ref.leave_one_out()
        outl = ref.outliers()
        nidx, nsim = nearest_references(ref.vectors, ref.vectors, exclude_self=True)
        for k, r in enumerate(found):
            if np.isfinite(loo[k]):
                r.similarity = float(loo[k])
                r.drift = 1.0 - r.similarity
                r.locked = r.drift <= lock
                r.outlier = bool(outl[k])
            if len(found) > 1:  # mean cosine to each *other* reference photo
                others = np.delete(ref.vectors.astype(np.float64), k, axis=0)
                r.single_ref_sim = float(np.mean(others @ ref.vectors[k].astype(np.float64)))
            if nidx[k] >= 0:
                r.nearest_ref, r.nearest_sim = ref.sources[nidx[k]], float(nsim[k])
            r.band = band_of(r.nearest_sim, backend) if r.nearest_sim is not None else "ok"
        rows.extend(ref_rows)

    cand_rows: list[ImageRow] = []
    for label, items in groups.items():
        _check_backend(items, ref.backend, ref.model, ref.dim)
        for it in items:
            cand_rows.append(_row_from(it, len(rows) + len(cand_rows), str(label), "candidate"))
    with_vec = [r for r in cand_rows if r.embedding is not None]
    if with_vec:
        v = normalize(np.stack([r.embedding for r in with_vec]))
        sims = v @ centroid
        single = (v @ ref.vectors.astype(np.float64).T).mean(axis=1)  # mean cosine to each reference photo
        nidx, nsim = nearest_references(v, ref.vectors)
        for k, r in enumerate(with_vec):
            r.similarity = float(sims[k])
            r.single_ref_sim = float(single[k])
            r.drift = 1.0 - r.similarity
            r.locked = r.drift <= lock
            r.nearest_ref, r.nearest_sim = ref.sources[nidx[k]], float(nsim[k])
            r.band = band_of(r.nearest_sim, backend)
    rows.extend(cand_rows)

    if tsne:
        from .tsne import identity_map, map_sample

        vec_rows = [r for r in rows if r.embedding is not None]
        if vec_rows:
            drawn = [vec_rows[i] for i in map_sample([r.kind for r in vec_rows], seed=seed)]
            xy = identity_map(np.stack([r.embedding for r in drawn]), seed=seed)
            for r, (x, y) in zip(drawn, xy):
                r.tsne_x, r.tsne_y = float(x), float(y)

    stats: dict[str, GroupStats] = {}
    order = ([REFERENCE_GROUP] if ref_rows else []) + [str(k) for k in groups]
    for name in order:
        grows = [r for r in rows if r.group == name]
        kind = "reference" if name == REFERENCE_GROUP else "candidate"
        stats[name] = _group_stats(name, kind, grows, backend, seed, n_boot, alpha)
    ref_stats = stats.get(REFERENCE_GROUP)
    if ref_stats and (ref_stats.yaw_std is not None or ref_stats.pitch_std is not None):
        base = (ref_stats.yaw_std or 0.0) + (ref_stats.pitch_std or 0.0)
        for g in stats.values():
            if g.kind == "candidate" and g.yaw_std is not None and g.pitch_std is not None and base > 0:
                g.flexibility_vs_reference = (g.yaw_std + g.pitch_std) / base

    # Which LoRA is better: candidate groups against each other; a single candidate group against the
    # reference set's own (leave-one-out) consistency.
    cand_names = [str(k) for k in groups]
    tested = cand_names if len(cand_names) >= 2 else order
    named = {
        n: np.array([r.similarity for r in rows if r.group == n and r.similarity is not None]) for n in tested
    }
    comparisons = compare_groups(named, alpha, n_boot, seed)

    cands = [r for r in rows if r.kind == "candidate"]
    holes = black_hole_ranking(
        ref.sources, [r.nearest_ref for r in cands], [r.nearest_sim for r in cands], [r.group for r in cands]
    )
    warnings: list[str] = []
    outliers = [r.name for r in ref_rows if r.outlier]
    if outliers:
        warnings.append(
            "reference outlier(s) by leave-one-out (drift above the lock threshold "
            f"{lock:.2f}): {', '.join(outliers)} - probably another person or a bad photo; consider removing"
        )
    failed_refs = [r.name for r in ref_rows if r.embedding is None]
    if failed_refs:
        warnings.append(f"no face in reference image(s): {', '.join(failed_refs)}")
    for g in stats.values():
        warnings.extend(g.warnings)
    # dlib's HOG/MMOD boxes are square, so their aspect ratio says nothing: use the landmark ratio instead.
    face_ratio_metric = "face_shape" if backend == "dlib" else "face_aspect"
    return MetricsResult(
        backend=backend,
        model=ref.model,
        lock_threshold=lock,
        bands=bands_for(backend),
        rows=rows,
        groups=stats,
        comparisons=comparisons,
        reference=ref,
        black_holes=holes,
        warnings=warnings,
        face_ratio_metric=face_ratio_metric,
        alpha=alpha,
        n_boot=n_boot,
    )
