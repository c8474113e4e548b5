"""Per-image quality: face validation, sharpness, contrast, detector confidence and face size, scored 0-100.

Why these measures: a LoRA learns whatever the training set shows, so blurred, flat or multi-face images teach
the wrong thing. Each raw measurement is mapped to 0..100 by a monotone piecewise-linear curve (``Curve``);
the total is a weighted mean (default 0.5 sharpness / 0.3 contrast / 0.2 face confidence, from the portfolio
seed). Threshold strategies A (conservative), B (balanced, default) and C (aggressive) set hard minimums;
``calibrate`` derives curves and minimums from images the user knows are good.

Measurements are taken at a fixed working scale so that images of different sizes are comparable:

* whole-image sharpness: variance of the 3x3 Laplacian of the grey image downscaled to 768 px on the long side;
* face sharpness: the same on the face box (+15 % margin) resized to 192x192 (what the score mainly uses);
* contrast: standard deviation of the grey image (0..255) at the working scale;
* confidence: the face engine's 0..1 detection score (dlib HOG margins and insightface scores differ in scale:
  calibrate when you change backend);
* face size: face-box width / image width.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .config_fields import check_fields

WORK_SIDE = 768  # long side at which whole-image measures are taken
FACE_SIDE = 192  # face crops are resized to this square before the Laplacian
FACE_MARGIN = 0.15

# rejection reasons (stable strings: they appear in catalogs and reports)
R_UNREADABLE = "unreadable"
R_NO_FACE = "no_face"
R_MULTIPLE = "multiple_faces"
R_CUT = "face_cut_by_edge"
R_SHARPNESS = "low_sharpness"
R_CONTRAST = "low_contrast"
R_CONFIDENCE = "low_confidence"
R_SCORE = "low_score"
REASONS = (R_UNREADABLE, R_NO_FACE, R_MULTIPLE, R_CUT, R_SHARPNESS, R_CONTRAST, R_CONFIDENCE, R_SCORE)


@dataclass(frozen=True)
class Curve:
    """Monotone non-decreasing piecewise-linear map from a raw value to 0..100 (flat outside the knots)."""

    knots: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        xs = [k[0] for k in self.knots]
        ys = [k[1] for k in self.knots]
        if len(xs) < 2 or any(b < a for a, b in zip(xs, xs[1:])) or any(b < a for a, b in zip(ys, ys[1:])):
            raise ValueError(f"curve knots must be at least two points, increasing in x and y: {self.knots}")

    def __call__(self, value: float) -> float:
        xs = [k[0] for k in self.knots]
        ys = [k[1] for k in self.knots]
        return float(np.clip(np.interp(value, xs, ys), 0.0, 100.0))

    def to_list(self) -> list[list[float]]:
        return [[float(x), float(y)] for x, y in self.knots]

    @classmethod
    def from_points(cls, very_poor: float, poor: float, good: float, excellent: float) -> Curve:
        """The seed's four anchors: very poor -> 10, poor -> 40, good -> 80, excellent -> 100 (0 at 0)."""
        pts = sorted([very_poor, poor, good, excellent])
        eps = [pts[0]]
        for p in pts[1:]:  # keep x strictly increasing even for degenerate calibration sets
            eps.append(max(p, eps[-1] * 1.0001 + 1e-6))
        return cls(((0.0, 0.0), (eps[0], 10.0), (eps[1], 40.0), (eps[2], 80.0), (eps[3], 100.0)))


# Measured anchors (benchmarks/quality_defaults.py, docs/curation.md): face-region Laplacian variance of real
# studio photos at 512-1024 px is 72-737 (median 259, p90 463); blurred by 3 px it is 3-39, by 5 px 2-12.
# Sharpness: very poor 5 (median 5 px blur), poor 40 (sharpest 3 px blur), good 260 (median sharp), excellent 460.
# Contrast: hard minimum 40, preferred 60, peak 80+ (grey std); confidence: 0.85 marginal, 0.95 excellent.
DEFAULT_CURVES: dict[str, Curve] = {
    "sharpness": Curve.from_points(5, 40, 260, 460),
    "contrast": Curve(((0.0, 0.0), (20.0, 10.0), (40.0, 50.0), (60.0, 80.0), (80.0, 100.0))),
    "confidence": Curve(((0.0, 0.0), (0.5, 30.0), (0.85, 80.0), (0.95, 100.0))),
    "face_size": Curve(((0.0, 0.0), (0.04, 20.0), (0.10, 70.0), (0.15, 100.0))),
}
DEFAULT_WEIGHTS: dict[str, float] = {"sharpness": 0.5, "contrast": 0.3, "confidence": 0.2, "face_size": 0.0}


@dataclass(frozen=True)
class Thresholds:
    """Hard minimums; an image below any of them is rejected with the matching reason."""

    name: str
    min_sharpness: float  # face-region Laplacian variance (whole image when there is no face)
    min_contrast: float  # grey std
    min_confidence: float  # detector 0..1
    min_score: float  # weighted total 0..100


# Minimums measured on real photos (benchmarks/quality_defaults.py prints the distributions and these choices):
# B sits in the gap between the sharpest 3 px blur (face sharpness 39) and the softest sharp/render-like photo
# (54), and between contrast cut to 0.15 (grey std <= 10) and the flattest real photo (45); its confidence and
# score minimums sit below every sharp photo (dlib confidence >= 0.76, weighted total >= 58). A and C are fixed
# offsets from B. The seed's values (B: sharpness 280, confidence 0.90) rejected 43 of 48 sharp photos.
STRATEGIES: dict[str, Thresholds] = {
    "A": Thresholds("A-conservative", 80.0, 35.0, 0.80, 65.0),
    "B": Thresholds("B-balanced", 45.0, 20.0, 0.60, 50.0),
    "C": Thresholds("C-aggressive", 25.0, 15.0, 0.50, 40.0),
}
STRATEGY_ALIASES = {"conservative": "A", "balanced": "B", "aggressive": "C", "a": "A", "b": "B", "c": "C"}


def get_thresholds(strategy: str) -> Thresholds:
    key = STRATEGY_ALIASES.get(strategy.strip().lower(), strategy.strip().upper())
    if key not in STRATEGIES:
        raise ValueError(
            f"unknown quality strategy {strategy!r}; choose A/conservative, B/balanced, C/aggressive"
        )
    return STRATEGIES[key]


@dataclass
class QualityConfig:
    """Everything that decides a score; JSON round-trips so a calibration can be saved and reused."""

    curves: dict[str, Curve] = field(default_factory=lambda: dict(DEFAULT_CURVES))
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    thresholds: Thresholds = field(default_factory=lambda: STRATEGIES["B"])
    whole_image_share: float = (
        0.25  # share of whole-image sharpness in the sharpness score (rest: face region)
    )
    secondary_face_ratio: float = 0.3  # a second face counts when its width >= this x the main face's width
    edge_cut_fraction: float = 0.08  # reject when more than this share of the face box lies outside the frame

    def __post_init__(self) -> None:
        total = sum(max(0.0, float(w)) for w in self.weights.values())
        if total <= 0:
            raise ValueError("quality weights must have a positive sum")
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown quality weight(s) {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")

    @classmethod
    def for_strategy(cls, strategy: str = "B", weights: Mapping[str, float] | None = None) -> QualityConfig:
        w = dict(DEFAULT_WEIGHTS)
        w.update(weights or {})
        return cls(weights=w, thresholds=get_thresholds(strategy))

    def to_dict(self) -> dict[str, Any]:
        return {
            "curves": {k: c.to_list() for k, c in self.curves.items()},
            "weights": dict(self.weights),
            "thresholds": asdict(self.thresholds),
            "whole_image_share": self.whole_image_share,
            "secondary_face_ratio": self.secondary_face_ratio,
            "edge_cut_fraction": self.edge_cut_fraction,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QualityConfig:
        """Build from saved JSON; every field's type is checked, so a hand-edited file fails in one sentence."""
        check_fields(cls, d, "quality config")
        for name in ("curves", "weights"):
            if not isinstance(d.get(name, {}), dict):
                raise ValueError(f"quality config: {name} must be a JSON object {{...}}")
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in d.get("weights", {}).values()
        ):
            raise ValueError("quality config: every weight must be a number")
        if "thresholds" in d:
            check_fields(Thresholds, d["thresholds"], "quality config thresholds")
            missing = sorted(set(Thresholds.__dataclass_fields__) - set(d["thresholds"]))
            if missing:
                raise ValueError(f"quality config thresholds: missing {missing}")
        for k, v in d.get("curves", {}).items():
            if not isinstance(v, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, (int, float)) for x in p) for p in v
            ):
                raise ValueError(f"quality config: curve {k!r} must be a list of [x, y] number pairs")
        curves = dict(DEFAULT_CURVES)
        curves.update(
            {k: Curve(tuple((float(x), float(y)) for x, y in v)) for k, v in d.get("curves", {}).items()}
        )
        return cls(
            curves=curves,
            weights={**DEFAULT_WEIGHTS, **d.get("weights", {})},
            thresholds=Thresholds(**d["thresholds"]) if "thresholds" in d else STRATEGIES["B"],
            whole_image_share=float(d.get("whole_image_share", 0.25)),
            secondary_face_ratio=float(d.get("secondary_face_ratio", 0.3)),
            edge_cut_fraction=float(d.get("edge_cut_fraction", 0.08)),
        )


@dataclass
class ImageMetrics:
    """Raw measurements of one image (before any curve)."""

    width: int
    height: int
    faces: int  # faces that count (see QualityConfig.secondary_face_ratio)
    faces_detected: int
    sharpness: float  # whole image
    sharpness_face: float | None
    contrast: float
    confidence: float | None
    face_fraction: float | None
    cut_fraction: float | None
    face_bbox: list[float] | None = None
    rescue: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 4)
        return d


@dataclass
class QualityResult:
    metrics: ImageMetrics
    scores: dict[str, float]  # per-measure 0..100
    total: float
    passed: bool
    reasons: list[str]

    @property
    def reason(self) -> str | None:
        return self.reasons[0] if self.reasons else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.total, 2),
            "passed": self.passed,
            "reason": self.reason,
            "reasons": list(self.reasons),
            "scores": {k: round(v, 2) for k, v in self.scores.items()},
            "metrics": self.metrics.to_dict(),
        }


def grey_at_work_scale(image: np.ndarray) -> np.ndarray:
    """uint8 grey image downscaled (never upscaled) to WORK_SIDE on the long side."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    h, w = grey.shape[:2]
    s = WORK_SIDE / max(h, w)
    if s < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return grey


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian (the seed's kernel): high for crisp edges, low for blur."""
    import cv2

    return float(cv2.Laplacian(grey, cv2.CV_64F, ksize=1).var())


def face_crop(grey_full: np.ndarray, bbox: Sequence[float], margin: float = FACE_MARGIN) -> np.ndarray | None:
    """Face box (+margin, clipped to the frame) resized to FACE_SIDE x FACE_SIDE; None when degenerate."""
    import cv2

    h, w = grey_full.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in bbox)
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    a, b = int(max(0, x0 - mx)), int(max(0, y0 - my))
    c, d = int(min(w, x1 + mx)), int(min(h, y1 + my))
    if c - a < 8 or d - b < 8:
        return None
    return cv2.resize(grey_full[b:d, a:c], (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_AREA)


def _outside_fraction(bbox: Sequence[float], width: int, height: int) -> float:
    x0, y0, x1, y1 = (float(v) for v in bbox)
    area = max(1e-6, (x1 - x0) * (y1 - y0))
    ix = max(0.0, min(x1, width) - max(x0, 0.0))
    iy = max(0.0, min(y1, height) - max(y0, 0.0))
    return float(1.0 - ix * iy / area)


def measure(image: np.ndarray, analysis: Any, config: QualityConfig | None = None) -> ImageMetrics:
    """Raw measurements of a uint8 RGB image given its face analysis (``faces.FaceAnalysis`` or None)."""
    import cv2

    config = config or QualityConfig()
    h, w = image.shape[:2]
    grey_full = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    grey = grey_at_work_scale(grey_full)
    faces = list(getattr(analysis, "faces", None) or [])
    n_count = 0
    sharp_face = conf = frac = cut = None
    bbox = None
    rescue = getattr(analysis, "rescue", None)
    if faces:
        main = faces[0]
        n_count = sum(1 for f in faces if f.width >= config.secondary_face_ratio * main.width)
        bbox = [float(v) for v in main.bbox]
        crop = face_crop(grey_full, bbox)
        sharp_face = laplacian_variance(crop) if crop is not None else 0.0
        conf = float(main.det_score)
        frac = float(main.width / w)
        cut = _outside_fraction(bbox, w, h)
    return ImageMetrics(
        width=w,
        height=h,
        faces=n_count,
        faces_detected=len(faces),
        sharpness=laplacian_variance(grey),
        sharpness_face=sharp_face,
        contrast=float(grey.std()),
        confidence=conf,
        face_fraction=frac,
        cut_fraction=cut,
        face_bbox=[round(v, 1) for v in bbox] if bbox else None,
        rescue=rescue,
    )


def score(metrics: ImageMetrics, config: QualityConfig | None = None) -> QualityResult:
    """Map measurements to 0..100 per measure, combine with the weights, apply validation and minimums."""
    config = config or QualityConfig()
    c = config.curves
    whole = c["sharpness"](metrics.sharpness)
    if metrics.sharpness_face is not None:
        face_s = c["sharpness"](metrics.sharpness_face)
        sharp = config.whole_image_share * whole + (1 - config.whole_image_share) * face_s
    else:
        sharp = whole
    scores = {
        "sharpness": sharp,
        "contrast": c["contrast"](metrics.contrast),
        "confidence": c["confidence"](metrics.confidence or 0.0),
        "face_size": c["face_size"](metrics.face_fraction or 0.0),
    }
    wsum = sum(max(0.0, config.weights.get(k, 0.0)) for k in scores)
    total = sum(scores[k] * max(0.0, config.weights.get(k, 0.0)) for k in scores) / wsum
    reasons: list[str] = []
    if metrics.faces == 0:
        reasons.append(R_NO_FACE)
    elif metrics.faces > 1:
        reasons.append(R_MULTIPLE)
    if metrics.cut_fraction is not None and metrics.cut_fraction > config.edge_cut_fraction:
        reasons.append(R_CUT)
    t = config.thresholds
    sharp_raw = metrics.sharpness_face if metrics.sharpness_face is not None else metrics.sharpness
    if sharp_raw < t.min_sharpness:
        reasons.append(R_SHARPNESS)
    if metrics.contrast < t.min_contrast:
        reasons.append(R_CONTRAST)
    if metrics.confidence is not None and metrics.confidence < t.min_confidence:
        reasons.append(R_CONFIDENCE)
    if total < t.min_score:
        reasons.append(R_SCORE)
    return QualityResult(metrics, scores, float(total), not reasons, reasons)


def assess(image: np.ndarray, analysis: Any, config: QualityConfig | None = None) -> QualityResult:
    """``measure`` then ``score``."""
    config = config or QualityConfig()
    return score(measure(image, analysis, config), config)


def calibrate(
    reference: Iterable[ImageMetrics],
    base: QualityConfig | None = None,
    *,
    keep_fraction: float = 0.9,
) -> QualityConfig:
    """Curves and minimums from images the user knows are good (the seed's 'recalibrate on real data').

    Sharpness and contrast curves are re-anchored on the reference's percentiles (p10 -> poor, p50 -> good,
    p90 -> excellent, p10/5 -> very poor); minimums are the highest common percentile at which ``keep_fraction``
    of the reference passes all of them together. Needs at least 3 single-face reference images.
    """
    base = base or QualityConfig()
    ref = [m for m in reference if m.faces == 1 and m.sharpness_face is not None]
    if len(ref) < 3:
        raise ValueError(f"calibration needs at least 3 single-face reference images, got {len(ref)}")
    q = (1.0 - keep_fraction) * 100.0
    sharp = np.array([m.sharpness_face for m in ref], dtype=float)
    contrast = np.array([m.contrast for m in ref], dtype=float)
    conf = np.array([m.confidence for m in ref], dtype=float)
    curves = dict(base.curves)
    p10, p50, p90 = np.percentile(sharp, [10, 50, 90])
    curves["sharpness"] = Curve.from_points(p10 / 5.0, p10, p50, p90)
    c10, c50, c90 = np.percentile(contrast, [10, 50, 90])
    curves["contrast"] = Curve.from_points(c10 / 3.0, c10, c50, c90)
    provisional = QualityConfig(
        curves=curves,
        weights=dict(base.weights),
        thresholds=Thresholds("calibrated", 0.0, 0.0, 0.0, 0.0),
        whole_image_share=base.whole_image_share,
        secondary_face_ratio=base.secondary_face_ratio,
        edge_cut_fraction=base.edge_cut_fraction,
    )
    totals = np.array([score(m, provisional).total for m in ref])
    columns = (sharp, contrast, conf, totals)
    # lower the per-measure quantile until ``keep_fraction`` of the reference passes all minimums together
    for qq in np.linspace(q, 0.0, 21):
        mins = [float(np.percentile(col, qq)) for col in columns]
        ok = np.ones(len(ref), dtype=bool)
        for col, lo in zip(columns, mins):
            ok &= col >= lo
        if ok.mean() >= keep_fraction:
            break
    provisional.thresholds = Thresholds("calibrated", *mins)
    return provisional


# Training tiers of the seed: an image is in tier N when it ranks among the top N that passed.
TIERS = (20, 70, 100, 200, 300)


def tiers_for_rank(rank: int) -> list[str]:
    """Tier names for a 0-based rank among passing images (best first)."""
    return [f"tier_{n}" for n in TIERS if rank < n]
