"""Generated images that contain no face (noise, gradients, textures) and hostile shapes, for the face tests
and benchmarks/face_score_floor.py. Deterministic: the same seed gives the same pixels."""

from __future__ import annotations

import numpy as np

# Shapes (height, width) that once crashed dlib (64x4096 -> 8x512 at the slow rung) or are merely odd.
HOSTILE_SHAPES = [
    (64, 4096),
    (4096, 64),
    (1, 300),
    (300, 1),
    (1, 1),
    (2, 2),
    (7, 9),
    (16, 16),
    (64, 64),
    (8, 512),
]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, color: bool) -> np.ndarray:
    import cv2

    small = rng.random((cells, cells, 3 if color else 1)).astype(np.float32)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    big = big.reshape(size, size, -1)
    if big.shape[2] == 1:
        big = np.repeat(big, 3, axis=2)
    return big


def no_face_images(seed: int = 0, count: int = 24, size: int = 512) -> list[tuple[str, np.ndarray]]:
    """``count`` (name, uint8 RGB image) pairs cycling through noise, smooth noise, gradients and textures."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = []
    for i in range(count):
        kind = i % 8
        if kind == 0:
            name, img = "uniform-noise", rng.random((size, size, 3))
        elif kind == 1:
            name, img = "grey-noise", np.repeat(rng.random((size, size, 1)), 3, axis=2)
        elif kind == 2:
            cells = int(rng.integers(4, 24))
            name, img = f"smooth-noise-{cells}", _smooth_noise(rng, size, cells, color=True)
        elif kind == 3:
            cells = int(rng.integers(6, 40))
            name, img = f"smooth-grey-noise-{cells}", _smooth_noise(rng, size, cells, color=False)
        elif kind == 4:
            a = rng.uniform(0, np.pi)
            g = np.cos(a) * xx + np.sin(a) * yy
            name, img = "linear-gradient", np.stack([g, 1 - g, 0.5 * g + 0.25], axis=2)
        elif kind == 5:
            cx, cy = rng.random(2)
            r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
            name, img = "radial-gradient", np.repeat((1 - np.clip(r, 0, 1))[..., None], 3, axis=2)
        elif kind == 6:
            n = int(rng.integers(4, 32))
            board = ((np.floor(xx * n) + np.floor(yy * n)) % 2).astype(np.float32)
            name, img = f"checkerboard-{n}", np.repeat(board[..., None], 3, axis=2)
        else:
            fx, fy = rng.uniform(2, 30, 2)
            plaid = 0.5 + 0.25 * np.sin(2 * np.pi * fx * xx) + 0.25 * np.sin(2 * np.pi * fy * yy)
            name, img = "plaid", np.stack([plaid, plaid[::-1], plaid[:, ::-1]], axis=2)
        out.append((f"{i:02d}-{name}", (np.clip(img, 0, 1) * 255).astype(np.uint8)))
    return out


def noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
