"""Near-duplicate search that stays fast at 50,000 images: multi-index hashing on pHash, blocked cosine search.

The rule is the greedy one curation always used: images are visited best score first; an image is a duplicate
of the *earliest kept* image it is close to (pHash Hamming distance <= ``max_hamming``, or embedding cosine >=
``min_cosine``), otherwise it is kept. As before, only kept images are compared with; what changed is how they
are found.

* **pHash, multi-index hashing** (Norouzi et al.). The 64 bits are cut into four 16-bit blocks, each with a
  table of the kept images by block value. Two hashes within ``max_hamming`` bits differ in at most
  ``max_hamming // 4`` bits of at least one block (pigeonhole), so a query looks up, in each table, its own
  block value and every value within that radius (17 look-ups per block at the default 6), and checks only the
  kept images found there, exactly. With hashes spread like random ones a bucket holds about ``kept / 65,536``
  unrelated images, so the cost per query stays nearly flat up to hundreds of thousands of images; hashes that
  crowd into a few block values (many look-alike images that are still more than ``max_hamming`` apart) make
  fuller buckets, slower but still exact. A threshold of 12 bits or more gains little from the index and falls
  back to one vectorised scan per image.
* **Embeddings, blocked exact search.** Queries go in blocks of 256 against the kept vectors held contiguously
  in kept order (one matrix product per block and column chunk, bounded memory); the first kept column at or
  above ``min_cosine`` is the answer, exactly as the one-by-one loop found it. This is still ``n * kept * d``
  multiply-adds, but in BLAS instead of a Python loop that copied the kept vectors once per image.

Both give exactly the result of the original one-by-one loop (tests/test_neardup.py checks old against new).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, combinations

import numpy as np

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_MASK64 = 0xFFFFFFFFFFFFFFFF
QUERY_BLOCK = 256  # embedding queries per matrix product
COLUMN_CHUNK = 16384  # kept vectors per matrix product (256 x 16384 float32 = 16 MB)
BLOCKS, BLOCK_BITS, BLOCK_MASK = 4, 16, 0xFFFF  # multi-index hashing: four 16-bit substrings
MAX_BLOCK_RADIUS = 2  # max_hamming up to 11: at most 4 * 137 look-ups per query; looser -> one plain scan


def hamming(a: int, hashes: np.ndarray) -> np.ndarray:
    """Hamming distances between one 64-bit hash and an array of them (uint64)."""
    x = np.bitwise_xor(hashes, np.uint64(a & _MASK64))
    return _POPCOUNT[np.ascontiguousarray(x).view(np.uint8).reshape(-1, 8)].sum(axis=1)


class HashIndex:
    """The kept 64-bit hashes, searchable for the earliest one within ``max_hamming`` bits."""

    def __init__(self, max_hamming: int, capacity: int):
        self.t = int(max_hamming)
        self.hashes = np.zeros(max(capacity, 1), dtype=np.uint64)
        self.n = 0
        radius = self.t // BLOCKS  # pigeonhole: some block differs in at most this many bits
        self.indexed = 0 <= radius <= MAX_BLOCK_RADIUS
        self.tables: list[dict[int, list[int]]] = [{} for _ in range(BLOCKS)] if self.indexed else []
        # every BLOCK_BITS-bit pattern with at most ``radius`` bits set: the neighbours to look up per block
        self.flips = [0]
        for r in range(1, radius + 1) if self.indexed else ():
            self.flips += [sum(1 << b for b in bits) for bits in combinations(range(BLOCK_BITS), r)]

    def first_within(self, h: int) -> int | None:
        """Position (in kept order) of the earliest kept hash within ``max_hamming`` of ``h``, or None."""
        if self.n == 0 or self.t < 0:
            return None
        if not self.indexed:  # a loose threshold: a plain scan is as good as any index
            hit = np.flatnonzero(hamming(h, self.hashes[: self.n]) <= self.t)
            return int(hit[0]) if len(hit) else None
        found = []
        for k, table in enumerate(self.tables):
            key = (h >> (k * BLOCK_BITS)) & BLOCK_MASK
            for f in self.flips:
                bucket = table.get(key ^ f)
                if bucket:
                    found.append(bucket)
        if not found:
            return None
        pos = np.fromiter(chain.from_iterable(found), dtype=np.int64)
        hit = pos[hamming(h, self.hashes[pos]) <= self.t]
        return int(hit.min()) if len(hit) else None

    def add(self, h: int) -> None:
        self.hashes[self.n] = np.uint64(h)
        for k, table in enumerate(self.tables):
            table.setdefault((h >> (k * BLOCK_BITS)) & BLOCK_MASK, []).append(self.n)
        self.n += 1


def _first_at_least(q: np.ndarray, kept: np.ndarray, threshold: float) -> np.ndarray:
    """For each row of ``q``: the first column of ``kept`` with ``q @ kept.T >= threshold``, or -1."""
    first = np.full(len(q), -1, dtype=np.int64)
    for c0 in range(0, len(kept), COLUMN_CHUNK):
        todo = np.flatnonzero(first < 0)
        if not len(todo):
            break
        close = (q[todo] @ kept[c0 : c0 + COLUMN_CHUNK].T) >= threshold
        any_close = close.any(axis=1)
        first[todo[any_close]] = c0 + close[any_close].argmax(axis=1)
    return first


def near_duplicates(
    scores: Sequence[float],
    *,
    hashes: Sequence[int] | None = None,
    embeddings: np.ndarray | None = None,
    max_hamming: int = 6,
    min_cosine: float = 0.97,
) -> dict[int, int]:
    """Map duplicate index -> the index it duplicates; the best-scoring image of each group is kept.

    With ``hashes``: pHash Hamming distance <= ``max_hamming``. With ``embeddings``: cosine >= ``min_cosine``.
    Both may be given (either test marks a duplicate). Memory is O(n); see the module doc for the cost.
    """
    n = len(scores)
    if n < 2 or (hashes is None and embeddings is None):
        return {}
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    hidx = None
    if hashes is not None:
        hv = [int(x) & _MASK64 for x in hashes]
        hidx = HashIndex(max_hamming, n)
    e = kept_e = None
    if embeddings is not None:
        e = np.asarray(embeddings, dtype=np.float32)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        kept_e = np.empty((n, e.shape[1]), dtype=np.float32)
    kept: list[int] = []
    dup: dict[int, int] = {}
    for b0 in range(0, n, QUERY_BLOCK):
        block = order[b0 : b0 + QUERY_BLOCK]
        n_before = len(kept)
        # embedding hits among images kept before this block, all in one product
        e_first = None if e is None else _first_at_least(e[block], kept_e[:n_before], min_cosine)
        for j, i in enumerate(block):
            i = int(i)
            hits = []
            if hidx is not None:
                p = hidx.first_within(hv[i])
                if p is not None:
                    hits.append(p)
            if e is not None:
                if e_first[j] >= 0:
                    hits.append(int(e_first[j]))
                elif len(kept) > n_before:  # images kept earlier in this very block
                    c = np.flatnonzero(kept_e[n_before : len(kept)] @ e[i] >= min_cosine)
                    if len(c):
                        hits.append(n_before + int(c[0]))
            if hits:
                dup[i] = kept[min(hits)]
                continue
            if hidx is not None:
                hidx.add(hv[i])
            if e is not None:
                kept_e[len(kept)] = e[i]
            kept.append(i)
    return dup
