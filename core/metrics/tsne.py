"""2-D identity map (t-SNE) of face vectors: tight clusters = consistent identity, scatter = drift.

t-SNE costs O(n log n) per iteration with a large constant (on the shared machine, loaded: 26.5 CPU-s for 1,000
faces and 1,000 iterations, 14.3 s for 500 iterations, 6.1 s for 600 faces and 500 iterations), and thousands of
points make an unreadable 380-pixel map anyway. So above
``MAX_POINTS`` faces the map is drawn for a seeded sample (every reference face up to the cap, then a random
draw of the candidates), and above ``FULL_ITER_POINTS`` it runs ``LONG_RUN_ITER`` iterations instead of
scikit-learn's 1,000 (half the cost; the layout has settled by then). Up to 500 faces the map is as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_POINTS = 600
FULL_ITER_POINTS = 500
LONG_RUN_ITER = 500


def map_sample(kinds: Sequence[str], cap: int | None = None, seed: int = 0) -> np.ndarray:
    """Sorted indices of the faces drawn on the map: all of them when they fit, else references first."""
    cap = MAX_POINTS if cap is None else int(cap)
    n = len(kinds)
    if n <= cap:
        return np.arange(n)
    refs = np.array([i for i, k in enumerate(kinds) if k == "reference"], dtype=np.intp)[:cap]
    rest = np.array([i for i, k in enumerate(kinds) if k != "reference"], dtype=np.intp)
    rng = np.random.default_rng(seed)
    drawn = rng.choice(rest, size=min(len(rest), cap - len(refs)), replace=False)
    return np.sort(np.concatenate([refs, drawn]))


def identity_map(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Project ``[N, D]`` L2-normalised vectors to ``[N, 2]`` with cosine t-SNE (PCA for fewer than 5 points).

    Perplexity follows the sample size (t-SNE needs perplexity < N); the seed makes the map reproducible.
    """
    v = np.asarray(vectors, dtype=np.float64)
    n = len(v)
    if n == 0:
        return np.zeros((0, 2))
    if n < 5:
        centred = v - v.mean(axis=0)
        if n == 1 or not np.any(centred):
            return np.zeros((n, 2))
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        out = centred @ vt[:2].T
        if out.shape[1] < 2:
            out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
        return out
    from sklearn.manifold import TSNE

    perplexity = float(max(2.0, min(30.0, (n - 1) / 3.0)))
    extra = {"max_iter": LONG_RUN_ITER} if n > FULL_ITER_POINTS else {}
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        metric="cosine",
        init="pca",
        random_state=seed,
        n_jobs=1,
        **extra,
    )
    return tsne.fit_transform(v.astype(np.float32))
