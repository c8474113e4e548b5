"""The value types of a metrics run: analyzed inputs, per-image rows, per-group statistics and the result
with its plain-text summary. The computations live in :mod:`.analysis` (rows, groups) and :mod:`.stats`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..fileio import printable
from ..identity import IdentityReference
from .stats import ALPHA, N_BOOT, Comparison

REFERENCE_GROUP = "reference"


@dataclass
class AnalyzedImage:
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
    # Likeness as papers report it: mean cosine to each single reference photo (references: to the others).
    single_ref_sim: float | None = None
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
    single_ref_mean: float | None = None  # mean of the rows' single_ref_sim (``mean`` is to the centroid)
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

    def summary_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "lock_threshold_drift": self.lock_threshold,
            "bands": {"low_below": self.bands[0], "ok_below": self.bands[1], "danger_above": self.bands[2]},
            "similarity": "cosine to the normalised reference centroid (leave-one-out for references)",
            "likeness": {
                "units": f"cosine of {self.backend}/{self.model} identity vectors"
                + (" (ArcFace, the unit identity papers report)" if self.backend == "insightface" else ""),
                "to_centroid": "groups.*.mean (per image: similarity)",
                "to_single_photos": "groups.*.single_ref_mean (per image: single_ref_sim)",
                "comparable_with_papers": "see docs/identity.md: same recognition model, same kind of prompts "
                "and reference photos, else only roughly",
            },
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
            if g.median is None and g.n_face:
                lines.append(
                    f"  {g.name}: {g.n} image(s), {g.n_face} face(s) found; no similarity statistics "
                    "(leave-one-out is undefined for a single reference face)"
                )
                continue
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
        return "\n".join(printable(line) for line in lines)  # names come from files: no forged lines
