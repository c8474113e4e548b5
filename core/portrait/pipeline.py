"""The matched-portrait loop: crop the scene face, re-render it, check it, color-match and composite it back.

The generator is injected: ``inpaint(crop, mask, seed) -> image`` (uint8 RGB crop at working size, float mask
0..1, seed). ComfyUI's sampler (nodes/portrait.py) and diffusers (core/cli/portrait.py) both fit behind it, and tests
can hand in a stand-in. Every attempt is checked:

- a face is found in the render;
- mirror check: when the scene head is clearly turned (|yaw| >= ``mirror_min_yaw``), the render's nose must
  point toward the same frame edge;
- pose: |yaw difference| <= ``yaw_tolerance`` and |pitch difference| <= ``pitch_tolerance``;
- identity: drift against the IDENTITY reference <= its lock threshold.

The first attempt that passes wins; otherwise the best one is returned with the failure stated in the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import IdentityLockError
from . import composite as comp
from . import geometry as geo
from .scene import SceneAnalysis, analyze_scene
from .views import estimate_yaw

InpaintFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


@dataclass
class PortraitSettings:
    seed: int = 0
    attempts: int = 4
    work_size: int = geo.DEFAULT_WORK_SIZE
    face_fill: float = geo.DEFAULT_FACE_FILL
    mask_dilate: float = 0.08  # fraction of the face-box width
    mask_feather: float = 0.06  # fraction of the face-box width (Gaussian sigma)
    yaw_tolerance: float = 15.0
    pitch_tolerance: float = 20.0
    mirror_min_yaw: float = 8.0
    drift_threshold: float | None = None  # None: the reference's lock threshold
    color_match: float = 1.0  # 0 = off, 1 = full LAB mean/std match inside the mask
    seamless: bool = False
    face_index: int | None = None
    min_face_fraction: float = 0.04
    min_face_px: int = 40

    def validate(self) -> PortraitSettings:
        """Refuse settings that would crash later or silently mean nothing (NaN tolerances, 0 attempts)."""
        if int(self.attempts) < 1:
            raise IdentityLockError("attempts must be at least 1")
        if not 64 <= int(self.work_size) <= 4096:
            raise IdentityLockError(f"work size {self.work_size} must be between 64 and 4096 pixels")
        ranges = {"mask_feather": (0.0, 1.0), "mask_dilate": (0.0, 1.0), "color_match": (0.0, 1.0),
                  "yaw_tolerance": (0.0, 180.0), "pitch_tolerance": (0.0, 180.0)}  # fmt: skip
        for name, (lo, hi) in ranges.items():
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                raise IdentityLockError(
                    f"{name.replace('_', ' ')} {v!r} must be a number from {lo:g} to {hi:g}"
                )
        if self.drift_threshold is not None:
            from ..seed_inputs import check_threshold

            self.drift_threshold = check_threshold(self.drift_threshold, "drift threshold")
        if self.face_index is not None and int(self.face_index) < 0:
            raise IdentityLockError(f"face index {self.face_index} must be 0 or more (0 = leftmost face)")
        return self


@dataclass
class Attempt:
    seed: int
    face_found: bool
    yaw: float | None = None
    pitch: float | None = None
    yaw_error: float | None = None
    pitch_error: float | None = None
    mirrored: bool | None = None
    drift: float | None = None
    passed: bool = False
    reasons: list[str] = field(default_factory=list)

    def score(self) -> tuple:
        """Lower is better: fewer failures, not mirrored, then drift, then pose error."""
        return (
            len(self.reasons),
            bool(self.mirrored),
            self.drift if self.drift is not None else 9.0,
            self.yaw_error if self.yaw_error is not None else 999.0,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("yaw", "pitch", "yaw_error", "pitch_error", "drift"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 4 if k == "drift" else 1)
        return d


@dataclass
class PortraitResult:
    image: np.ndarray  # final scene, uint8 RGB
    portrait: np.ndarray  # chosen render at working size (color-matched, composited into the crop)
    mask: np.ndarray  # full-image float mask used for the composite
    crop_mask: np.ndarray  # working-size mask
    passed: bool
    report: dict[str, Any]


def is_mirrored(scene_yaw: float, render_yaw: float, min_yaw: float = 8.0) -> bool:
    """True when the scene head is clearly turned and the render's nose points toward the other frame edge."""
    if abs(scene_yaw) < min_yaw:
        return False
    return math.copysign(1.0, scene_yaw) != math.copysign(1.0, render_yaw) and abs(render_yaw) >= min_yaw / 2


def check_candidate(
    render: np.ndarray,
    seed: int,
    scene_yaw: float,
    scene_pitch: float,
    settings: PortraitSettings,
    reference=None,
    engine=None,
) -> Attempt:
    """Measure one render against the scene pose and the identity; fill in pass/fail reasons."""
    from ..faces import analyze

    res = analyze(render, engine, embed=reference is not None)
    if not res.found:
        return Attempt(seed, False, reasons=["no face in the render"])
    face = res.primary
    est = estimate_yaw(face, render, res.rescue)
    pitch = float(face.pose.pitch) if face.pose else 0.0
    at = Attempt(seed, True, yaw=est.yaw, pitch=pitch)
    at.yaw_error = abs(est.yaw - scene_yaw)
    at.pitch_error = abs(pitch - scene_pitch)
    at.mirrored = is_mirrored(scene_yaw, est.yaw, settings.mirror_min_yaw)
    if at.mirrored:
        edge = "LEFT" if scene_yaw < 0 else "RIGHT"
        at.reasons.append(
            f"mirrored: the scene's nose points toward the {edge} edge, the render's the other way "
            f"(yaw {scene_yaw:+.0f} vs {est.yaw:+.0f})"
        )
    if at.yaw_error > settings.yaw_tolerance:
        at.reasons.append(f"yaw off by {at.yaw_error:.0f} deg (tolerance {settings.yaw_tolerance:.0f})")
    if at.pitch_error > settings.pitch_tolerance:
        at.reasons.append(f"pitch off by {at.pitch_error:.0f} deg (tolerance {settings.pitch_tolerance:.0f})")
    if reference is not None:
        if face.embedding is None:
            at.reasons.append("no identity vector for the render")
        else:
            at.drift = float(reference.drift_of(face.embedding, res.backend, res.model))
            limit = (
                settings.drift_threshold if settings.drift_threshold is not None else reference.lock_threshold
            )
            if at.drift > limit:
                at.reasons.append(f"identity drift {at.drift:.3f} > {limit:.3f}")
    at.passed = not at.reasons
    return at


def _as_render(image: np.ndarray, size: int) -> np.ndarray:
    from ..images import array_to_uint8_rgb

    img = array_to_uint8_rgb(np.asarray(image), name="render", check=False)
    if img.shape[:2] != (size, size):
        import cv2

        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def matched_portrait(
    scene: np.ndarray,
    inpaint: InpaintFn,
    reference=None,
    *,
    engine=None,
    settings: PortraitSettings | None = None,
    analysis: SceneAnalysis | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PortraitResult:
    """Re-render the scene's face as the reference identity, matched in pose and light; never mirrored.

    ``engine`` must be the face backend the reference was made with (drift across backends is an error).
    """
    from ..faces import get_engine

    settings = (settings or PortraitSettings()).validate()
    if engine is None:
        engine = get_engine(reference.backend if reference is not None else "auto")
    if reference is not None and getattr(engine, "backend", None) != reference.backend:
        raise IdentityLockError(
            f"the IDENTITY was made with the {reference.backend} face backend but the engine is "
            f"{getattr(engine, 'backend', '?')}; use the same backend for both"
        )
    scene = np.ascontiguousarray(scene)
    analysis = analysis or analyze_scene(
        scene,
        engine,
        face_index=settings.face_index,
        min_face_fraction=settings.min_face_fraction,
        min_face_px=settings.min_face_px,
    )
    sf = analysis.face
    h, w = scene.shape[:2]
    box = geo.head_and_shoulders_box(sf.bbox, (w, h), face_fill=settings.face_fill, work=settings.work_size)
    crop_img = geo.crop(scene, box)
    # Mask in working coordinates from the scene landmarks mapped into the crop.
    kp_crop = {k: tuple(box.to_crop(np.asarray(v))) for k, v in sf.keypoints.items()}
    lm_crop = box.to_crop(sf.landmarks) if sf.landmarks is not None else None
    bbox_crop = np.concatenate([box.to_crop(sf.bbox[:2]), box.to_crop(sf.bbox[2:])])
    crop_mask = geo.face_mask(
        (box.work, box.work),
        bbox_crop,
        kp_crop,
        lm_crop,
        sf.landmark_scheme,
        dilate=settings.mask_dilate,
        feather=settings.mask_feather,
    )
    # Never let the padded (outside-the-scene) part of the crop count as face.
    full_mask = geo.uncrop_mask(crop_mask, box)

    attempts: list[Attempt] = []
    renders: list[np.ndarray] = []
    total = settings.attempts
    for i in range(settings.attempts):
        seed = int(settings.seed) + i
        render = _as_render(inpaint(crop_img, crop_mask, seed), box.work)
        at = check_candidate(render, seed, sf.yaw.yaw, sf.pitch, settings, reference, engine)
        attempts.append(at)
        renders.append(render)
        if progress:
            progress(i + 1, total)
        if at.passed:
            break
    best_i = min(range(len(attempts)), key=lambda j: attempts[j].score())
    best, render = attempts[best_i], renders[best_i]

    # Color-match the render to the scene inside the mask, composite in the crop, then back into the scene.
    matched = render
    lab_before = lab_after = None
    if crop_mask.any():
        lab_before = comp.lab_mean_difference(render, crop_img, crop_mask)
        if settings.color_match > 0:
            matched = comp.color_match(render, crop_img, crop_mask, strength=settings.color_match)
        lab_after = comp.lab_mean_difference(matched, crop_img, crop_mask)
    if settings.seamless:
        portrait = comp.seamless_composite(crop_img, matched, crop_mask)
    else:
        portrait = comp.feather_composite(crop_img, matched, crop_mask)
    pasted = geo.uncrop(portrait, box, scene)
    final = comp.feather_composite(scene, pasted, full_mask)

    failure = None if best.passed else "; ".join(best.reasons) or "no attempt passed"
    report = {
        "passed": best.passed,
        "failure": failure,
        "chosen_seed": best.seed,
        "attempts_used": len(attempts),
        "attempts_allowed": settings.attempts,
        "scene": analysis.to_dict(),
        "scene_pose": {"yaw": round(sf.yaw.yaw, 1), "pitch": round(sf.pitch, 1), "roll": round(sf.roll, 1)},
        "portrait_pose": {"yaw": best.yaw, "pitch": best.pitch},
        "mirrored": best.mirrored,
        "drift": best.drift,
        "drift_threshold": (
            settings.drift_threshold
            if settings.drift_threshold is not None
            else (reference.lock_threshold if reference is not None else None)
        ),
        "face_fraction": round(sf.face_fraction, 3),
        "light_direction": sf.light.direction,
        "color_temperature_k": round(sf.color_temperature_k),
        "prompt_fragments": sf.prompt_fragments(),
        "crop": box.to_dict(),
        "lab_mean_difference": {
            "before": None if lab_before is None else round(lab_before, 2),
            "after": None if lab_after is None else round(lab_after, 2),
        },
        "attempts": [a.to_dict() for a in attempts],
        "warnings": list(analysis.warnings),
    }
    if reference is None:
        report["warnings"].append("no IDENTITY given: drift was not checked")
    return PortraitResult(final, portrait, full_mask, crop_mask, best.passed, report)
