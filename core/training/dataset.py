"""Training data: images (IMAGE batch from FaceCropPrep or a folder with captions), trigger-word captions,
the 80/20 train/validation split by source photo, flips and color jitter, and latent/text caching.

Why by source photo: FaceCropPrep turns each photo into several variants (main, rotations, a centre crop). A
split by image put rotated copies of training photos on the validation side, so every validation-driven decision
measured memorisation. Variants of one photo now always land on the same side.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import IdentityLockError, ImageInputError

CAPTION_TEMPLATES = (
    "a photo of {trigger}",
    "{trigger}, detailed face",
    "portrait of {trigger}, high quality photo",
    "a close-up photo of {trigger}",
    "{trigger}, realistic photo",
)


def check_trigger(trigger: str | None) -> str:
    if trigger is None or not str(trigger).strip():
        raise IdentityLockError(
            "trigger word is missing: give a rare token such as 'lsaperson' that you will put in prompts"
        )
    trigger = str(trigger).strip()
    if any(c in trigger for c in "{}\n"):
        raise IdentityLockError(f"trigger word {trigger!r} must not contain braces or line breaks")
    return trigger


def check_images(images: Sequence[np.ndarray]) -> None:
    """Clear messages for zero images, one image (no validation split) and mixed sizes."""
    if len(images) == 0:
        raise ImageInputError(
            "no training images: connect FaceCropPrep's IMAGE output or a folder with images"
        )
    if len(images) == 1:
        raise ImageInputError(
            "only one training image: at least 2 are needed (one is held out to measure validation loss); "
            "10-70 varied photos work best"
        )
    sizes = Counter(f"{im.shape[1]}x{im.shape[0]}" for im in images)
    if len(sizes) > 1:
        listing = ", ".join(f"{s} ({n})" for s, n in sizes.most_common())
        raise ImageInputError(
            f"training images have different sizes: {listing}; prepare them with FaceCropPrep or resize to one size"
        )
    h, w = images[0].shape[:2]
    if h % 8 or w % 8:
        raise ImageInputError(f"image size {w}x{h} must be a multiple of 8 (latents are 1/8 size)")


def load_folder(
    folder: str | os.PathLike, caption_ext: str = ".txt"
) -> tuple[list[np.ndarray], list[str | None]]:
    """Images in ``folder`` (sorted) and their same-stem caption files when present."""
    from ..images import iter_image_files, load_image

    folder = Path(folder)
    if not folder.is_dir():
        raise ImageInputError(f"image folder {folder} does not exist")
    images, captions = [], []
    for path in sorted(iter_image_files([folder], recursive=False)):
        images.append(load_image(path))
        captions.append(_read_caption(path.with_suffix(caption_ext)))
    return images, captions


def _read_caption(path: Path) -> str | None:
    """The caption file beside an image (None when absent); unreadable or non-UTF-8 text is an input error."""
    if not path.exists():
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise IdentityLockError(f"{path}: caption file is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise IdentityLockError(f"{path}: cannot read the caption file ({exc.strerror or exc})") from None


def make_captions(
    n: int, trigger: str, captions: Sequence[str | None] | None = None, template: str | None = None
) -> list[str]:
    """Caption per image: the given one (trigger prepended if absent), else ``template`` or a rotating template."""
    trigger = check_trigger(trigger)
    out = []
    for i in range(n):
        given = captions[i] if captions and i < len(captions) else None
        if given:
            out.append(given if trigger in given else f"{trigger}, {given}")
        elif template:
            out.append(
                template.replace("{trigger}", trigger)
                if "{trigger}" in template
                else f"{trigger}, {template}"
            )
        else:
            out.append(CAPTION_TEMPLATES[i % len(CAPTION_TEMPLATES)].format(trigger=trigger))
    return out


#: FaceCropPrep / ``identitylock prep`` output names: ``<stem>_main``, ``<stem>_rotate_-5``, ``<stem>_crop_60``.
_PREP_VARIANT = re.compile(r"^(?P<stem>.+)_(?:main|rotate_[+-]?\d+(?:\.\d+)?|crop_\d+)$")


def source_of_prepared(stem: str) -> str:
    """The source photo of a prepared image from its file stem ('lisa_rotate_-5' -> 'lisa'); other names as is."""
    m = _PREP_VARIANT.match(stem)
    return m.group("stem") if m else stem


def folder_sources(folder: str | os.PathLike) -> list[str]:
    """Source photo of each image :func:`load_folder` returns (same order), for the split by source.

    ``prep_metadata.json`` (written by ``identitylock prep``) names each output's source file and wins; else the
    prep file-name pattern; else every file is its own photo.
    """
    from ..images import iter_image_files

    folder = Path(folder)
    by_output: dict[str, str] = {}
    meta = folder / "prep_metadata.json"
    if meta.is_file():
        try:
            records = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            records = []  # unreadable: fall back on the file names
        for r in records if isinstance(records, list) else []:
            if isinstance(r, dict) and isinstance(r.get("output"), str) and isinstance(r.get("file"), str):
                by_output[r["output"]] = Path(r["file"]).name
    out = []
    for path in sorted(iter_image_files([folder], recursive=False)):
        out.append(by_output.get(path.name) or source_of_prepared(path.stem))
    return out


def sources_from_prep_metadata(text: str | None, n: int) -> list[str] | None:
    """Source photo of each of ``n`` images from FaceCropPrep's ``metadata_json`` (None when not given).

    Each entry's ``source_index`` is the photo's index in FaceCropPrep's input batch.
    """
    if text is None or not str(text).strip():
        return None
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        meta = None
    if not isinstance(meta, list) or not all(isinstance(m, dict) for m in meta):
        raise ImageInputError(
            "prep_metadata is not FaceCropPrep's metadata_json (a JSON list of objects): connect that output or "
            "leave the input unconnected"
        )
    if len(meta) != n:
        raise ImageInputError(
            f"prep_metadata describes {len(meta)} images but {n} images are connected: connect the images and "
            "metadata_json of the same FaceCropPrep node"
        )
    out = []
    for i, m in enumerate(meta):
        src = m.get("source_index")
        if isinstance(src, bool) or not isinstance(src, int):
            raise ImageInputError(
                f"prep_metadata entry {i} has no source_index: connect FaceCropPrep's metadata_json"
            )
        out.append(f"photo {src}")
    return out


def split_by_source(
    sources: Sequence[str], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[int], list[int], list[str], list[str]]:
    """Hold out whole source photos: (train indices, validation indices, train photos, validation photos).

    About ``val_fraction`` of the photos (at least one, never all) go to validation with every variant of
    theirs. One photo gives no honest held-out set (its variants are not independent): that is refused.
    """
    names = list(dict.fromkeys(sources))  # first-appearance order, so the split only depends on the seed
    if len(names) < 2:
        raise ImageInputError(
            f"all {len(sources)} training images are variants of one photo ({names[0] if names else '-'}): "
            "validation holds out whole photos, so give at least 2 different photos (3 or more recommended)"
        )
    order = np.random.default_rng(seed).permutation(len(names)).tolist()
    n_val = min(len(names) - 1, max(1, int(round(len(names) * val_fraction))))
    val_names = {names[i] for i in order[:n_val]}
    train_idx = [i for i, s in enumerate(sources) if s not in val_names]
    val_idx = [i for i, s in enumerate(sources) if s in val_names]
    return train_idx, val_idx, [n for n in names if n not in val_names], [n for n in names if n in val_names]


def split_indices(n: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Shuffled 80/20 split of ``n`` independent images (at least one on each side)."""
    if n < 2:
        raise ImageInputError("at least 2 images are needed for a train/validation split")
    train, val, _, _ = split_by_source([str(i) for i in range(n)], val_fraction, seed)
    return train, val


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def centre_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of ``image`` (crop, not squash), e.g. before ``resize_square``."""
    h, w = image.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return image[y : y + s, x : x + s]


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness/contrast/saturation each scaled by a factor in [1-strength, 1+strength]."""
    img = image.astype(np.float32) / 255.0
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    img = img * b
    mean = img.mean()
    img = (img - mean) * c + mean
    grey = img.mean(axis=2, keepdims=True)
    img = (img - grey) * s + grey
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def augment(
    images: Sequence[np.ndarray],
    flip: bool = False,
    jitter: float = 0.0,
    jitter_copies: int = 1,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[int]]:
    """Originals plus flipped and color-jittered copies (latents are cached, so variants are made up front).

    Returns the images and, for each, the index of the source image (to reuse its caption).
    """
    rng = np.random.default_rng(seed + 99)
    out, src = [], []
    for i, im in enumerate(images):
        variants = [im] + ([im[:, ::-1].copy()] if flip else [])
        for v in variants:
            out.append(v)
            src.append(i)
            if jitter > 0:
                for _ in range(jitter_copies):
                    out.append(color_jitter(v, jitter, rng))
                    src.append(i)
    return out, src


def prepare_data(
    images: Sequence[np.ndarray],
    captions: Sequence[str],
    encode_images: Callable[[list[np.ndarray]], object],
    encode_text: Callable[[list[str]], object],
    *,
    flip: bool = False,
    jitter: float = 0.0,
    jitter_copies: int = 1,
    val_fraction: float = 0.2,
    seed: int = 0,
    sources: Sequence[str] | None = None,
):
    """Split by source photo, augment the training side only, and cache latents and text embeddings.

    ``sources``: the source photo of each image (:func:`folder_sources`, :func:`sources_from_prep_metadata`);
    None means every image is its own photo. The split is recorded in ``TrainData.split``.
    """
    from .records import TrainData

    check_images(images)
    if sources is not None and len(sources) != len(images):
        raise ValueError(f"{len(sources)} source names for {len(images)} images")
    by = "source photo" if sources is not None else "image (no source photos given)"
    sources = list(sources) if sources is not None else [f"image {i}" for i in range(len(images))]
    train_idx, val_idx, train_src, val_src = split_by_source(sources, val_fraction, seed)
    train_imgs, src = augment([images[i] for i in train_idx], flip, jitter, jitter_copies, seed)
    train_caps = [captions[train_idx[j]] for j in src]
    val_caps = [captions[i] for i in val_idx]
    return TrainData(
        latents=encode_images(train_imgs),
        cond=encode_text(train_caps),
        val_latents=encode_images([images[i] for i in val_idx]),
        val_cond=encode_text(val_caps),
        captions=list(captions),
        split={"by": by, "train": train_src, "validation": val_src},
        val_groups=[val_src.index(sources[i]) for i in val_idx],
    )
