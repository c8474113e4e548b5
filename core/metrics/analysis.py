"""Per-image rows and per-group statistics of identity consistency.

Similarity is the cosine between an image's primary-face vector and the normalised centroid of the reference
set; a reference image is scored against the centroid of the *other* references (leave-one-out), so it does
not flatter itself and outliers in the dataset show up. Groups get bootstrap confidence intervals, and every
pair of groups a two-sided Mann-Whitney U test (Holm-corrected) with Cliff's delta as the effect size, so
"LoRA A is better than LoRA B" is a claim with a p-value instead of a feeling.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendMismatchError, IdentityLockError
from ..identity import IdentityReference, default_threshold, normalize
from .copycat import band_of, bands_for, black_hole_ranking, nearest_references

REFERENCE_GROUP = "reference"
N_BOOT = 2000
ALPHA = 0.05
# Similarity spread below which a group that also sits in the danger band is "frozen" (overtraining).
OVERTRAIN_STD = {"dlib": 0.004, "insightface": 0.02}
# Fewer faces than this in a group: the comparison is reported but flagged as unreliable.
MIN_RELIABLE = 5


@dataclass
class AnalysedImage:
    """One input image after face analysis (``analysis`` None + ``error`` when it could not be read)."""

    name: str
    analysis: Any  # faces.FaceAnalysis | None
    error: str | None = None
    path: str | None = None  # for thumbnails in reports
    image: np.ndarray | None = None  # pixels (nodes pass batches, not files)


@dataclass
class ImageRow:
    """Everything measured on one image; failed detections are rows too (status 'failed' / 'error')."""

    index: int
    group: str
    kind: str  # "reference" | "candidate"
    name: str
    status: str  # "ok" | "rescued" | "failed" | "error"
    rescue: str | None = None
    error: str | None = None
    n_faces: int = 0
    image_width: int | None = None
    image_height: int | None = None
    det_score: float | None = None
    face_aspect: float | None = None  # bbox height / width
    face_shape: float | None = None  # inter-ocular distance / eye-midpoint-to-nose distance (landmarks)
    face_fraction: float | None = None  # face width / image width
    face_area_fraction: float | None = None
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    pose_confidence: float | None = None
    age: float | None = None
    similarity: float | None = None  # to the reference centroid (leave-one-out for references)
    drift: float | None = None
    locked: bool | None = None
    outlier: bool | None = None  # references only: leave-one-out drift above the lock threshold
    nearest_ref: str | None = None
    nearest_sim: float | None = None
    band: str = "failed"
    tsne_x: float | None = None
    tsne_y: float | None = None
    path: str | None = None
    bbox: tuple[float, float, float, float] | None = None  # primary face, image pixels
    embedding: np.ndarray | None = field(default=None, repr=False)
    pixels: np.ndarray | None = field(default=None, repr=False)  # array inputs (nodes), for thumbnails

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in CSV_FIELDS}
        if d["bbox"] is not None:
            d["bbox"] = [round(float(x), 1) for x in d["bbox"]]
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = None if not math.isfinite(v) else round(v, 5)
        return d


CSV_FIELDS = [f for f in ImageRow.__dataclass_fields__ if f not in ("embedding", "pixels")]


@dataclass
class GroupStats:
    name: str
    kind: str
    n: int
    n_face: int
    n_failed: int
    n_rescued: int
    n_errors: int
    detection_rate: float
    median: float | None = None
    median_ci: tuple[float, float] | None = None
    mean: float | None = None
    mean_ci: tuple[float, float] | None = None
    std: float | None = None
    iqr: float | None = None
    min: float | None = None
    max: float | None = None
    lock_rate: float | None = None
    lock_rate_ci: tuple[float, float] | None = None
    yaw_std: float | None = None
    pitch_std: float | None = None
    abs_yaw_max: float | None = None
    face_aspect_var: float | None = None
    face_shape_var: float | None = None
    face_fraction_std: float | None = None
    flexibility_vs_reference: float | None = None  # (yaw_std + pitch_std) relative to the reference set's
    age_median: float | None = None
    det_score_median: float | None = None
    band_counts: dict[str, int] = field(default_factory=dict)
    overtraining: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in list(d.items()):
            if isinstance(v, float):
                d[k] = None if not math.isfinite(v) else round(v, 5)
            elif isinstance(v, tuple):
                d[k] = [round(float(x), 5) for x in v]
        return d


@dataclass
class Comparison:
    """Two-sided Mann-Whitney U on the similarity of two groups."""

    a: str
    b: str
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    median_diff: float  # a - b
    median_diff_ci: tuple[float, float] | None
    u: float
    p_value: float
    p_holm: float
    cliffs_delta: float  # P(a > b) - P(a < b), -1..1
    effect: str  # negligible / small / medium / large (Romano et al. thresholds)
    significant: bool
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in list(d.items()):
            if isinstance(v, float):
                d[k] = round(v, 6)
            elif isinstance(v, tuple):
                d[k] = [round(float(x), 5) for x in v]
        return d


@dataclass
class MetricsResult:
    backend: str
    model: str
    lock_threshold: float
    bands: tuple[float, float, float]
    rows: list[ImageRow]
    groups: dict[str, GroupStats]
    comparisons: list[Comparison]
    reference: IdentityReference
    black_holes: list
    warnings: list[str]
    face_ratio_metric: str  # which column the "face ratio" panel uses
    alpha: float = ALPHA
    n_boot: int = N_BOOT

    @property
    def group_names(self) -> list[str]:
        return list(self.groups)

    def summary_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "lock_threshold_drift": self.lock_threshold,
            "bands": {"low_below": self.bands[0], "ok_below": self.bands[1], "danger_above": self.bands[2]},
            "similarity": "cosine to the normalised reference centroid (leave-one-out for references)",
            "confidence_intervals": f"percentile bootstrap, {self.n_boot} resamples, {100 * (1 - self.alpha):.0f}%"
            " (Wilson for rates)",
            "test": "two-sided Mann-Whitney U, Holm-corrected; effect size Cliff's delta",
            "face_ratio_metric": self.face_ratio_metric,
            "counts": {
                "images": len(self.rows),
                "faces": sum(r.status in ("ok", "rescued") for r in self.rows),
                "failed": sum(r.status == "failed" for r in self.rows),
                "errors": sum(r.status == "error" for r in self.rows),
            },
            "groups": {k: g.to_dict() for k, g in self.groups.items()},
            "comparisons": [c.to_dict() for c in self.comparisons],
            "reference_outliers": [r.name for r in self.rows if r.outlier],
            "black_hole_ranking": [b.to_dict() for b in self.black_holes],
            "warnings": list(self.warnings),
        }

    def summary_text(self) -> str:
        """Plain-text summary for the node's STRING output and the CLI."""
        lines = [
            f"IdentityMetrics ({self.backend}/{self.model}; similarity = cosine to the reference centroid, "
            f"lock at drift <= {self.lock_threshold:.2f})"
        ]
        for g in self.groups.values():
            if g.median is None:
                lines.append(f"  {g.name}: {g.n} image(s), no face found")
                continue
            ci = f" [{g.median_ci[0]:.3f}, {g.median_ci[1]:.3f}]" if g.median_ci else ""
            lr = f"{100 * g.lock_rate:.0f}%" if g.lock_rate is not None else "n/a"
            lines.append(
                f"  {g.name}: n={g.n} faces={g.n_face} failed={g.n_failed}  median {g.median:.3f}{ci}  "
                f"sd {g.std:.3f}  locked {lr}  yaw sd {g.yaw_std or 0:.1f} deg"
            )
        for c in self.comparisons:
            lines.append("  " + c.verdict)
        if self.black_holes and self.black_holes[0].count:
            b = self.black_holes[0]
            lines.append(f"  top black hole: {b.reference} ({b.count} generation(s), {100 * b.share:.0f}%)")
        for w in self.warnings:
            lines.append("  WARNING: " + w)
        return "\n".join(lines)


# -- face analysis ----------------------------------------------------------------------------------------
def analyse_items(
    items: Sequence[str | os.PathLike | np.ndarray],
    names: Sequence[str] | None = None,
    *,
    backend: str = "dlib",
    engine_kwargs: dict[str, Any] | None = None,
    workers: int | None = 1,
    progress: Callable[[int, int], None] | None = None,
    keep_pixels: bool = False,
) -> list[AnalysedImage]:
    """Run the face engine on files or arrays (in order); unreadable files become error rows, not exceptions."""
    from ..faces import analyze_many

    kwargs = {"backend": backend, **(engine_kwargs or {})}
    results = analyze_many(list(items), workers=workers, engine_kwargs=kwargs, progress=progress)
    out = []
    for i, (item, (res, err)) in enumerate(zip(items, results)):
        is_path = isinstance(item, (str, os.PathLike))
        name = names[i] if names else (Path(item).name if is_path else f"#{i}")
        out.append(
            AnalysedImage(
                name=name,
                analysis=res,
                error=err,
                path=str(item) if is_path else None,
                image=None if is_path or not keep_pixels else item,
            )
        )
    return out


# -- statistics ---------------------------------------------------------------------------------------------
def bootstrap_ci(
    values: np.ndarray, stat: Callable = np.median, n_boot: int = N_BOOT, alpha: float = ALPHA, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``stat``; None for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    boots = stat(v[idx], axis=1)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_diff_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, alpha: float = ALPHA, seed: int = 0
) -> tuple[float, float] | None:
    """Bootstrap interval of median(a) - median(b), resampling each group independently."""
    if len(a) < 2 or len(b) < 2:
        return None
    rng = np.random.default_rng(seed)
    ma = np.median(a[rng.integers(0, len(a), size=(n_boot, len(a)))], axis=1)
    mb = np.median(b[rng.integers(0, len(b), size=(n_boot, len(b)))], axis=1)
    lo, hi = np.quantile(ma - mb, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def wilson_ci(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (well-behaved at 0 % and 100 %, unlike the bootstrap)."""
    if n == 0:
        return None
    from scipy.stats import norm

    z = float(norm.ppf(1 - alpha / 2))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def cliffs_delta_label(d: float) -> str:
    a = abs(d)
    return "negligible" if a < 0.147 else "small" if a < 0.33 else "medium" if a < 0.474 else "large"


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (monotone, capped at 1)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def compare_groups(
    named: dict[str, np.ndarray], alpha: float = ALPHA, n_boot: int = N_BOOT, seed: int = 0
) -> list[Comparison]:
    """Every pair of groups (with at least two faces each): Mann-Whitney U, Holm-corrected, Cliff's delta."""
    from scipy.stats import mannwhitneyu

    names = [k for k, v in named.items() if len(v) >= 2]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    raw = []
    for a, b in pairs:
        x, y = named[a], named[b]
        res = mannwhitneyu(x, y, alternative="two-sided")
        raw.append((float(res.statistic), float(res.pvalue)))
    adjusted = holm([p for _, p in raw])
    out = []
    for (a, b), (u, p), ph in zip(pairs, raw, adjusted):
        x, y = named[a], named[b]
        delta = 2.0 * u / (len(x) * len(y)) - 1.0
        ma, mb = float(np.median(x)), float(np.median(y))
        sig = ph < alpha
        better, worse = (a, b) if ma >= mb else (b, a)
        small = min(len(x), len(y)) < MIN_RELIABLE
        if sig:
            verdict = (
                f"{better} scores higher than {worse}: median {max(ma, mb):.3f} vs "
                f"{min(ma, mb):.3f}, p={p:.2g} (Holm {ph:.2g}), Cliff's delta {abs(delta):.2f} "
                f"({cliffs_delta_label(delta)})"
            )
        else:
            verdict = (
                f"{a} vs {b}: no significant difference (median {ma:.3f} vs {mb:.3f}, p={p:.2g}, "
                f"Holm {ph:.2g})"
            )
        if small:
            verdict += f" [fewer than {MIN_RELIABLE} faces in a group: weak evidence]"
        out.append(
            Comparison(
                a=a,
                b=b,
                n_a=len(x),
                n_b=len(y),
                median_a=ma,
                median_b=mb,
                median_diff=ma - mb,
                median_diff_ci=bootstrap_diff_ci(x, y, n_boot, alpha, seed),
                u=u,
                p_value=p,
                p_holm=ph,
                cliffs_delta=delta,
                effect=cliffs_delta_label(delta),
                significant=sig,
                verdict=verdict,
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


def _row_from(item: AnalysedImage, index: int, group: str, kind: str) -> ImageRow:
    row = ImageRow(index=index, group=group, kind=kind, name=item.name, status="error", path=item.path)
    row.pixels = item.image
    res = item.analysis
    if res is None:
        row.error = item.error or "could not be analysed"
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


def _check_backend(items: Sequence[AnalysedImage], backend: str, model: str, dim: int) -> None:
    for it in items:
        res = it.analysis
        if res is None or not res.found or res.primary.embedding is None:
            continue
        if (res.backend, res.model, len(res.primary.embedding)) != (backend, model, dim):
            raise BackendMismatchError(
                f"{it.name} was analysed with {res.backend}/{res.model} but the reference with "
                f"{backend}/{model}; analyse every image with the same face backend"
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
    g = GroupStats(
        name=name,
        kind=kind,
        n=len(rows),
        n_face=len(faces),
        n_failed=sum(r.status == "failed" for r in rows),
        n_rescued=sum(r.status == "rescued" for r in rows),
        n_errors=sum(r.status == "error" for r in rows),
        detection_rate=len(faces) / len(rows) if rows else 0.0,
    )
    g.band_counts = {b: sum(r.band == b for r in rows) for b in ("low", "ok", "watch", "danger", "failed")}
    if not len(sims):
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
    reference: Sequence[AnalysedImage] | IdentityReference,
    groups: dict[str, Sequence[AnalysedImage]],
    *,
    threshold: float | None = None,
    n_boot: int = N_BOOT,
    alpha: float = ALPHA,
    seed: int = 0,
    tsne: bool = True,
) -> MetricsResult:
    """Rows, group statistics, comparisons, copycat pairing and black holes for a reference + candidate groups.

    ``reference`` is either analysed reference images (rows, leave-one-out, thumbnails) or an
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
        nidx, nsim = nearest_references(v, ref.vectors)
        for k, r in enumerate(with_vec):
            r.similarity = float(sims[k])
            r.drift = 1.0 - r.similarity
            r.locked = r.drift <= lock
            r.nearest_ref, r.nearest_sim = ref.sources[nidx[k]], float(nsim[k])
            r.band = band_of(r.nearest_sim, backend)
    rows.extend(cand_rows)

    if tsne:
        from .tsne import identity_map

        vec_rows = [r for r in rows if r.embedding is not None]
        if vec_rows:
            xy = identity_map(np.stack([r.embedding for r in vec_rows]), seed=seed)
            for r, (x, y) in zip(vec_rows, xy):
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


__all__ = [
    "ALPHA",
    "CSV_FIELDS",
    "N_BOOT",
    "REFERENCE_GROUP",
    "AnalysedImage",
    "Comparison",
    "GroupStats",
    "ImageRow",
    "MetricsResult",
    "analyse_items",
    "bootstrap_ci",
    "build_metrics",
    "compare_groups",
    "default_threshold",
    "holm",
    "wilson_ci",
]
