"""FaceCropPrep node: thin adapter over core.prep."""

from __future__ import annotations

import json
import logging
import math

from ..core.errors import IdentityLockError, ImageInputError, OptionError
from ._comfy import CATEGORY, Progress, image_to_numpy, model_folder_paths, numpy_to_image, numpy_to_mask

BACKEND_CHOICES = ["auto", "dlib", "insightface"]
_log = logging.getLogger("IdentityLock")


def parse_float_list(text: str, name: str) -> list[float]:
    """'-10, -5, 5, 10' -> [-10.0, -5.0, 5.0, 10.0]; empty -> []. NaN and infinities are refused."""
    out = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise OptionError(
                f"{name}: {part[:40]!r} is not a number (use a comma-separated list like '-10, -5, 5, 10')"
            )
        out.append(value)
    return out


def parse_color(text: str) -> tuple[int, int, int]:
    t = str(text).strip().lstrip("#")
    if len(t) != 6 or any(c not in "0123456789abcdefABCDEF" for c in t):
        raise OptionError(f"background_color {str(text)[:40]!r}: use a hex color like #FFFFFF")
    return tuple(int(t[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def face_engine(backend: str):
    from ..core.faces import get_engine

    return get_engine(backend, model_dirs=model_folder_paths("insightface"))


class FaceCropPrep:
    DESCRIPTION = (
        "Prepare training photos: remove the background, find the face, crop so the face fills a set fraction, "
        "resize (keeping aspect by padding), and add rotated and 60 % centre-crop variants."
    )
    CATEGORY = f"{CATEGORY}/prep"
    FUNCTION = "prepare"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("images", "masks", "metadata_json")
    OUTPUT_TOOLTIPS = (
        "Prepared square images: per photo the main crop first, then its augmentations.",
        "Foreground masks (1 = person) matching the images.",
        "JSON list: crop box, face box, rescue rung, background method, augmentation and source photo of every "
        "output. Connect it to LoRATrainAdaptive's prep_metadata so validation holds out whole photos.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "One or more photos of the person."}),
                "size": (
                    "INT",
                    {
                        "default": 768,
                        "min": 64,
                        "max": 4096,
                        "step": 8,
                        "tooltip": "Output side in px (square).",
                    },
                ),
                "face_fraction": (
                    "FLOAT",
                    {
                        "default": 0.40,
                        "min": 0.05,
                        "max": 0.95,
                        "step": 0.01,
                        "tooltip": "Face width as a fraction of the output width.",
                    },
                ),
                "background": (
                    ["auto", "matting", "grabcut", "none"],
                    {
                        "default": "auto",
                        "tooltip": "auto: a local u2net / isnet-general-use model from models/rembg if present, else GrabCut "
                        "(embedded, no download). none keeps the background.",
                    },
                ),
                "background_color": (
                    "STRING",
                    {"default": "#FFFFFF", "tooltip": "Color behind the person (hex)."},
                ),
                "multiple_faces": (
                    ["largest", "error"],
                    {
                        "default": "largest",
                        "tooltip": "With several faces: keep the largest, or stop with an error.",
                    },
                ),
                "output": (
                    ["main + augmentations", "main only"],
                    {
                        "default": "main + augmentations",
                        "tooltip": "Output only the single prepared image per photo, or add the variants.",
                    },
                ),
                "rotations": (
                    "STRING",
                    {
                        "default": "-10, -5, 5, 10",
                        "tooltip": "Rotation augmentations in degrees (comma-separated, around the face).",
                    },
                ),
                "crop_scales": (
                    "STRING",
                    {
                        "default": "0.6",
                        "tooltip": "Scaled centre crops around the face (0.6 = 60 %, facial reinforcement).",
                    },
                ),
                "backend": (
                    BACKEND_CHOICES,
                    {
                        "default": "auto",
                        "tooltip": "Face backend: insightface if its models exist, else dlib.",
                    },
                ),
            }
        }

    def prepare(
        self,
        images,
        size,
        face_fraction,
        background,
        background_color,
        multiple_faces,
        output,
        rotations,
        crop_scales,
        backend,
    ):
        from ..core.background import failed
        from ..core.prep import PrepOptions

        opts = PrepOptions(
            size=int(size),
            face_fraction=float(face_fraction),
            background=background,
            background_color=parse_color(background_color),
            multiple_faces=multiple_faces,
            rotations=parse_float_list(rotations, "rotations"),
            crop_scales=parse_float_list(crop_scales, "crop_scales"),
            augment=output != "main only",
            model_dirs=model_folder_paths("rembg"),
        )
        opts.validate()
        photos = image_to_numpy(images, "images")
        engine = face_engine(backend)
        progress = Progress(len(photos))
        prepared = []
        for i, photo in enumerate(photos):
            outs = prepare_one(photo, opts, engine, i)
            if failed(outs[0].meta["background"]):
                _log.warning(
                    "IdentityLock FaceCropPrep: image %d: background removal failed, the background was kept: %s",
                    i,
                    outs[0].meta["background"],
                )
            prepared.extend(outs)
            progress(i + 1, len(photos), outs[0].image)
        meta = [p.meta for p in prepared]
        return (
            numpy_to_image([p.image for p in prepared]),
            numpy_to_mask([p.mask for p in prepared]),
            json.dumps(meta, indent=1),
        )


def prepare_one(photo, opts, engine, index: int):
    """core.prep.prepare_image, with anything but our own errors turned into one sentence naming the image."""
    from ..core.prep import prepare_image

    try:
        return prepare_image(photo, opts, engine, index=index)
    except IdentityLockError:
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        raise ImageInputError(
            f"image {index} of the batch could not be prepared ({type(exc).__name__}: {text}); "
            "check that it is a normal photo, or remove it from the batch"
        ) from exc


NODE_CLASS_MAPPINGS = {"FaceCropPrep": FaceCropPrep}
NODE_DISPLAY_NAME_MAPPINGS = {"FaceCropPrep": "Face Crop Prep (IdentityLock)"}
