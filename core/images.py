"""Reading and normalising images: every entry point turns its input into uint8 RGB ``HxWx3`` here.

One place for the messy cases (greyscale, RGBA, 16-bit, palette, EXIF rotation, corrupt files, tiny or huge
images, NaN tensors) so that every node and command reports them the same way.
"""

from __future__ import annotations

import io
import logging
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .errors import ImageInputError

MIN_SIDE = 64
MAX_SIDE = 8192
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def check_size(width: int, height: int, name: str = "image") -> None:
    """Reject images we cannot analyze meaningfully (too small for a face, too large for memory)."""
    if min(width, height) < MIN_SIDE:
        raise ImageInputError(
            f"{name} is {width}x{height} px; IdentityLock needs at least {MIN_SIDE} px on each side. "
            "Use a larger photo or upscale it first."
        )
    if max(width, height) > MAX_SIDE:
        raise ImageInputError(
            f"{name} is {width}x{height} px; the limit is {MAX_SIDE} px on the longest side. "
            "Downscale it first (faces do not need more)."
        )


def pil_to_rgb_array(img, name: str = "image") -> np.ndarray:
    """Convert any PIL image mode (L, LA, P, RGBA, I;16, I, F, CMYK...) to uint8 RGB.

    Transparent pixels are composited on white so that alpha cut-outs keep a neutral background.
    """
    from PIL import Image, ImageOps

    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF must not make a readable image unreadable
        pass
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "L")
        mode = "L"
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageInputError(f"{name}: could not convert image mode {mode!r} to RGB")
    return np.ascontiguousarray(rgb)


def load_image(path: str | os.PathLike, check: bool = True) -> np.ndarray:
    """Read an image file as uint8 RGB; raise ImageInputError with the file name when it cannot be used.

    Only pixels matter here: a PNG whose text chunks PIL refuses (a zTXt over PIL's size limit, a broken text
    chunk) is read again without its text, so hostile metadata never makes a good photo unreadable.
    """
    from PIL import Image

    path = Path(path)
    if not path.exists():
        raise ImageInputError(f"{path}: file not found")
    if path.is_dir():
        raise ImageInputError(f"{path}: is a folder, not an image")
    if not path.is_file():  # a pipe or a device would block the reader or never end
        raise ImageInputError(f"{path}: not a regular file (a pipe or device), not an image")
    try:
        return _decode(Image.open(path), path, check)
    except ImageInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"{path}: image is too large to decode safely ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        first = exc
    stripped = _png_without_text(path)
    if stripped is not None:
        try:
            return _decode(Image.open(io.BytesIO(stripped)), path, check)
        except ImageInputError:
            raise
        except Exception:  # the pixels are broken too: report the original problem
            pass
    if isinstance(first, PermissionError):
        raise ImageInputError(f"{path}: cannot read the file (permission denied)") from first
    raise ImageInputError(f"{path}: not a readable image ({first.__class__.__name__}: {first})") from first


def _decode(opened, path: Path, check: bool) -> np.ndarray:
    with opened as img:
        if check:
            check_size(img.width, img.height, name=str(path))
        img.load()
        return pil_to_rgb_array(img, name=str(path))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _png_without_text(path: Path, limit: int = 512 * 1024 * 1024) -> bytes | None:
    """The PNG's bytes with its text chunks removed, or None when it is not a well-formed PNG stream."""
    try:
        if path.stat().st_size > limit:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(_PNG_SIGNATURE):
        return None
    out, pos, removed = [data[:8]], 8, False
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return None
        if kind in _PNG_TEXT_CHUNKS:
            removed = True
        else:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    return b"".join(out) if removed else None


def array_to_uint8_rgb(array: np.ndarray, name: str = "image", check: bool = True) -> np.ndarray:
    """Normalise an array (float 0..1 or uint8; HxW, HxWx1, HxWx3, HxWx4) to uint8 RGB.

    Float arrays are taken to be ComfyUI-style 0..1; NaN or infinite values are an error, not silently zeroed.
    """
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageInputError(f"{name}: expected an HxWxC image, got shape {tuple(np.shape(array))}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageInputError(f"{name}: image is empty (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageInputError(
                f"{name} contains NaN or infinite values; the upstream node produced a broken image "
                "(check the VAE decode / model precision)."
            )
        arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = (arr[:, :, :3].astype(np.float32) * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)
    if check:
        check_size(arr.shape[1], arr.shape[0], name=name)
    return np.ascontiguousarray(arr)


def iter_image_files(
    paths: Iterable[str | os.PathLike], recursive: bool = True, problems: list[str] | None = None
) -> Iterator[Path]:
    """Expand files and folders into image files, sorted for reproducibility.

    Files named explicitly are yielded even without an image extension (so the caller can report them as
    unreadable); folders contribute only files with a known image extension. A folder that cannot be listed
    (no read permission, I/O error) is never skipped in silence: its message goes to ``problems`` when given
    (the caller counts it as bad input), else it is logged as a warning.
    """
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            yield from sorted(_walk(p, recursive, problems))
        else:
            yield p


def _walk(folder: Path, recursive: bool, problems: list[str] | None) -> list[Path]:
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()  # (device, inode) of folders visited: symlink loops end here
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            st = current.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(current) as entries:
                listing = list(entries)
        except OSError as exc:
            _report(
                problems, current, f"cannot read this folder ({exc.strerror or exc}); its images were skipped"
            )
            continue
        for entry in listing:
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                if recursive:
                    stack.append(Path(entry.path))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                if is_file:
                    found.append(Path(entry.path))
                else:
                    _report(
                        problems, entry.path, "not a regular file (a broken link, pipe or device); skipped"
                    )
    return found


class ListingProblem(str):
    """A message ``"<path>: <reason>"`` that also keeps ``path`` and ``reason`` apart for callers that need them."""

    path: str
    reason: str

    def __new__(cls, path: str, reason: str) -> ListingProblem:
        obj = super().__new__(cls, f"{path}: {reason}")
        obj.path, obj.reason = path, reason
        return obj


def _report(problems: list[str] | None, path: str | os.PathLike, reason: str) -> None:
    message = ListingProblem(str(path), reason)
    if problems is not None:
        problems.append(message)
    else:
        logging.getLogger("IdentityLock").warning("warning: %s", message)


def resize_long_side(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the longest side is ``long_side``; returns the image and the scale applied (<= 1)."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, long_side / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    out = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return out, scale


def save_png(image: np.ndarray, path: str | os.PathLike, text: dict[str, str] | None = None) -> Path:
    """Write uint8 RGB as PNG with optional text chunks (ComfyUI-style metadata).

    Atomic, with the user's normal permissions (core.fileio): readers never see half a PNG, a failed write
    leaves no temporary behind.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from .fileio import atomic_write_with

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    picture = Image.fromarray(image)
    return atomic_write_with(path, lambda tmp: picture.save(tmp, format="PNG", pnginfo=info))
