"""Color matching in LAB and compositing that leaves every pixel outside the mask exactly as it was."""

from __future__ import annotations

import numpy as np


def _to_lab(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _from_lab(lab: np.ndarray) -> np.ndarray:
    import cv2

    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def lab_stats(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask-weighted LAB mean and std (L 0..100, a/b about -128..127)."""
    lab = _to_lab(image).reshape(-1, 3).astype(np.float64)
    wgt = np.asarray(mask, dtype=np.float64).reshape(-1)
    if wgt.sum() <= 0:
        raise ValueError("the mask is empty: nothing to measure")
    mean = (lab * wgt[:, None]).sum(0) / wgt.sum()
    var = (((lab - mean) ** 2) * wgt[:, None]).sum(0) / wgt.sum()
    return mean, np.sqrt(var)


def lab_mean_difference(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Euclidean distance between the mask-weighted LAB means of two images (a Delta-E-like figure)."""
    return float(np.linalg.norm(lab_stats(a, mask)[0] - lab_stats(b, mask)[0]))


def color_match(
    source: np.ndarray, target: np.ndarray, mask: np.ndarray, strength: float = 1.0, max_gain: float = 2.0
) -> np.ndarray:
    """Shift ``source``'s LAB mean/std inside ``mask`` toward ``target``'s (Reinhard transfer, masked).

    Used to make the re-rendered face carry the scene's light level and color cast. ``strength`` in 0..1 blends
    the transfer (1 = full match); the std gain is clamped to ``max_gain`` so a flat region cannot explode.
    Pixels where the mask is 0 come back unchanged.
    """
    m = np.asarray(mask, dtype=np.float32)
    s_mean, s_std = lab_stats(source, m)
    t_mean, t_std = lab_stats(target, m)
    gain = np.clip(t_std / np.maximum(s_std, 1e-3), 1.0 / max_gain, max_gain)
    lab = _to_lab(source).astype(np.float64)
    matched = (lab - s_mean) * gain + t_mean
    out_lab = lab + strength * (matched - lab)
    out = _from_lab(out_lab)
    return feather_composite(source, out, m)


def feather_composite(base: np.ndarray, overlay: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``base * (1 - mask) + overlay * mask``; pixels where mask == 0 are copied from ``base`` bit for bit."""
    if base.shape != overlay.shape:
        raise ValueError(f"composite needs equal shapes, got {base.shape} and {overlay.shape}")
    m = np.asarray(mask, dtype=np.float32)
    if m.shape != base.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match image {base.shape[:2]}")
    out = base.copy()
    sel = m > 0
    if not sel.any():
        return out
    mm = m[sel][:, None]
    blend = base[sel].astype(np.float32) * (1.0 - mm) + overlay[sel].astype(np.float32) * mm
    out[sel] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
    return out


def seamless_composite(base: np.ndarray, overlay: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Poisson (seamless) clone of the masked overlay into base, then the feathered composite on top.

    The Poisson step matches gradients at the mask border; the final feathered composite restores the guarantee
    that pixels outside the mask are unchanged (OpenCV's clone may touch its bounding box).
    """
    import cv2

    m = np.asarray(mask, dtype=np.float32)
    hard = (m > 0.5).astype(np.uint8) * 255
    ys, xs = np.nonzero(hard)
    if len(xs) == 0:
        return base.copy()
    h, w = hard.shape
    # seamlessClone needs the mask's bounding box strictly inside the image.
    hard[0, :] = hard[-1, :] = 0
    hard[:, 0] = hard[:, -1] = 0
    ys, xs = np.nonzero(hard)
    if len(xs) == 0:
        return feather_composite(base, overlay, m)
    cx = int((xs.min() + xs.max() + 1) // 2)
    cy = int((ys.min() + ys.max() + 1) // 2)
    try:
        cloned = cv2.seamlessClone(
            np.ascontiguousarray(overlay[:, :, ::-1]),
            np.ascontiguousarray(base[:, :, ::-1]),
            hard,
            (cx, cy),
            cv2.NORMAL_CLONE,
        )[:, :, ::-1]
    except cv2.error:
        return feather_composite(base, overlay, m)
    return feather_composite(base, np.ascontiguousarray(cloned), m)
