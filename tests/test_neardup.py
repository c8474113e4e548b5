"""Curation at scale: the indexed near-duplicate search and the sampled silhouette give the old answers.

The near-duplicate search is exact, so it is checked against the original one-by-one loop (kept here as the
oracle) on small random sets built to be full of near-duplicates. The silhouette is sampled above
SILHOUETTE_SAMPLE images, so its bound is checked instead. Speed is the benchmarks' business
(``benchmarks/curation.py --selection-only``); no test here times anything.
"""

from __future__ import annotations

import numpy as np
import pytest
from identitylock.core import selection as selection_mod
from identitylock.core.cluster import SILHOUETTE_SAMPLE, cluster
from identitylock.core.neardup import hamming, near_duplicates


def _oracle(scores, hashes=None, embeddings=None, max_hamming=6, min_cosine=0.97) -> dict[int, int]:
    """The pre-index algorithm: every image against every kept image, best score first."""
    h = None if hashes is None else np.array([int(x) & 0xFFFFFFFFFFFFFFFF for x in hashes], dtype=np.uint64)
    e = None
    if embeddings is not None:
        e = np.asarray(embeddings, dtype=np.float32)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    kept: list[int] = []
    dup: dict[int, int] = {}
    for i in np.argsort(-np.asarray(scores, dtype=float), kind="stable"):
        i = int(i)
        close = np.zeros(len(kept), dtype=bool)
        if kept and h is not None:
            close |= hamming(int(h[i]), h[np.array(kept)]) <= max_hamming
        if kept and e is not None:
            close |= (e[np.array(kept)] @ e[i]) >= min_cosine
        hit = np.flatnonzero(close)
        if len(hit):
            dup[i] = kept[int(hit[0])]
        else:
            kept.append(i)
    return dup


def _hashes(rng: np.random.Generator, n: int, families: int) -> list[int]:
    """Hashes in families: a random root with 0-12 flipped bits, so many pairs sit near any threshold."""
    roots = [int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2)) for _ in range(families)]
    out = []
    for _ in range(n):
        h = roots[int(rng.integers(0, families))]
        for b in rng.choice(64, size=int(rng.integers(0, 13)), replace=False):
            h ^= 1 << int(b)
        out.append(h if rng.random() < 0.8 else h - 2**64)  # some negative (signed) spellings
    return out


def _embeddings(rng: np.random.Generator, n: int, d: int, families: int) -> np.ndarray:
    roots = rng.normal(size=(families, d))
    noise = rng.uniform(0.0, 0.5, size=(n, 1))  # cosine to the root from ~1.0 down past 0.97
    return roots[rng.integers(0, families, n)] + noise * rng.normal(size=(n, d)) / np.sqrt(d)


@pytest.mark.parametrize("max_hamming", [-1, 0, 3, 4, 6, 7, 8, 11, 12, 16, 40, 64])
def test_hash_search_equals_the_old_loop(max_hamming):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 700))
        scores = rng.integers(0, 20, n).astype(float)  # many ties: the stable order matters
        hashes = _hashes(rng, n, families=int(rng.integers(1, 40)))
        got = near_duplicates(scores, hashes=hashes, max_hamming=max_hamming)
        assert got == _oracle(scores, hashes=hashes, max_hamming=max_hamming)
        if 0 <= max_hamming <= 10:
            assert got, "the families must produce duplicates, or the test proves nothing"


def test_embedding_and_combined_search_equal_the_old_loop(monkeypatch):
    import identitylock.core.neardup as nd

    # small blocks and column chunks, so a few hundred images cross every block and chunk boundary
    monkeypatch.setattr(nd, "QUERY_BLOCK", 16)
    monkeypatch.setattr(nd, "COLUMN_CHUNK", 23)
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        n = int(rng.integers(40, 600))
        d = int(rng.choice([8, 64, 512]))
        scores = rng.normal(size=n).round(1)
        emb = _embeddings(rng, n, d, families=int(rng.integers(1, 30)))
        got = near_duplicates(scores, embeddings=emb)
        assert got == _oracle(scores, embeddings=emb)
        hashes = _hashes(rng, n, families=int(rng.integers(1, 30)))
        both = near_duplicates(scores, hashes=hashes, embeddings=emb, max_hamming=5, min_cosine=0.98)
        assert both == _oracle(scores, hashes, emb, max_hamming=5, min_cosine=0.98)
        assert got and both, "the families must produce duplicates, or the test proves nothing"


def test_thousands_of_identical_images_keep_one():
    scores = np.arange(5000, dtype=float)
    dup = near_duplicates(scores, hashes=[0xDEADBEEF] * 5000, embeddings=np.ones((5000, 16)))
    assert len(dup) == 4999 and set(dup.values()) == {4999}


def test_fixed_k_silhouette_is_exact_up_to_the_sample_size():
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 1.0, size=(150, 12)) for c in (-3, 0, 3)])
    res = cluster(x, 3)
    xs = x - x.mean(axis=0)
    xs /= np.linalg.norm(xs, axis=1, keepdims=True)
    assert res.silhouette == pytest.approx(float(silhouette_score(xs, res.labels)), abs=1e-12)
    assert not any("sample" in n for n in res.notes)


def test_sampled_silhouette_stays_within_its_bound():
    """Above SILHOUETTE_SAMPLE images the silhouette is a sample mean: within 0.06 of the full one."""
    from sklearn.metrics import silhouette_score

    n = int(SILHOUETTE_SAMPLE * 2.5)
    for seed, spread in ((1, 0.6), (2, 1.5), (3, 4.0)):  # well separated -> overlapping clusters
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(6, 20)) * 3
        x = centres[rng.integers(0, 6, n)] + rng.normal(size=(n, 20)) * spread
        res = cluster(x, 6)
        xs = x - x.mean(axis=0)
        xs /= np.linalg.norm(xs, axis=1, keepdims=True)
        full = float(silhouette_score(xs, res.labels))
        assert abs(res.silhouette - full) <= 0.06, (seed, res.silhouette, full)
        assert any(f"sample of {SILHOUETTE_SAMPLE}" in note for note in res.notes)


def _records(n: int, outliers: int):
    from identitylock.core.quality import ImageMetrics, QualityResult
    from identitylock.core.records import ImageRecord

    m = ImageMetrics(768, 768, 1, 1, 100.0, 100.0, 50.0, 0.9, 0.3, 0.0)

    rng = np.random.default_rng(0)
    person = rng.normal(size=128)
    recs = []
    for i in range(n):
        ident = person + rng.normal(size=128) * (3.0 if i < outliers else 0.05)
        ident /= np.linalg.norm(ident)
        q = QualityResult(metrics=m, scores={}, total=float(rng.uniform(40, 90)), passed=True, reasons=[])
        recs.append(
            ImageRecord(
                path=f"/x/img_{i}.png",
                meta={"seed": i % 7},
                quality=q,
                features=rng.normal(size=16).astype(np.float32),
                phash=int(rng.integers(0, 2**63)),
                identity=ident.astype(np.float32),
            )
        )
    return recs


def test_identity_outliers_are_not_rebuilt_into_a_set_per_image(monkeypatch):
    """Regression: ``i not in set(outliers)`` inside the comprehension built one set per passing image."""
    calls = []

    def counting_set(*args):
        calls.append(1)
        return set(*args)

    monkeypatch.setattr(selection_mod, "set", counting_set, raising=False)
    recs = _records(120, outliers=10)
    sel = selection_mod.select_records(recs, target=10, k=3, max_drift=0.3)
    assert len(sel.identity_outliers) == 10 and not set(sel.identity_outliers) & set(sel.selected)
    assert len(calls) <= 2, f"set() built {len(calls)} times for 120 images"


def test_catalog_does_not_search_the_outlier_list_per_record():
    """Regression: ``i in sel.identity_outliers`` (a list) was tested for every record: O(n * outliers)."""
    from identitylock.core.portfolio_catalogs import build_catalogs

    class CountingList(list):
        lookups = 0

        def __contains__(self, item):
            CountingList.lookups += 1
            return super().__contains__(item)

    recs = _records(60, outliers=6)
    sel = selection_mod.select_records(recs, target=8, k=2, max_drift=0.3)
    sel.identity_outliers = CountingList(sel.identity_outliers)
    settings = {"strategy": "balanced", "target": 8, "embedding": "x", "quality": {"thresholds": {}}}
    master, _, report = build_catalogs(recs, sel, "run", ["/x"], settings, None)
    statuses = [e["status"] for e in master["catalog"]]
    assert statuses.count("rejected") == 6 and all(
        master["catalog"][i]["quality"]["reason"] == "identity_outlier" for i in sel.identity_outliers
    )
    assert sum(r["size"] for r in report["clusters"]) == len(sel.clusters)
    assert CountingList.lookups == 0
