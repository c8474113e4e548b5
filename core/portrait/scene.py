"""Scene analysis for the matched portrait: where the face is, how it is turned, lit and colored.

Everything is phrased by what the image shows (frame edges), never by the subject's left or right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ImageInputError, NoFaceError
from .views import YawEstimate, estimate_yaw, nose_edge_phrase

# Face width as a fraction of the image width: the seed's sweet spot, and the minimum we re-render at all.
IDEAL_FACE_FRACTION = (0.15, 0.25)
MIN_FACE_FRACTION = 0.04
MIN_FACE_PX = 40
# Key light: relative luminance difference between the two cheeks below which the light counts as frontal.
LIGHT_FRONT_THRESHOLD = 0.06
LIGHT_FULL_CONFIDENCE = 0.30
# Expression thresholds (dlib 68-point), set on the 12 London-set photos (6 neutral, 6 smiling): neutral mouth
# width / outer-eye distance 0.549-0.597, smiling 0.608-0.746; inner-lip gap / mouth width neutral <= 0.062.
SMILE_WIDTH_RATIO = 0.60
SMILE_CORNER_LIFT = 0.06
MOUTH_OPEN_RATIO = 0.09


@dataclass
class LightEstimate:
    """Key-light side from the shading across the face. ``balance`` > 0: the frame-right cheek is brighter."""

    direction: str  # "frame-left" | "frame-right" | "front"
    balance: float
    confidence: float
    left_luminance: float
    right_luminance: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "balance": round(self.balance, 3),
            "confidence": round(self.confidence, 3),
            "left_luminance": round(self.left_luminance, 1),
            "right_luminance": round(self.right_luminance, 1),
        }


@dataclass
class SceneFace:
    """One analyzed scene face: geometry, pose, light, color and expression, with prompt fragments."""

    index: int
    bbox: tuple[float, float, float, float]
    keypoints: dict[str, tuple[float, float]]
    landmarks: np.ndarray | None
    landmark_scheme: str | None
    yaw: YawEstimate
    pitch: float
    roll: float
    face_fraction: float
    light: LightEstimate
    color_temperature_k: float
    color_label: str
    expression: dict[str, Any]
    detector: str
    rescue: str | None
    face: Any = field(repr=False, default=None)  # the engine's Face (embedding etc.)

    def prompt_fragments(self) -> list[str]:
        return prompt_fragments(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "bbox": [round(float(v), 1) for v in self.bbox],
            "yaw": round(self.yaw.yaw, 1),
            "yaw_confidence": self.yaw.confidence,
            "view": self.yaw.view,
            "yaw_method": self.yaw.method,
            "yaw_cues": self.yaw.cues,
            "pitch": round(self.pitch, 1),
            "roll": round(self.roll, 1),
            "face_fraction": round(self.face_fraction, 3),
            "light": self.light.to_dict(),
            "color_temperature_k": round(self.color_temperature_k),
            "color_label": self.color_label,
            "expression": self.expression,
            "detector": self.detector,
            "rescue": self.rescue,
            "landmark_scheme": self.landmark_scheme,
            "prompt": prompt_fragments(self),
        }


@dataclass
class SceneAnalysis:
    image_size: tuple[int, int]  # (w, h)
    faces_found: int
    face: SceneFace
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": list(self.image_size),
            "faces_found": self.faces_found,
            "face": self.face.to_dict(),
            "warnings": list(self.warnings),
        }


# -- light ------------------------------------------------------------------------------------------------
def _luminance(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[:, :, 0].astype(np.float32) * (100.0 / 255.0)


def key_light(image: np.ndarray, face) -> LightEstimate:
    """Which side of the frame the key light comes from, from the two cheeks' luminance.

    Patches sit below each eye, half an eye distance outward, in the eye-aligned frame (so roll does not
    matter); the median luminance of each is compared. Near-equal cheeks mean frontal (or flat) light.
    """
    kp = face.keypoints
    a = np.asarray(kp["eye_fl"], dtype=np.float64)
    b = np.asarray(kp["eye_fr"], dtype=np.float64)
    d = float(np.linalg.norm(b - a))
    if d < 2:
        return LightEstimate("front", 0.0, 0.0, 0.0, 0.0)
    u = (b - a) / d
    v = np.array([-u[1], u[0]])  # points down the face (image y grows downward)
    lum = _luminance(image)
    h, w = lum.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = 0.28 * d
    values = []
    for eye, outward in ((a, -u), (b, u)):
        c = eye + 0.15 * d * outward + 0.55 * d * v
        sel = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= r * r
        values.append(float(np.median(lum[sel])) if sel.any() else float("nan"))
    left, right = values
    if not (math.isfinite(left) and math.isfinite(right)) or left + right <= 0:
        return LightEstimate("front", 0.0, 0.0, left, right)
    balance = (right - left) / ((right + left) / 2.0)
    if abs(balance) < LIGHT_FRONT_THRESHOLD:
        direction = "front"
        confidence = 1.0 - abs(balance) / LIGHT_FRONT_THRESHOLD * 0.5
    else:
        direction = "frame-right" if balance > 0 else "frame-left"
        confidence = min(1.0, abs(balance) / LIGHT_FULL_CONFIDENCE)
    return LightEstimate(direction, float(balance), float(confidence), left, right)


# -- color temperature ---------------------------------------------------------------------------------
def color_temperature(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, str]:
    """Correlated color temperature (K) of the scene light by grey-world + McCamy, and a label.

    Clipped and near-black pixels are ignored. Grey-world is a rough prior: a scene dominated by one color
    (a red wall) biases it; the label is meant for prompts, not for colorimetry.
    """
    px = image.reshape(-1, 3).astype(np.float64) / 255.0
    if mask is not None:
        px = px[mask.reshape(-1) > 0]
    keep = (px.max(axis=1) < 0.98) & (px.max(axis=1) > 0.05)
    if keep.sum() > 100:
        px = px[keep]
    lin = np.where(px <= 0.04045, px / 12.92, ((px + 0.055) / 1.055) ** 2.4)
    rgb = lin.mean(axis=0)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    x_, y_, z_ = m @ rgb
    s = x_ + y_ + z_
    if s <= 0:
        return 6500.0, "neutral"
    x, y = x_ / s, y_ / s
    n = (x - 0.3320) / (0.1858 - y)
    cct = 449.0 * n**3 + 3525.0 * n**2 + 6823.3 * n + 5520.33
    cct = float(np.clip(cct, 1500.0, 15000.0))
    label = "warm" if cct < 4500 else ("cool" if cct > 6800 else "neutral")
    return cct, label


# -- expression -----------------------------------------------------------------------------------------
def expression_cues(face) -> dict[str, Any]:
    """Smile / open mouth from landmarks: needs dlib 68-point (both cues) or insightface kps5 (smile only).

    With the default dlib 5-point model there are no mouth points, so expression is reported unavailable.
    """
    scheme = face.landmark_scheme
    lm = face.landmarks
    if scheme == "dlib68" and lm is not None:
        eye_d = float(np.linalg.norm(lm[45] - lm[36]))
        mouth_w = float(np.linalg.norm(lm[54] - lm[48]))
        gap = float(np.linalg.norm(lm[66] - lm[62]))
        lip_mid_y = (lm[62][1] + lm[66][1]) / 2.0
        corner_lift = (lip_mid_y - (lm[48][1] + lm[54][1]) / 2.0) / max(mouth_w, 1e-6)
        width_ratio = mouth_w / max(eye_d, 1e-6)
        open_ratio = gap / max(mouth_w, 1e-6)
        smile = width_ratio > SMILE_WIDTH_RATIO or corner_lift > SMILE_CORNER_LIFT
        return {
            "available": True,
            "source": "dlib68",
            "smile": bool(smile),
            "mouth_open": bool(open_ratio > MOUTH_OPEN_RATIO),
            "mouth_width_ratio": round(width_ratio, 3),
            "corner_lift": round(float(corner_lift), 3),
            "mouth_open_ratio": round(open_ratio, 3),
        }
    if scheme == "kps5" and lm is not None:
        eye_d = float(np.linalg.norm(lm[1] - lm[0]))
        mouth_w = float(np.linalg.norm(lm[4] - lm[3]))
        width_ratio = mouth_w / max(eye_d, 1e-6)
        return {
            "available": True,
            "source": "kps5",
            "smile": bool(width_ratio > 0.95),
            "mouth_open": None,
            "mouth_width_ratio": round(width_ratio, 3),
            "note": "insightface keypoints have mouth corners only: open mouth is not measurable",
        }
    return {
        "available": False,
        "source": scheme,
        "smile": None,
        "mouth_open": None,
        "note": "expression needs mouth landmarks: use the insightface backend or dlib 68-point (opt-in)",
    }


# -- prompt fragments -----------------------------------------------------------------------------------
def prompt_fragments(face: SceneFace) -> list[str]:
    """Prompt fragments describing the scene face by what the image shows (frame edges)."""
    out = [nose_edge_phrase(face.yaw.yaw)]
    if face.pitch > 10:
        out.append("chin raised, looking slightly up")
    elif face.pitch < -10:
        out.append("chin lowered, looking slightly down")
    if abs(face.roll) >= 8:
        side = "LEFT" if face.roll < 0 else "RIGHT"
        out.append(f"head tilted toward the {side} edge of the frame")
    if face.light.direction == "front":
        out.append("soft frontal light, even on both cheeks")
    else:
        edge = "LEFT" if face.light.direction == "frame-left" else "RIGHT"
        other = "RIGHT" if edge == "LEFT" else "LEFT"
        out.append(
            f"key light from the {edge} edge of the frame, the cheek toward the {other} edge in shadow"
        )
    out.append(f"{face.color_label} light (about {face.color_temperature_k / 100:.0f}00 K)")
    ex = face.expression
    if ex.get("available"):
        if ex.get("smile"):
            out.append("smiling")
        if ex.get("mouth_open"):
            out.append("mouth open")
        if not ex.get("smile") and not ex.get("mouth_open"):
            out.append("neutral expression, mouth closed")
    return out


# -- analysis -------------------------------------------------------------------------------------------
def choose_face(faces: list, face_index: int | None) -> tuple[int, Any]:
    """``None``: the largest face. An int: that face counted left to right by box centre (0 = leftmost)."""
    if face_index is None:
        return 0, faces[0]
    order = sorted(range(len(faces)), key=lambda i: faces[i].center[0])
    if not 0 <= face_index < len(order):
        raise ImageInputError(
            f"face_index {face_index} does not exist: the scene has {len(faces)} face(s), numbered 0.."
            f"{len(faces) - 1} from the frame's left edge"
        )
    return face_index, faces[order[face_index]]


def analyze_scene(
    image: np.ndarray,
    engine=None,
    *,
    face_index: int | None = None,
    min_face_fraction: float = MIN_FACE_FRACTION,
    min_face_px: int = MIN_FACE_PX,
    embed: bool = False,
) -> SceneAnalysis:
    """Analyze the scene's face (largest, or ``face_index`` counted from the frame's left edge).

    Raises NoFaceError when there is no face and ImageInputError when the chosen face is too small to re-render
    (the message gives the measured fraction and the minimum).
    """
    from ..faces import analyze

    res = analyze(image, engine, embed=embed)
    h, w = image.shape[:2]
    if not res.found:
        raise NoFaceError(
            f"no face found in the scene ({w}x{h}; tried {', '.join(res.tried)}). The matched portrait needs a "
            "visible face to replace: use a scene where the person is framed waist-up or closer.",
            tried=res.tried,
        )
    idx, face = choose_face(res.faces, face_index)
    fraction = face.width / w
    if fraction < min_face_fraction or face.width < min_face_px:
        raise ImageInputError(
            f"the scene face is too small to re-render: {face.width:.0f} px = {fraction:.1%} of the image width "
            f"(minimum {min_face_fraction:.0%} and {min_face_px} px; 15-25 % works best). Crop or upscale the "
            "scene so the face is larger."
        )
    warnings = []
    if len(res.faces) > 1:
        chosen = "the largest" if face_index is None else f"face {face_index} from the left edge"
        warnings.append(f"{len(res.faces)} faces found; using {chosen}")
    if fraction < IDEAL_FACE_FRACTION[0]:
        warnings.append(
            f"face is {fraction:.0%} of the image width; below 15 % identity accuracy drops (seed lesson)"
        )
    yaw = estimate_yaw(face, image, res.rescue)
    if yaw.confidence < 0.4:
        warnings.append(
            f"head yaw is uncertain (confidence {yaw.confidence:.2f}); the mirror check is weaker"
        )
    pose = face.pose
    light = key_light(image, face)
    cct, label = color_temperature(image)
    sf = SceneFace(
        index=idx,
        bbox=tuple(float(v) for v in face.bbox),
        keypoints=dict(face.keypoints),
        landmarks=face.landmarks,
        landmark_scheme=face.landmark_scheme,
        yaw=yaw,
        pitch=float(pose.pitch) if pose else 0.0,
        roll=float(pose.roll) if pose else 0.0,
        face_fraction=float(fraction),
        light=light,
        color_temperature_k=cct,
        color_label=label,
        expression=expression_cues(face),
        detector=face.detector,
        rescue=res.rescue,
        face=face,
    )
    return SceneAnalysis((w, h), len(res.faces), sf, warnings)
