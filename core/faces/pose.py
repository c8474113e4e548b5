"""Head pose (yaw / pitch / roll in degrees) from 2-D landmarks with solvePnP against a generic 3-D face.

Conventions used everywhere in IdentityLock (described by what the image shows, as the matched-portrait seed
learned the hard way):
- yaw > 0: the nose points toward the RIGHT edge of the frame; yaw < 0: toward the LEFT edge.
- pitch > 0: the face looks up (toward the top of the frame).
- roll > 0: the head is tilted clockwise in the image (the frame-left eye is higher than the frame-right eye).

Landmark-based pose is good near frontal and weak near profile: dlib's landmarks saturate (a 65 deg
near-profile reads about 27 deg), so every estimate carries a confidence that falls with |yaw| and with the
number of points used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Generic 3-D face in model units (about 0.2 mm), x toward the frame's right, y up, z toward the camera;
# nose tip at the origin. Frame-left points have negative x.
_MODEL = {
    "nose_tip": (0.0, 0.0, 0.0),
    "chin": (0.0, -330.0, -65.0),
    "eye_outer_fl": (-225.0, 170.0, -135.0),
    "eye_outer_fr": (225.0, 170.0, -135.0),
    "eye_inner_fl": (-83.0, 165.0, -105.0),
    "eye_inner_fr": (83.0, 165.0, -105.0),
    "eye_center_fl": (-154.0, 168.0, -120.0),
    "eye_center_fr": (154.0, 168.0, -120.0),
    "subnasale": (0.0, -60.0, -90.0),
    "mouth_fl": (-150.0, -150.0, -125.0),
    "mouth_fr": (150.0, -150.0, -125.0),
}

# Which model points a landmark scheme provides, by index into its landmark array.
SCHEMES: dict[str, dict[str, int]] = {
    # dlib 68-point (iBUG 300-W order): 30 nose tip, 8 chin, 36/45 outer eye corners, 48/54 mouth corners.
    "dlib68": {
        "nose_tip": 30,
        "chin": 8,
        "eye_outer_fl": 36,
        "eye_outer_fr": 45,
        "eye_inner_fl": 39,
        "eye_inner_fr": 42,
        "subnasale": 33,
        "mouth_fl": 48,
        "mouth_fr": 54,
    },
    # dlib 5-point: 0/1 frame-right eye outer/inner, 2/3 frame-left eye outer/inner, 4 subnasale.
    "dlib5": {"eye_outer_fr": 0, "eye_inner_fr": 1, "eye_outer_fl": 2, "eye_inner_fl": 3, "subnasale": 4},
    # insightface 5 keypoints: frame-left eye centre, frame-right eye centre, nose tip, mouth corners.
    "kps5": {"eye_center_fl": 0, "eye_center_fr": 1, "nose_tip": 2, "mouth_fl": 3, "mouth_fr": 4},
}

# Base confidence of each scheme near frontal (fewer points / no chin -> less reliable pitch).
_SCHEME_CONFIDENCE = {"dlib68": 0.9, "kps5": 0.8, "dlib5": 0.7}


@dataclass
class Pose:
    yaw: float
    pitch: float
    roll: float
    confidence: float
    method: str

    def to_dict(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _camera(width: int, height: int) -> np.ndarray:
    f = float(max(width, height))
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], dtype=np.float64)


def _euler_from_rotation(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees in IdentityLock's image-based convention.

    The model is built with y up and z toward the camera while OpenCV's camera has y down and z forward, so the
    model is first mapped with diag(1, -1, -1); what remains is the head's own rotation.
    """
    flip = np.diag([1.0, -1.0, -1.0])
    r = flip @ rot  # head rotation in a y-up, z-toward-viewer frame
    # r = Ry(yaw') Rx(pitch') Rz(roll') decomposition (yaw about the vertical axis first).
    yaw = np.degrees(np.arcsin(np.clip(r[0, 2], -1.0, 1.0)))
    pitch = np.degrees(np.arctan2(-r[1, 2], r[2, 2]))
    roll = np.degrees(np.arctan2(-r[0, 1], r[0, 0]))
    # Rotating about +y turns the nose toward +x, the frame's right; a positive rotation about +x tilts the face
    # up; a positive rotation about +z (counter-clockwise seen by the viewer) is a negative (clockwise) roll.
    return float(yaw), float(-pitch), float(-roll)


def pose_from_landmarks(landmarks: np.ndarray, scheme: str, image_size: tuple[int, int]) -> Pose | None:
    """Estimate pose from landmarks of a known scheme; None when the points are degenerate."""
    import cv2

    mapping = SCHEMES[scheme]
    names = list(mapping)
    obj = np.array([_MODEL[n] for n in names], dtype=np.float64)
    img = np.array([landmarks[mapping[n]] for n in names], dtype=np.float64)
    if not np.isfinite(img).all():
        return None
    width, height = image_size
    cam = _camera(width, height)
    dist = np.zeros((4, 1))
    # Start from a frontal head in front of the camera so the 5-point schemes converge to the right branch.
    inter = np.linalg.norm(img[names.index(_eye_key(names, "fl"))] - img[names.index(_eye_key(names, "fr"))])
    model_inter = abs(_MODEL[_eye_key(names, "fl")][0] - _MODEL[_eye_key(names, "fr")][0])
    depth = cam[0, 0] * model_inter / max(inter, 1e-6)
    centre = img.mean(axis=0)
    tvec = np.array(
        [
            [(centre[0] - cam[0, 2]) * depth / cam[0, 0]],
            [(centre[1] - cam[1, 2]) * depth / cam[1, 1]],
            [depth],
        ]
    )
    rvec = cv2.Rodrigues(np.diag([1.0, -1.0, -1.0]))[0]
    ok, rvec, tvec = cv2.solvePnP(
        obj, img, cam, dist, rvec, tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE
    )
    if not ok:
        return None
    rot, _ = cv2.Rodrigues(rvec)
    yaw, pitch, roll = _euler_from_rotation(rot)
    # Roll is better measured directly from the eye line than from a 5-point fit.
    roll = _roll_from_eyes(img, names)
    confidence = _SCHEME_CONFIDENCE.get(scheme, 0.6) * _yaw_reliability(yaw)
    return Pose(yaw=yaw, pitch=pitch, roll=roll, confidence=round(confidence, 3), method=f"solvepnp-{scheme}")


def _eye_key(names: list[str], side: str) -> str:
    for prefix in ("eye_outer_", "eye_center_"):
        if prefix + side in names:
            return prefix + side
    raise KeyError(side)


def _roll_from_eyes(img: np.ndarray, names: list[str]) -> float:
    fl = img[names.index(_eye_key(names, "fl"))]
    fr = img[names.index(_eye_key(names, "fr"))]
    # Image y grows downward: a frame-left eye higher than the frame-right eye is a clockwise (positive) roll.
    return float(np.degrees(np.arctan2(fr[1] - fl[1], fr[0] - fl[0])))


def _yaw_reliability(yaw: float) -> float:
    """Landmark detectors trained on near-frontal faces saturate beyond ~30-35 deg of yaw."""
    a = abs(yaw)
    if a <= 30:
        return 1.0
    if a >= 60:
        return 0.3
    return 1.0 - 0.7 * (a - 30) / 30
