"""Selection over image records: identity drift, near-duplicate removal, K-Means and seed-diverse picks.

Shared by the ``curate`` command (records from files) and the ClusterSelect node (records from an IMAGE batch);
it sees numbers only, never pixels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .cluster import Candidate, cluster, near_duplicates, select
from .records import ImageRecord


@dataclass
class Selection:
    selected: list[int]  # record indices, best first
    duplicates: dict[int, int]  # record index -> index of the image it duplicates
    clusters: dict[int, int]  # record index -> cluster id (passing, non-duplicate images)
    ranks: dict[int, int]  # record index -> rank among passing non-duplicates by quality
    k: int
    silhouette: float | None
    drift: dict[int, float]
    identity_outliers: list[int]
    notes: list[str]


def identity_drift(records: Sequence[ImageRecord], indices: Iterable[int]) -> dict[int, float]:
    """1 - cosine to the centroid of the identity vectors of ``indices`` (an outlier = another person)."""
    idx = [i for i in indices if records[i].identity is not None]
    if len(idx) < 3:
        return {}
    dims = Counter(records[i].identity.shape[0] for i in idx)
    dim = dims.most_common(1)[0][0]
    idx = [i for i in idx if records[i].identity.shape[0] == dim]
    v = np.stack([records[i].identity for i in idx]).astype(np.float64)
    c = v.mean(axis=0)
    c /= max(np.linalg.norm(c), 1e-12)
    return {i: float(1.0 - v[j] @ c) for j, i in enumerate(idx)}


def select_records(
    records: Sequence[ImageRecord],
    *,
    target: int = 70,
    k: int | str = 8,
    strategy: str = "balanced",
    embeddings: np.ndarray | None = None,
    embedding_index: Sequence[int] | None = None,
    dedup: bool = True,
    max_hamming: int = 6,
    min_cosine: float = 0.97,
    max_drift: float | None = None,
) -> Selection:
    """Near-duplicate removal, K-Means and seed-diverse selection over the records that passed quality.

    ``embeddings`` (optional, e.g. CLIP) are rows for ``embedding_index`` (record indices); otherwise each
    record's fallback features are used.
    """
    notes: list[str] = []
    passing = [i for i, r in enumerate(records) if r.passed]
    drift = identity_drift(records, passing)
    outliers: list[int] = []
    if max_drift is not None and drift:
        outliers = [i for i in passing if drift.get(i, 0.0) > max_drift]
        rejected = set(outliers)  # built once: a set per element made this O(passing * outliers)
        passing = [i for i in passing if i not in rejected]
        if outliers:
            notes.append(f"{len(outliers)} image(s) rejected as identity outliers (drift > {max_drift})")
    if embeddings is not None:
        row = {
            int(i): j
            for j, i in enumerate(embedding_index if embedding_index is not None else range(len(records)))
        }
        missing = [i for i in passing if i not in row]
        if missing:
            raise ValueError(f"embeddings missing for {len(missing)} passing image(s)")
        emb = {i: np.asarray(embeddings[row[i]], np.float32) for i in passing}
    else:
        emb = {i: records[i].features for i in passing}
    duplicates: dict[int, int] = {}
    if dedup and len(passing) > 1:
        local = near_duplicates(
            [records[i].quality.total for i in passing],
            hashes=[records[i].phash or 0 for i in passing],
            embeddings=np.stack([emb[i] for i in passing]) if embeddings is not None else None,
            max_hamming=max_hamming,
            min_cosine=min_cosine,
        )
        duplicates = {passing[a]: passing[b] for a, b in local.items()}
    unique = [i for i in passing if i not in duplicates]
    ranks = {i: r for r, i in enumerate(sorted(unique, key=lambda i: (-records[i].quality.total, i)))}
    if not unique:
        return Selection(
            [], duplicates, {}, ranks, 0, None, drift, outliers, notes + ["no image passed quality"]
        )
    cl = cluster(np.stack([emb[i] for i in unique]), k)
    notes.extend(cl.notes)
    clusters = {i: int(label) for i, label in zip(unique, cl.labels)}
    cands = [Candidate(i, records[i].quality.total, clusters[i], records[i].seed) for i in unique]
    chosen = select(cands, target, strategy)
    if len(chosen) < target:
        notes.append(
            f"target {target} but only {len(unique)} image(s) passed quality and de-duplication; selected "
            f"{len(chosen)}. Loosen the quality strategy (C), calibrate on good images, or generate more."
        )
    return Selection(chosen, duplicates, clusters, ranks, cl.k, cl.silhouette, drift, outliers, notes)
