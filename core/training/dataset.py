"""Training data: images (IMAGE batch from FaceCropPrep or a folder with captions), trigger-word captions,
the 80/20 train/validation split, flips and color jitter, and latent/text caching.
"""

from __future__ import annotations

import os
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


def split_indices(n: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Shuffled 80/20 split (at least one image on each side)."""
    if n < 2:
        raise ImageInputError("at least 2 images are needed for a train/validation split")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n).tolist()
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    return sorted(order[n_val:]), sorted(order[:n_val])


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
):
    """Split, augment the training side only, and cache latents and text embeddings into a TrainData."""
    from .records import TrainData

    check_images(images)
    train_idx, val_idx = split_indices(len(images), val_fraction, seed)
    train_imgs, src = augment([images[i] for i in train_idx], flip, jitter, jitter_copies, seed)
    train_caps = [captions[train_idx[j]] for j in src]
    val_caps = [captions[i] for i in val_idx]
    return TrainData(
        latents=encode_images(train_imgs),
        cond=encode_text(train_caps),
        val_latents=encode_images([images[i] for i in val_idx]),
        val_cond=encode_text(val_caps),
        captions=list(captions),
    )
