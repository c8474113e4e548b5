"""The five standard character views, and a checker that measures which view an image really shows.

Every direction is named by the frame edge the nose points toward, never by "the subject's left" (the
matched-portrait seed found that models and people confuse the two). ``yaw`` follows the face engine:
yaw < 0 the nose points toward the LEFT edge of the frame, yaw > 0 toward the RIGHT edge.

Bins (|yaw| in degrees, documented in docs/portrait.md):

====================  ==================  ======================================
view                  yaw                 what the image shows
====================  ==================  ======================================
front                 |yaw| < 20          both eyes, nose roughly centred
three_quarter_left    -55 < yaw <= -20    nose angled toward the LEFT edge
three_quarter_right   20 <= yaw < 55      nose angled toward the RIGHT edge
profile_left          yaw <= -55          nose points to the LEFT edge, one eye
profile_right         yaw >= 55           nose points to the RIGHT edge, one eye
====================  ==================  ======================================

Landmark yaw alone is not trusted near profile: dlib's landmark model saturates (a 65 deg near-profile reads
about 27 deg). The estimate fuses four cues and reports how much they agree:

1. landmark pose (solvePnP, from the face engine);
2. keypoint asymmetry: the nose's offset from the eye midpoint along the eye line, over the eye distance
   (roll-free), mapped to degrees with ``atan(asym / K)``;
3. foreshortening: eye distance over face-box width, which shrinks as the head turns;
4. detector behaviour: which of dlib's five HOG sub-detectors fires on the face (0 frontal, 1 turned toward
   the frame's left, 2 turned toward the right, 3/4 frontal rotated) and whether its margin clears the default
   threshold. A large face that the frontal HOG misses but a side sub-detector (or the CNN rescue) catches is
   profile evidence.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FRONT_MAX = 20.0
PROFILE_MIN = 55.0
# Asymmetry -> degrees: yaw = atan(asym / K). Calibrated on dlib's 5-point subnasale against solvePnP on the
# shared photos in the reliable range (|yaw| < 35): obama_2 0.14 ~ 22 deg, obama_5 0.17 ~ 33 deg, london 0.04 ~ 5.
ASYM_K = {"dlib5": 0.33, "dlib68": 0.33, "kps5": 0.5}  # kps5 uses the nose tip; K not calibrated here
# Eye distance / face-box width of a frontal face (dlib HOG boxes, shared photos: 0.41-0.45).
FRONTAL_EYE_RATIO = 0.43
# A side HOG sub-detector whose best margin (over the probe scales) stays below this is weak profile evidence
# (gates_1, a near-profile: 0.31; biden_2, a ~40 deg turn: 0.28 / 0.54; obama_5, ~33 deg: 1.2).
PROFILE_HOG_MARGIN = 0.5
HOG_FACE_PX = (100, 140)  # the face region is probed at these face-box widths (px); best margin wins

VIEW_NAMES = ("front", "three_quarter_left", "three_quarter_right", "profile_left", "profile_right")


@dataclass(frozen=True)
class ViewSpec:
    """A standard character view: its target yaw and a prompt that says what the final image shows."""

    name: str
    yaw: float
    prompt: str
    negative: str
    seed_name: str  # the name the matched-portrait seed used (subject-based; kept only for cross-reference)


VIEWS: dict[str, ViewSpec] = {
    "front": ViewSpec(
        "front",
        0.0,
        "head-and-shoulders portrait, face looking straight into the camera, both eyes and both ears equally "
        "visible, nose centred in the face, plain white background",
        "turned head, profile, tilted head",
        "Front",
    ),
    "three_quarter_left": ViewSpec(
        "three_quarter_left",
        -40.0,
        "head-and-shoulders portrait, head turned so the nose points toward the LEFT edge of the frame, "
        "three-quarter view, both eyes visible, the far cheek partly hidden, plain white background",
        "nose pointing toward the right edge of the frame, frontal view, full profile",
        "3/4 Right",
    ),
    "three_quarter_right": ViewSpec(
        "three_quarter_right",
        40.0,
        "head-and-shoulders portrait, head turned so the nose points toward the RIGHT edge of the frame, "
        "three-quarter view, both eyes visible, the far cheek partly hidden, plain white background",
        "nose pointing toward the left edge of the frame, frontal view, full profile",
        "3/4 Left",
    ),
    "profile_left": ViewSpec(
        "profile_left",
        -90.0,
        "head-and-shoulders side profile, the nose points to the LEFT edge of the frame, only one eye "
        "visible, the back of the head toward the RIGHT edge, plain white background",
        "nose pointing toward the right edge of the frame, both eyes visible, frontal view",
        "Profile Right",
    ),
    "profile_right": ViewSpec(
        "profile_right",
        90.0,
        "head-and-shoulders side profile, the nose points to the RIGHT edge of the frame, only one eye "
        "visible, the back of the head toward the LEFT edge, plain white background",
        "nose pointing toward the left edge of the frame, both eyes visible, frontal view",
        "Profile Left",
    ),
}


def classify_yaw(yaw: float) -> str:
    """The view a yaw (degrees, frame-based sign) falls in, by the documented bins."""
    a = abs(yaw)
    if a < FRONT_MAX:
        return "front"
    side = "left" if yaw < 0 else "right"
    return f"profile_{side}" if a >= PROFILE_MIN else f"three_quarter_{side}"


def mirror_of(view: str) -> str:
    """The view seen in a mirror (left <-> right)."""
    if view.endswith("_left"):
        return view[: -len("left")] + "right"
    if view.endswith("_right"):
        return view[: -len("right")] + "left"
    return view


def nose_edge_phrase(yaw: float) -> str:
    """'the nose points toward the LEFT edge of the frame (about 30 deg)' and friends."""
    if abs(yaw) < 8:
        return "facing the camera, the nose centred (no left or right turn)"
    edge = "LEFT" if yaw < 0 else "RIGHT"
    return (
        f"the head turned so the nose points toward the {edge} edge of the frame (about {abs(yaw):.0f} deg)"
    )


@dataclass
class YawEstimate:
    """A fused yaw (frame-based sign) with its confidence and every cue that went into it."""

    yaw: float
    confidence: float
    view: str
    method: str
    cues: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["yaw"] = round(self.yaw, 1)
        d["confidence"] = round(self.confidence, 3)
        return d


def keypoint_asymmetry(face) -> float | None:
    """Nose offset from the eye midpoint along the eye line, over the eye distance (roll removed)."""
    kp = face.keypoints
    if not all(k in kp for k in ("eye_fl", "eye_fr", "nose")):
        return None
    a, b, n = (np.asarray(kp[k], dtype=np.float64) for k in ("eye_fl", "eye_fr", "nose"))
    d = float(np.linalg.norm(b - a))
    if d < 1e-6:
        return None
    u = (b - a) / d
    return float(np.dot(n - (a + b) / 2, u) / d)


def eye_ratio(face) -> float | None:
    kp = face.keypoints
    if "eye_fl" not in kp or "eye_fr" not in kp or face.width <= 0:
        return None
    return float(np.linalg.norm(np.subtract(kp["eye_fr"], kp["eye_fl"])) / face.width)


_hog = None


def hog_probe(image: np.ndarray, face) -> dict[str, Any] | None:
    """Run dlib's five HOG sub-detectors on the face region; report which one fires and its margin.

    The region is resized so the face box is about ``HOG_FACE_PX`` wide (cheap: a few ms). Returns
    ``{"subdetector": int, "margin": float, "direction": -1|0|1}`` for the detection overlapping the face, or
    ``{"subdetector": None}`` when no sub-detector fires even at margin -1.
    """
    global _hog
    try:
        import cv2
        import dlib
    except ImportError:  # pragma: no cover - dlib is a runtime dependency
        return None
    if _hog is None:
        _hog = dlib.get_frontal_face_detector()
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in face.bbox)
    bw, bh = max(1.0, x1 - x0), max(1.0, y1 - y0)
    m = 0.6
    cx0, cy0 = max(0, int(x0 - m * bw)), max(0, int(y0 - m * bh))
    cx1, cy1 = min(w, int(x1 + m * bw)), min(h, int(y1 + m * bh))
    region = image[cy0:cy1, cx0:cx1]
    if region.size == 0:
        return None
    best, best_margin = None, -np.inf
    for px in HOG_FACE_PX:
        s = px / bw
        work = cv2.resize(
            region,
            (max(1, round(region.shape[1] * s)), max(1, round(region.shape[0] * s))),
            interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC,
        )
        rects, scores, idx = _hog.run(np.ascontiguousarray(work), 0, -1.0)
        fb = np.array([x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0]) * s
        for r, sc, i in zip(rects, scores, idx):
            rb = np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64)
            if _iou(fb, rb) > 0.2 and sc > best_margin:
                best, best_margin = (int(i), float(sc)), float(sc)
    if best is None:
        return {"subdetector": None, "margin": None, "direction": 0}
    sub, margin = best
    direction = {1: -1, 2: 1}.get(sub, 0)
    return {"subdetector": sub, "margin": round(margin, 3), "direction": direction}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def estimate_yaw(face, image: np.ndarray | None = None, rescue: str | None = None) -> YawEstimate:
    """Fuse landmark pose, keypoint asymmetry, foreshortening and detector behaviour into one yaw.

    ``image`` enables the HOG sub-detector probe; ``rescue`` is the detection rung that found the face
    (a large face found only after ``direct`` failed is profile evidence).
    """
    cues: dict[str, Any] = {}
    yaws, weights, confs = [], [], []
    lm = face.pose
    if lm is not None:
        cues["landmark_yaw"] = round(lm.yaw, 1)
        yaws.append(lm.yaw)
        weights.append(1.0)
        confs.append(lm.confidence)
    asym = keypoint_asymmetry(face)
    if asym is not None:
        k = ASYM_K.get(face.landmark_scheme or "", 0.4)
        yaw_asym = math.degrees(math.atan(asym / k))
        cues["asymmetry"] = round(asym, 3)
        cues["asymmetry_yaw"] = round(yaw_asym, 1)
        yaws.append(yaw_asym)
        weights.append(1.0)
        confs.append(0.6)
    ratio = eye_ratio(face)
    if ratio is not None:
        cues["eye_ratio"] = round(ratio, 3)
        cues["foreshortening_yaw"] = round(math.degrees(math.acos(min(1.0, ratio / FRONTAL_EYE_RATIO))), 1)
    probe = hog_probe(image, face) if image is not None else None
    if probe is not None:
        cues["hog"] = probe
    if rescue is not None:
        cues["rescue"] = rescue
    if not yaws:
        return YawEstimate(0.0, 0.0, "front", "none", cues)

    fused = float(np.average(yaws, weights=weights))
    # Sign: landmark and asymmetry yaws plus the side sub-detector's direction.
    vote = sum(y / 30.0 for y in yaws) + (0.7 * probe["direction"] if probe else 0.0)
    sign = -1.0 if vote < 0 else 1.0
    magnitude = abs(fused)
    if probe and probe["direction"] == sign:
        # A side sub-detector agrees on the direction: the turn is real and landmark cues only underestimate it.
        magnitude = max(abs(y) for y in yaws)
    signs = [np.sign(y) for y in yaws if abs(y) >= 5] + (
        [probe["direction"]] if probe and probe["direction"] else []
    )
    agree = len(set(signs)) <= 1
    method = "landmarks+asymmetry" + ("+hog" if probe else "")

    # Profile evidence: a side sub-detector that the default threshold would reject, a frontal-HOG miss that a
    # rescue rung recovered, strong foreshortening.
    evidence = 0.0
    if probe and probe["subdetector"] in (1, 2) and probe["margin"] is not None:
        if probe["margin"] < PROFILE_HOG_MARGIN:
            evidence += 0.5
    if probe and probe["subdetector"] is None:
        evidence += 0.5
    # HOG's window is 80 px: a face at least that big that the direct pass missed is not missed for its size.
    if rescue not in (None, "direct") and face.width >= 80:
        evidence += 1.0
    if ratio is not None and ratio < FRONTAL_EYE_RATIO * math.cos(math.radians(45)):
        evidence += 0.5
    cues["profile_evidence"] = evidence
    confidence = float(np.mean(confs))
    if evidence >= 1.0 and magnitude >= 15.0:
        magnitude = max(magnitude, PROFILE_MIN + 10.0)
        method += "+profile-cues"
        confidence = min(confidence, 0.5)
    yaw = sign * magnitude
    if not agree:
        confidence *= 0.6
    # Near a bin edge the view label is less certain than the number.
    if min(abs(magnitude - FRONT_MAX), abs(magnitude - PROFILE_MIN)) < 5.0:
        confidence *= 0.7
    return YawEstimate(yaw, round(confidence, 3), classify_yaw(yaw), method, cues)


# -- view checking -----------------------------------------------------------------------------------------
_VIEW_PATTERNS = [
    (re.compile(r"(three[_-]?quarter|3q|3-4|34)[_-]?(left|l)(?![a-z])", re.I), "three_quarter_left"),
    (re.compile(r"(three[_-]?quarter|3q|3-4|34)[_-]?(right|r)(?![a-z])", re.I), "three_quarter_right"),
    (re.compile(r"profile[_-]?(left|l)(?![a-z])", re.I), "profile_left"),
    (re.compile(r"profile[_-]?(right|r)(?![a-z])", re.I), "profile_right"),
    (re.compile(r"(front|frontal)", re.I), "front"),
]


def expected_view(path: str | Path) -> str | None:
    """The view a file claims: PNG text ``identitylock_view`` / ``view`` first, then its name.

    Names use the frame-based convention: ``*_profile_left*`` means the nose points to the LEFT edge.
    """
    path = Path(path)
    try:
        from PIL import Image

        with Image.open(path) as img:
            meta = getattr(img, "text", {}) or {}
            for key in ("identitylock_view", "view"):
                if meta.get(key) in VIEW_NAMES:
                    return meta[key]
    except Exception:
        pass
    stem = path.stem.replace(" ", "_")
    for pattern, view in _VIEW_PATTERNS:
        if pattern.search(stem):
            return view
    return None


@dataclass
class ViewCheck:
    expected: str | None
    measured: str | None
    yaw: float | None
    confidence: float
    ok: bool | None  # None when no view was expected
    mirrored: bool
    message: str
    estimate: YawEstimate | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "estimate"}
        d["estimate"] = self.estimate.to_dict() if self.estimate else None
        return d


def check_view(image: np.ndarray, expected: str | None = None, engine=None) -> ViewCheck:
    """Measure the view an image shows and compare it with the expected one (mirrors are flagged)."""
    from ..faces import analyze

    if expected is not None and expected not in VIEW_NAMES:
        raise ValueError(f"unknown view {expected!r}; choose one of {', '.join(VIEW_NAMES)}")
    res = analyze(image, engine, embed=False)
    if not res.found:
        return ViewCheck(expected, None, None, 0.0, False if expected else None, False, "no face found")
    face = res.primary
    est = estimate_yaw(face, image, res.rescue)
    measured = est.view
    mirrored = expected is not None and expected != "front" and measured == mirror_of(expected)
    if expected is None:
        ok, msg = None, f"{measured} (yaw {est.yaw:+.0f} deg)"
    elif measured == expected:
        ok, msg = True, "ok"
    elif mirrored:
        ok, msg = False, f"MIRRORED: expected {expected}, the nose points the other way ({measured})"
    else:
        ok, msg = False, f"wrong view: expected {expected}, measured {measured} (yaw {est.yaw:+.0f} deg)"
    return ViewCheck(expected, measured, est.yaw, est.confidence, ok, mirrored, msg, est)
