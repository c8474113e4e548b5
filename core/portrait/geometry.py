"""Head-and-shoulders crop (padded at borders), its exact inverse, and the landmark face mask.

The crop is a square in scene pixels (integer corners, possibly extending past the image: the missing part is
padded by reflection and never pasted back), resized to a working size for the generator. ``uncrop`` maps a
working-size image back and pastes only the part that lies inside the scene.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_WORK_SIZE = 512
# Face-box width as a fraction of the working frame: the seed's character views use 40-50 %, a head-and-
# shoulders crop that leaves room for hair and neck wants a little less.
DEFAULT_FACE_FILL = 0.38


@dataclass(frozen=True)
class CropBox:
    """Square crop ``[x0, x0+side) x [y0, y0+side)`` of an image of ``image_size`` (w, h), shown at ``work``."""

    x0: int
    y0: int
    side: int
    work: int
    image_size: tuple[int, int]

    @property
    def scale(self) -> float:
        return self.work / self.side

    @property
    def padded(self) -> bool:
        w, h = self.image_size
        return self.x0 < 0 or self.y0 < 0 or self.x0 + self.side > w or self.y0 + self.side > h

    def valid(self) -> tuple[int, int, int, int]:
        """The part of the crop inside the image, in image coordinates (x0, y0, x1, y1)."""
        w, h = self.image_size
        return max(0, self.x0), max(0, self.y0), min(w, self.x0 + self.side), min(h, self.y0 + self.side)

    def to_crop(self, pts: np.ndarray) -> np.ndarray:
        """Image coordinates -> working-frame coordinates."""
        return (np.asarray(pts, dtype=np.float64) - [self.x0, self.y0]) * self.scale

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        """Working-frame coordinates -> image coordinates (the exact inverse of ``to_crop``)."""
        return np.asarray(pts, dtype=np.float64) / self.scale + [self.x0, self.y0]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["padded"] = self.padded
        return d


def head_and_shoulders_box(
    face_bbox,
    image_size: tuple[int, int],
    *,
    face_fill: float = DEFAULT_FACE_FILL,
    work: int = DEFAULT_WORK_SIZE,
) -> CropBox:
    """A square around the face so the face box is ``face_fill`` of the side, centred a little below the face
    (to include neck and shoulders). Faces at the border give a box that extends past the image (padded)."""
    x0, y0, x1, y1 = (float(v) for v in face_bbox)
    fw, fh = x1 - x0, y1 - y0
    side = int(round(max(fw, fh) / face_fill))
    side = max(side, 16)
    cx = (x0 + x1) / 2.0
    cy = (y0 + y1) / 2.0 + 0.12 * side
    return CropBox(
        int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side, int(work), tuple(image_size)
    )


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if image.shape[0] == size and image.shape[1] == size:
        return image.copy()
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def crop(image: np.ndarray, box: CropBox) -> np.ndarray:
    """The box's pixels at working size; outside the image, reflection padding."""
    import cv2

    h, w = image.shape[:2]
    pl, pt = max(0, -box.x0), max(0, -box.y0)
    pr, pb = max(0, box.x0 + box.side - w), max(0, box.y0 + box.side - h)
    src = image
    if pl or pt or pr or pb:
        border = cv2.BORDER_REFLECT_101 if min(h, w) > max(pl, pt, pr, pb) else cv2.BORDER_REPLICATE
        src = cv2.copyMakeBorder(image, pt, pb, pl, pr, border)
    x, y = box.x0 + pl, box.y0 + pt
    region = src[y : y + box.side, x : x + box.side]
    return _resize(np.ascontiguousarray(region), box.work)


def uncrop(work_image: np.ndarray, box: CropBox, base: np.ndarray) -> np.ndarray:
    """Paste a working-size image back into a copy of ``base`` (only the part inside the image)."""
    full = _resize(work_image, box.side)
    out = base.copy()
    vx0, vy0, vx1, vy1 = box.valid()
    out[vy0:vy1, vx0:vx1] = full[vy0 - box.y0 : vy1 - box.y0, vx0 - box.x0 : vx1 - box.x0]
    return out


def uncrop_mask(work_mask: np.ndarray, box: CropBox) -> np.ndarray:
    """A working-size float mask mapped to a full-image mask (zero outside the crop)."""
    w, h = box.image_size
    full = _resize(work_mask.astype(np.float32), box.side)
    out = np.zeros((h, w), dtype=np.float32)
    vx0, vy0, vx1, vy1 = box.valid()
    out[vy0:vy1, vx0:vx1] = full[vy0 - box.y0 : vy1 - box.y0, vx0 - box.x0 : vx1 - box.x0]
    out[out < 1.0 / 255.0] = 0.0
    return np.clip(out, 0.0, 1.0)


def face_mask(
    size: tuple[int, int],
    bbox,
    keypoints: dict | None = None,
    landmarks: np.ndarray | None = None,
    scheme: str | None = None,
    *,
    dilate: float = 0.08,
    feather: float = 0.06,
) -> np.ndarray:
    """Float mask (h, w) in 0..1 covering the face from landmarks, dilated and feathered.

    ``dilate`` and ``feather`` are fractions of the face-box width. With 68 points the mask is the hull of the
    jaw line and the brows lifted to the forehead; with 5 points (or none) it is an ellipse fitted to the box
    and rotated with the eye line. Values below 1/255 are set to exactly 0, so "outside the mask" is a hard set.
    """
    import cv2

    w, h = size
    x0, y0, x1, y1 = (float(v) for v in bbox)
    fw, fh = x1 - x0, y1 - y0
    hard = np.zeros((h, w), dtype=np.uint8)
    if scheme == "dlib68" and landmarks is not None and len(landmarks) >= 68:
        jaw = np.asarray(landmarks[0:17], dtype=np.float64)
        brows = np.asarray(landmarks[17:27], dtype=np.float64)
        lift = 0.35 * fh
        pts = np.concatenate([jaw, brows - [0, lift]])
        hull = cv2.convexHull(np.round(pts).astype(np.int32))
        cv2.fillConvexPoly(hard, hull, 255)
    else:
        angle = 0.0
        if keypoints and "eye_fl" in keypoints and "eye_fr" in keypoints:
            (ax, ay), (bx, by) = keypoints["eye_fl"], keypoints["eye_fr"]
            angle = float(np.degrees(np.arctan2(by - ay, bx - ax)))
        centre = ((x0 + x1) / 2.0, (y0 + y1) / 2.0 - 0.05 * fh)
        axes = (max(1, int(round(0.56 * fw))), max(1, int(round(0.70 * fh))))
        cv2.ellipse(hard, (int(round(centre[0])), int(round(centre[1]))), axes, angle, 0, 360, 255, -1)
    d = int(round(dilate * fw))
    if d > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1))
        hard = cv2.dilate(hard, k)
    mask = hard.astype(np.float32) / 255.0
    sigma = feather * fw
    if sigma > 0.3:
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
    mask[mask < 1.0 / 255.0] = 0.0
    return np.clip(mask, 0.0, 1.0)
