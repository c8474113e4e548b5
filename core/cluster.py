"""Grouping and selection: image embeddings, near-duplicate removal, K-Means and seed-diverse selection.

Embeddings come from CLIP when the user has a model (ComfyUI's CLIP_VISION in the node, a local open_clip
checkpoint in the core) or from the embedded fallback, which needs no weights and costs ~2 ms per image:

* color layout: the image at 8x8 in CIE Lab (192 values) — background, clothing color, lighting;
* edge layout: gradient-orientation histograms on a 4x4 grid, 8 bins each (128 values) — composition, framing;
* face geometry: yaw, pitch, roll, face size and face centre (6 values, weighted up) — pose and shot type.

Each block is standardised and L2-normalised, so no block dominates by its length. Compared with CLIP it sees
layout and pose rather than meaning ("beach" vs "office" only through color and structure), which is what
separates generated portrait variations in practice; CLIP is better when scenes differ in content but share
a palette. Near-duplicates are found with a 64-bit DCT perceptual hash (Hamming distance), or with cosine
similarity of the embeddings (the search itself, indexed for 50,000 images, is in ``neardup.py``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelNotFoundError
from .neardup import hamming, near_duplicates  # noqa: F401  (re-exported: the search lives in neardup.py)

SELECTION_STRATEGIES = ("quality-first", "balanced", "diversity-first")
FALLBACK_NAME = "embedded-layout-v1"
FACE_BLOCK_WEIGHT = 1.0
# Silhouettes are O(n^2): above this many images they are computed on a seeded sample of this size. The mean
# of 2,000 per-image values in [-1, 1] is within 0.06 of the full mean with probability 1 - 1e-6 (Hoeffding).
SILHOUETTE_SAMPLE = 2000


# -- embedded fallback features ------------------------------------------------------------------------------
def fallback_features(image: np.ndarray, analysis: Any = None) -> np.ndarray:
    """Weight-free embedding of a uint8 RGB image (see module doc); float32, length 326."""
    import cv2

    small = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(cv2.resize(small, (8, 8), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2LAB)
    color = lab.astype(np.float32).reshape(-1) / 255.0
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.hypot(gx, gy)
    ang = (np.arctan2(gy, gx) % np.pi) / np.pi * 8.0  # unsigned orientation, 8 bins
    bins = np.minimum(ang.astype(np.int32), 7)
    edges = np.zeros((4, 4, 8), np.float32)
    cell = 16
    for i in range(4):
        for j in range(4):
            b = bins[i * cell : (i + 1) * cell, j * cell : (j + 1) * cell].ravel()
            m = mag[i * cell : (i + 1) * cell, j * cell : (j + 1) * cell].ravel()
            edges[i, j] = np.bincount(b, weights=m, minlength=8)[:8]
    edges = np.sqrt(edges.reshape(-1))
    face = np.zeros(6, np.float32)
    faces = getattr(analysis, "faces", None) or []
    if faces:
        f = faces[0]
        h, w = image.shape[:2]
        cx, cy = f.center
        pose = f.pose
        face[:] = (
            (pose.yaw / 90.0) if pose else 0.0,
            (pose.pitch / 90.0) if pose else 0.0,
            (pose.roll / 90.0) if pose else 0.0,
            f.width / w,
            cx / w - 0.5,
            cy / h - 0.5,
        )
    blocks = [_unit(color - color.mean()), _unit(edges), face * FACE_BLOCK_WEIGHT]
    return np.concatenate(blocks).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


def phash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash (robust to resizing, mild blur and recompression; not to flips or crops)."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    dct = cv2.dct(small)[:8, :8].reshape(-1)
    med = np.median(dct[1:])
    bits = dct > med
    return int(sum(1 << i for i, b in enumerate(bits) if b))


# -- clustering -----------------------------------------------------------------------------------------------
@dataclass
class Clustering:
    labels: np.ndarray
    k: int
    silhouette: float | None
    notes: list[str] = field(default_factory=list)


def _prepare(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cluster(
    embeddings: np.ndarray,
    k: int | str = 8,
    *,
    k_range: tuple[int, int] = (2, 12),
    random_state: int = 42,
) -> Clustering:
    """K-Means on centred, L2-normalised embeddings (cosine geometry). ``k='auto'`` picks k by silhouette.

    k larger than the number of distinct images is reduced (with a note); fewer than 2 images gives one cluster.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(embeddings)
    notes: list[str] = []
    if n == 0:
        return Clustering(np.zeros(0, dtype=int), 0, None, ["no images to cluster"])
    x = _prepare(embeddings)
    distinct = len(np.unique(np.round(x, 6), axis=0))
    if n < 3 or distinct < 2:
        return Clustering(np.zeros(n, dtype=int), 1, None, [f"{n} image(s): one cluster"])

    def fit(kk: int) -> np.ndarray:
        return KMeans(n_clusters=kk, n_init=4, random_state=random_state).fit_predict(x)

    if isinstance(k, str):
        if k != "auto":
            raise ValueError(f"k must be a positive integer or 'auto', got {k!r}")
        lo, hi = max(2, k_range[0]), min(k_range[1], distinct - 1, n - 1)
        best: tuple[float, int, np.ndarray] | None = None
        rng = np.random.default_rng(random_state)
        sample = rng.choice(n, size=min(n, 1000), replace=False)
        for kk in range(lo, max(lo, hi) + 1):
            labels = fit(kk)
            if len(set(labels[sample])) < 2:
                continue
            s = float(silhouette_score(x[sample], labels[sample]))
            if best is None or s > best[0] + 1e-9:
                best = (s, kk, labels)
        if best is None:
            return Clustering(np.zeros(n, dtype=int), 1, None, ["silhouette found no structure: one cluster"])
        notes.append(
            f"k chosen by silhouette over {lo}..{max(lo, hi)}: k={best[1]} (silhouette {best[0]:.3f})"
        )
        return Clustering(best[2], best[1], best[0], notes)
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > distinct:
        notes.append(f"k={k} is more than the {distinct} distinct images; using k={distinct}")
        k = distinct
    labels = fit(k) if k > 1 else np.zeros(n, dtype=int)
    sil = None
    if 1 < k < n:
        idx = np.arange(n)
        if n > SILHOUETTE_SAMPLE:
            rng = np.random.default_rng(random_state)
            idx = np.sort(rng.choice(n, size=SILHOUETTE_SAMPLE, replace=False))
            notes.append(f"silhouette on a seeded sample of {SILHOUETTE_SAMPLE} of the {n} images")
        if 1 < len(set(labels[idx].tolist())) < len(idx):
            sil = float(silhouette_score(x[idx], labels[idx]))
    return Clustering(labels, k, sil, notes)


# -- selection -------------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    index: int  # caller's index
    score: float
    cluster: int
    seed: int | None


def _seed_key(c: Candidate) -> Any:
    # images without a seed each count as their own seed group
    return c.seed if c.seed is not None else ("noseed", c.index)


def select(candidates: Sequence[Candidate], target: int, strategy: str = "balanced") -> list[int]:
    """Pick up to ``target`` candidates (returns their ``index`` values, best first).

    * quality-first: each cluster contributes its top ceil(target/k) by quality, seeds ignored; the rest of the
      target is filled by the best remaining images.
    * balanced (default): clusters take turns (best cluster first); each turn takes the cluster's best image
      whose seed is not yet used in that cluster and, while possible, not used more than its fair share overall.
    * diversity-first: seeds take turns; each turn takes the seed's best image from a cluster that seed has not
      covered yet, so every seed and every cluster is represented before any repeats.
    """
    if strategy not in SELECTION_STRATEGIES:
        raise ValueError(
            f"unknown selection strategy {strategy!r}; choose one of {', '.join(SELECTION_STRATEGIES)}"
        )
    target = int(target)
    if target <= 0 or not candidates:
        return []
    ranked = sorted(candidates, key=lambda c: (-c.score, c.index))
    if target >= len(ranked):
        return [c.index for c in ranked]
    by_cluster: dict[int, list[Candidate]] = defaultdict(list)
    for c in ranked:
        by_cluster[c.cluster].append(c)
    cluster_order = sorted(by_cluster, key=lambda k: (-by_cluster[k][0].score, k))
    chosen: list[Candidate] = []
    taken: set[int] = set()

    def take(c: Candidate) -> None:
        chosen.append(c)
        taken.add(c.index)

    if strategy == "quality-first":
        quota = math.ceil(target / len(by_cluster))
        for k in cluster_order:
            for c in by_cluster[k][:quota]:
                take(c)
        chosen.sort(key=lambda c: (-c.score, c.index))
        chosen = chosen[:target]
        taken = {c.index for c in chosen}
        for c in ranked:
            if len(chosen) >= target:
                break
            if c.index not in taken:
                take(c)
    elif strategy == "balanced":
        n_seeds = len({_seed_key(c) for c in ranked})
        fair = max(1, math.ceil(target / n_seeds))
        seed_count: dict[Any, int] = defaultdict(int)
        cluster_seeds: dict[int, set] = defaultdict(set)
        while len(chosen) < target:
            progressed = False
            for k in cluster_order:
                if len(chosen) >= target:
                    break
                pool = [c for c in by_cluster[k] if c.index not in taken]
                if not pool:
                    continue
                pick = (
                    next(
                        (
                            c
                            for c in pool
                            if _seed_key(c) not in cluster_seeds[k] and seed_count[_seed_key(c)] < fair
                        ),
                        None,
                    )
                    or next((c for c in pool if _seed_key(c) not in cluster_seeds[k]), None)
                    or next((c for c in pool if seed_count[_seed_key(c)] < fair), None)
                    or pool[0]
                )
                take(pick)
                cluster_seeds[k].add(_seed_key(pick))
                seed_count[_seed_key(pick)] += 1
                progressed = True
            if not progressed:
                break
    else:  # diversity-first
        by_seed: dict[Any, list[Candidate]] = defaultdict(list)
        for c in ranked:
            by_seed[_seed_key(c)].append(c)
        seed_order = sorted(by_seed, key=lambda s: (-by_seed[s][0].score, str(s)))
        covered: dict[Any, set] = defaultdict(set)
        cluster_count: dict[int, int] = defaultdict(int)
        while len(chosen) < target:
            progressed = False
            for s in seed_order:
                if len(chosen) >= target:
                    break
                pool = [c for c in by_seed[s] if c.index not in taken]
                if not pool:
                    continue
                fresh = [c for c in pool if c.cluster not in covered[s]]
                # prefer the least-represented cluster, then quality
                pick = min(fresh or pool, key=lambda c: (cluster_count[c.cluster], -c.score, c.index))
                take(pick)
                covered[s].add(pick.cluster)
                cluster_count[pick.cluster] += 1
                progressed = True
            if not progressed:
                break
    chosen.sort(key=lambda c: (-c.score, c.index))
    return [c.index for c in chosen[:target]]


# -- CLIP embeddings ---------------------------------------------------------------------------------------------
_REMOTE_MARKERS = ("hf-hub:", "://")


def check_clip_source(model_name: str, checkpoint: str | None, config: str | None = None) -> None:
    """Refuse, in one sentence, any CLIP source that is not a local file (IdentityLock never downloads)."""
    if not model_name or any(m in str(model_name) for m in _REMOTE_MARKERS):
        raise ModelNotFoundError(
            f"--clip-model {model_name!r} names a model hub, not a local model: give an open_clip architecture name "
            "(e.g. ViT-B-32) and --clip-checkpoint PATH to a checkpoint file you have (IdentityLock never downloads)"
        )
    if not checkpoint:
        raise ModelNotFoundError(
            f"--clip-model {model_name} needs --clip-checkpoint PATH, a local open_clip checkpoint file "
            "(IdentityLock never downloads weights)"
        )
    if any(m in str(checkpoint) for m in _REMOTE_MARKERS) or not Path(checkpoint).is_file():
        raise ModelNotFoundError(
            f"--clip-checkpoint {checkpoint!r} is not an existing local file: give the path of a checkpoint file "
            "you have (pretrained tags such as laion2b_s34b_b79k, hf-hub: names and URLs are never downloaded)"
        )
    if config and not Path(config).is_file():
        raise ModelNotFoundError(
            f"--clip-config {config!r} is not an existing local file: give a model-config JSON path"
        )


class ClipEmbedder:
    """Image embeddings from an open_clip model (a local checkpoint; never downloaded).

    ``ClipEmbedder.from_open_clip("ViT-B-32", "/models/clip/ViT-B-32.pt")`` or wrap a model you built:
    ``ClipEmbedder(model, preprocess)``. ``config`` is an optional open_clip model-config JSON (custom models).
    """

    def __init__(
        self, model: Any, preprocess: Callable[[Any], Any], name: str = "open_clip", batch_size: int = 32
    ):
        self.model = model.eval()
        self.preprocess = preprocess
        self.name = name
        self.batch_size = batch_size

    @classmethod
    def from_open_clip(
        cls, model_name: str, checkpoint: str | None, config: str | None = None, device: str = "cpu"
    ) -> ClipEmbedder:
        """Build from a local checkpoint file. Anything that could reach the network (an open_clip pretrained
        tag such as ``laion2b_s34b_b79k``, an ``hf-hub:`` name, a URL) is refused before open_clip is called."""
        check_clip_source(model_name, checkpoint, config)
        import open_clip

        try:
            if config:
                open_clip.add_model_config(config)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=checkpoint, device=device
            )
        except Exception as exc:
            raise ModelNotFoundError(
                f"cannot load the CLIP model {model_name!r} from {checkpoint} ({exc.__class__.__name__}: {exc}); "
                "check that the checkpoint file matches the model name"
            ) from None
        return cls(model, preprocess, name=f"open_clip:{model_name}")

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 RGB arrays -> L2-normalised float32 [n, d]."""
        import torch
        from PIL import Image

        out = []
        for i in range(0, len(images), self.batch_size):
            batch = torch.stack(
                [self.preprocess(Image.fromarray(im)) for im in images[i : i + self.batch_size]]
            )
            with torch.no_grad():
                e = self.model.encode_image(batch).float()
            e = e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            out.append(e.cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)
