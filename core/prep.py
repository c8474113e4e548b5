"""FaceCropPrep: background removal, face detection, crop, resize and augmentation of training photos.

From one photo of a person this makes the prepared square (default 768 px) with the face filling a set fraction
of the width, plus augmented variants: small rotations (default +-5 and +-10 deg) and scaled centre crops around
the face (default 60 %, the identity-replication seed's "facial reinforcement" crop). Every output carries the
metadata needed to trace it back to the source pixels.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .background import composite_on_color, foreground_mask
from .errors import MultipleFacesError, NoFaceError
from .faces import FaceEngine, analyze, get_engine
from .images import array_to_uint8_rgb


@dataclass
class PrepOptions:
    size: int = 768
    face_fraction: float = 0.40  # face-box width / output width
    face_center_y: float = 0.45  # where the face centre sits vertically (fraction of the output height)
    background: str = "auto"  # auto | matting | grabcut | none
    background_color: tuple[int, int, int] = (255, 255, 255)
    multiple_faces: str = "largest"  # largest | error
    rotations: Sequence[float] = (-10.0, -5.0, 5.0, 10.0)
    crop_scales: Sequence[float] = (0.6,)
    augment: bool = True
    model_dirs: list[str] = field(default_factory=list)  # extra folders for matting models

    def validate(self) -> None:
        """Raise OptionError (a ValueError) naming the first setting out of range; NaN is out of every range."""
        from .background import METHODS
        from .errors import OptionError

        if not 64 <= int(self.size) <= 4096:
            raise OptionError("size must be between 64 and 4096 px")
        if not 0.05 <= self.face_fraction <= 0.95:
            raise OptionError("face_fraction must be between 0.05 and 0.95")
        if not 0.0 <= self.face_center_y <= 1.0:
            raise OptionError("face_center_y must be between 0 and 1")
        if self.background not in METHODS:
            raise OptionError(f"background must be one of {', '.join(METHODS)}")
        if self.multiple_faces not in ("largest", "error"):
            raise OptionError("multiple_faces must be 'largest' or 'error'")
        for a in self.rotations:
            if not -180.0 <= a <= 180.0:
                raise OptionError("rotations must be between -180 and 180 degrees")
        for s in self.crop_scales:
            if not 0.2 <= s <= 1.0:
                raise OptionError("crop scales must be between 0.2 and 1.0")


@dataclass
class PreparedImage:
    image: np.ndarray  # uint8 RGB, size x size
    mask: np.ndarray  # float32 foreground mask, size x size
    meta: dict[str, Any]


def _crop_square(
    image: np.ndarray, cx: float, cy: float, side: float, out: int, fill
) -> tuple[np.ndarray, np.ndarray]:
    """Square crop of ``side`` source px centred at (cx, cy), resized to ``out``; outside the image is ``fill``.

    Returns the crop and the 2x3 affine matrix source -> output.
    """
    import cv2

    s = out / side
    m = np.array([[s, 0, out / 2 - s * cx], [0, s, out / 2 - s * cy]], dtype=np.float64)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    crop = cv2.warpAffine(
        image, m, (out, out), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=fill
    )
    return crop, m


def _warp(arr: np.ndarray, m: np.ndarray, out: int, fill) -> np.ndarray:
    import cv2

    return cv2.warpAffine(
        arr, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill
    )


def prepare_image(
    image: np.ndarray,
    options: PrepOptions | None = None,
    engine: FaceEngine | None = None,
    index: int | None = None,
) -> list[PreparedImage]:
    """Prepare one photo: returns the main prepared image first, then its augmentations (if enabled).

    Raises NoFaceError (with ``index``) when no face is found even after the rescue ladder, and
    MultipleFacesError when several faces are present and ``multiple_faces='error'``.
    """
    import cv2

    opts = options or PrepOptions()
    opts.validate()
    engine = engine or get_engine("auto")
    image = array_to_uint8_rgb(image, name="image" if index is None else f"image {index}")
    where = "" if index is None else f" (batch index {index})"
    result = analyze(image, engine, embed=False)
    if not result.found:
        raise NoFaceError(
            f"no face found{where} after trying {', '.join(result.tried)}; use a photo where the face is "
            "visible and at least ~80 px wide",
            index=index,
            tried=result.tried,
        )
    if len(result.faces) > 1 and opts.multiple_faces == "error":
        raise MultipleFacesError(
            f"{len(result.faces)} faces found{where}; crop the photo to one person or set multiple_faces='largest'"
        )
    face = result.primary
    size = int(opts.size)
    side = face.width / opts.face_fraction
    cx = face.center[0]
    cy = face.center[1] + (0.5 - opts.face_center_y) * side
    fill = tuple(int(c) for c in opts.background_color)

    # Work on the square region (plus a margin for rotations) only: cheaper and the background model sees
    # the same framing the output has.
    crop, m = _crop_square(image, cx, cy, side, size, fill)
    inside = _warp(np.ones(image.shape[:2], np.float32), m, size, 0.0)
    face_box_out = np.array(
        [
            *(m @ np.array([face.bbox[0], face.bbox[1], 1.0])),
            *(m @ np.array([face.bbox[2], face.bbox[3], 1.0])),
        ]
    )
    mask, bg_method = foreground_mask(crop, face_box_out, opts.background, opts.model_dirs, valid=inside)
    mask = mask * inside
    main = crop if bg_method.startswith("none") else composite_on_color(crop, mask, fill)
    base_meta = {
        "source_index": index,
        "source_size": [int(image.shape[1]), int(image.shape[0])],
        "face_bbox_source": [round(float(v), 1) for v in face.bbox],
        "face_bbox": [round(float(v), 1) for v in face_box_out],
        "face_rescue": face.rescue,
        "face_count": len(result.faces),
        "crop_center_source": [round(cx, 1), round(cy, 1)],
        "crop_side_source": round(side, 1),
        "source_to_output_affine": [[round(float(v), 6) for v in row] for row in m],
        "size": size,
        "background": bg_method,
        "pose": face.pose.to_dict() if face.pose else None,
    }
    outputs = [PreparedImage(main, mask, {**base_meta, "variant": "main", "augmentation": None})]
    if not opts.augment:
        return outputs
    fcx = (face_box_out[0] + face_box_out[2]) / 2
    fcy = (face_box_out[1] + face_box_out[3]) / 2
    for angle in opts.rotations:
        if angle == 0:
            continue
        r = cv2.getRotationMatrix2D((fcx, fcy), float(angle), 1.0)
        outputs.append(
            PreparedImage(
                _warp(main, r, size, fill),
                _warp(mask, r, size, 0.0),
                {**base_meta, "variant": f"rotate_{angle:+g}", "augmentation": {"rotate_deg": float(angle)}},
            )
        )
    for scale in opts.crop_scales:
        if scale >= 1.0:
            continue
        crop_side = size * scale
        c, cm = _crop_square(main, fcx, fcy, crop_side, size, fill)
        outputs.append(
            PreparedImage(
                c,
                _warp(mask, cm, size, 0.0),
                {
                    **base_meta,
                    "variant": f"crop_{int(round(scale * 100))}",
                    "augmentation": {"center_crop": float(scale), "center": [round(fcx, 1), round(fcy, 1)]},
                },
            )
        )
    return outputs


def prepare_batch(
    images: Sequence[np.ndarray],
    options: PrepOptions | None = None,
    engine: FaceEngine | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[PreparedImage]:
    """Prepare a batch; a photo without a face raises NoFaceError naming its batch index."""
    opts = options or PrepOptions()
    engine = engine or get_engine("auto")
    if len(images) == 0:
        from .errors import ImageInputError

        raise ImageInputError("the image batch is empty")
    out: list[PreparedImage] = []
    for i, img in enumerate(images):
        out.extend(prepare_image(img, opts, engine, index=i))
        if progress:
            progress(i + 1, len(images))
    return out


METADATA_FILE = "prep_metadata.json"


def json_text(text: Any) -> str:
    """``text`` as a string UTF-8 can encode: a file name that is not valid UTF-8 (its bytes arrive as lone
    surrogates) would otherwise make writing the metadata fail after all the work."""
    s = str(text)
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _safe_stem(stem: Any) -> bool:
    """A stem read back from the metadata is reused only if it is one plain file-name part (never ``../x``)."""
    from .fileio import OutputPathError, confined_name

    try:
        return isinstance(stem, str) and confined_name(stem) == stem
    except OutputPathError:
        return False


class PrepRecords:
    """The ``prep_metadata.json`` of an output folder, merged across runs, and the output names it implies.

    Why: a second run must not erase the first run's records, two inputs called ``me.jpg`` (from different
    folders) must not overwrite each other's outputs, and re-running the same input must replace its own
    outputs rather than pile up ``me_2``, ``me_3``... Records are keyed by the source's absolute path.
    """

    def __init__(self, out: str | os.PathLike):
        from .fileio import OutputPathError

        self.out = Path(out)
        self.path = self.out / METADATA_FILE
        self.records: list[dict[str, Any]] = []
        if self.path.is_dir():
            raise OutputPathError(f"{self.path} is a folder: move it away or choose another output folder")
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as exc:
                raise OutputPathError(
                    f"{self.path} is not readable prep metadata ({type(exc).__name__}); move it away or "
                    "choose another output folder"
                ) from None
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise OutputPathError(
                    f"{self.path} is not a list of prep records; move it away or choose another output folder"
                )
            self.records = data
        self._stems = {self._source_of(r): r["stem"] for r in self.records if _safe_stem(r.get("stem"))}
        self._taken = set(self._stems.values())
        # Every "<stem>_" prefix of a PNG already in the folder (outputs of older versions, other tools): a new
        # stem must not make names that replace them. One listing, not one glob per photo.
        for name in os.listdir(self.out) if self.out.is_dir() else []:
            if name.endswith(".png"):
                parts = name[:-4].split("_")
                self._taken.update("_".join(parts[:i]) for i in range(1, len(parts)))

    @staticmethod
    def source_key(path: str | os.PathLike) -> str:
        return json_text(os.path.abspath(os.fspath(path)))

    def _source_of(self, record: dict[str, Any]) -> str:
        return str(record.get("source") or self.source_key(str(record.get("file", ""))))

    def stem_for(self, source: str | os.PathLike) -> str:
        """The output stem of ``source``: the one it had in an earlier run, else a free one from its name."""
        from .fileio import OutputPathError, confined_name, short_stem

        key = self.source_key(source)
        if key in self._stems:
            return self._stems[key]
        try:
            base = short_stem(confined_name(Path(source).stem, "file name"))
        except OutputPathError:
            base = "image"
        stem, n = base, 1
        while stem in self._taken:
            n += 1
            stem = f"{base}_{n}"
        self._taken.add(stem)
        self._stems[key] = stem
        return stem

    def replace(self, source: str | os.PathLike, new: list[dict[str, Any]]) -> None:
        """Put ``new`` in place of the records of ``source``; its outputs this run did not rewrite are removed
        (a re-run with fewer variants must not leave stale augmentations in a training folder)."""
        key = self.source_key(source)
        keep_old_outputs = not any(r.get("ok") for r in new)  # a failed re-run keeps what the last one made
        written = {r.get("output") for r in new}
        kept = []
        for r in self.records:
            if self._source_of(r) != key or (keep_old_outputs and r.get("ok")):
                kept.append(r)
            elif r.get("ok") and r.get("output") and r["output"] not in written:
                stale = self.out / Path(str(r["output"])).name
                if stale.suffix == ".png":
                    with contextlib.suppress(OSError):
                        stale.unlink()
        self.records = kept + [
            {**r, "source": key, **{k: json_text(r[k]) for k in ("file", "error") if k in r}} for r in new
        ]

    def save(self) -> Path:
        from .fileio import write_json_atomic

        return write_json_atomic(self.path, self.records)
