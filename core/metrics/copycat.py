"""Copycat analysis: the nearest reference of every generated face, similarity bands, black-hole ranking.

A generation that is *too* close to one training photo is memorisation, not identity. Bands are per backend,
because the cosine scales differ a lot:

- ``insightface`` (ArcFace): the MirrorMetrics seed's bands: < 0.50 low, 0.50-0.70 ok, 0.70-0.85 watch,
  > 0.85 danger.
- ``dlib`` (ResNet, 128-D): everything sits much higher. Calibrated on the shared face set
  (``python benchmarks/metrics.py --calibrate``; 25 primary faces, 25 same-person and 275 other-person pairs):
  other-person pairs 0.722-0.906 (median 0.827, 95th percentile 0.891); same-person pairs from different
  sessions 0.909-0.974; same-shoot pairs (lisa, London neutral vs smiling) 0.975-0.996; a mirrored copy of
  a reference 0.993-0.994. Hence < 0.92 low (most likely not the person: above every other-person pair but
  one), 0.92-0.97 ok, 0.97-0.99 watch (as close as two photos of one shoot), > 0.99 danger (as close as a
  flipped or re-encoded copy). dlib cannot separate "copy" from "same studio session" as well as ArcFace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# (low/ok, ok/watch, watch/danger) boundaries of cosine similarity to the nearest reference.
BANDS: dict[str, tuple[float, float, float]] = {
    "insightface": (0.50, 0.70, 0.85),
    "dlib": (0.92, 0.97, 0.99),
}
BAND_NAMES = ("low", "ok", "watch", "danger")
PAIR_BLOCK = 1024  # rows per block of pairwise similarities (1,024 x 10,000 references = 80 MB at most)
BAND_COLORS = {"low": "#9e9e9e", "ok": "#2e9d4f", "watch": "#e0a800", "danger": "#d33c3c", "failed": "#555"}
BAND_HELP = {
    "low": "identity weakly captured (may be someone else)",
    "ok": "same person, generalised",
    "watch": "very close to one reference photo",
    "danger": "near-copy of one reference photo (memorisation)",
}


def bands_for(backend: str) -> tuple[float, float, float]:
    """Band boundaries for a backend (insightface's ArcFace bands for unknown backends)."""
    return BANDS.get(backend, BANDS["insightface"])


def band_of(similarity: float | None, backend: str) -> str:
    """'low' | 'ok' | 'watch' | 'danger', or 'failed' when there is no similarity (no face)."""
    if similarity is None or not np.isfinite(similarity):
        return "failed"
    lo, mid, hi = bands_for(backend)
    if similarity < lo:
        return "low"
    if similarity < mid:
        return "ok"
    if similarity <= hi:
        return "watch"
    return "danger"


def nearest_references(
    vectors: np.ndarray, ref_vectors: np.ndarray, exclude_self: bool = False, block: int = PAIR_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """Index and cosine similarity of the nearest reference for each row of ``vectors`` (all L2-normalised).

    ``exclude_self`` (vectors *are* the references): a reference is never its own nearest neighbour.
    Rows go in blocks of ``block``, so the similarity matrix held at once is ``block x references``.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    refs = np.asarray(ref_vectors, dtype=np.float64)
    if len(vectors) == 0 or len(refs) == 0:
        return np.zeros(0, dtype=int), np.zeros(0)
    if exclude_self and len(refs) < 2:
        return np.full(len(vectors), -1), np.full(len(vectors), np.nan)
    idx = np.empty(len(vectors), dtype=np.intp)
    best = np.empty(len(vectors), dtype=np.float64)
    for r0 in range(0, len(vectors), block):
        sims = vectors[r0 : r0 + block] @ refs.T
        rows = np.arange(len(sims))
        if exclude_self:
            sims[rows, r0 + rows] = -np.inf
        idx[r0 : r0 + len(sims)] = np.argmax(sims, axis=1)
        best[r0 : r0 + len(sims)] = sims[rows, idx[r0 : r0 + len(sims)]]
        del sims  # one block alive at a time
    return idx, best


@dataclass
class BlackHole:
    reference: str
    count: int
    share: float  # of the candidates with a face
    mean_similarity: float | None
    groups: dict[str, int]

    def to_dict(self) -> dict:
        return {
            "reference": self.reference,
            "count": self.count,
            "share": round(self.share, 4),
            "mean_similarity": None if self.mean_similarity is None else round(self.mean_similarity, 5),
            "groups": dict(self.groups),
        }


def black_hole_ranking(
    references: Sequence[str],
    nearest: Sequence[str | None],
    sims: Sequence[float | None],
    groups: Sequence[str],
) -> list[BlackHole]:
    """References ranked by how many candidates point at them (most first; references never hit included).

    One reference attracting a large share of all generations dominates the training set.
    """
    hits: dict[str, list[tuple[float, str]]] = {r: [] for r in references}
    total = 0
    for ref, sim, group in zip(nearest, sims, groups):
        if ref is None or sim is None:
            continue
        total += 1
        hits.setdefault(ref, []).append((float(sim), group))
    out = []
    for ref, lst in hits.items():
        per_group: dict[str, int] = {}
        for _, g in lst:
            per_group[g] = per_group.get(g, 0) + 1
        out.append(
            BlackHole(
                reference=ref,
                count=len(lst),
                share=len(lst) / total if total else 0.0,
                mean_similarity=float(np.mean([s for s, _ in lst])) if lst else None,
                groups=per_group,
            )
        )
    out.sort(key=lambda b: (-b.count, -(b.mean_similarity or 0.0), b.reference))
    return out
