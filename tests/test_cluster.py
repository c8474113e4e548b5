"""Clustering recovers separated groups; selection honours seeds and target; near-duplicates; CLIP path."""

from __future__ import annotations

import json
from collections import Counter

import cv2
import numpy as np
import pytest
from identitylock.core.cluster import (
    Candidate,
    ClipEmbedder,
    cluster,
    fallback_features,
    near_duplicates,
    phash,
    select,
)
from identitylock.core.errors import IdentityLockError


def _group_image(group: int, rng: np.random.Generator, size: int = 160) -> np.ndarray:
    """Four visually distinct families: color + stripe orientation, with jitter and noise."""
    colors = [(200, 60, 60), (60, 180, 70), (60, 80, 210), (220, 200, 60)]
    img = np.zeros((size, size, 3), np.float32)
    img[:] = colors[group]
    yy, xx = np.mgrid[0:size, 0:size]
    shift = rng.integers(0, 12)
    coord = [yy, xx, yy + xx, (yy // 20 + xx // 20) * 20][group] + shift
    stripes = ((coord // 10) % 2).astype(np.float32)[..., None]
    img = img * (0.65 + 0.35 * stripes)
    img += rng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def groups():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    images = [_group_image(int(g), rng) for g in labels]
    return images, labels


def _purity(pred: np.ndarray, truth: np.ndarray) -> bool:
    """Every predicted cluster holds one true group and vice versa (a perfect matching)."""
    pairs = set(zip(pred.tolist(), truth.tolist()))
    return len(pairs) == len(set(pred.tolist())) == len(set(truth.tolist()))


def test_clustering_recovers_groups(groups):
    images, labels = groups
    x = np.stack([fallback_features(im) for im in images])
    assert x.shape == (40, 326) and np.isfinite(x).all()
    res = cluster(x, 4)
    assert res.k == 4 and _purity(res.labels, labels)
    auto = cluster(x, "auto")
    # silhouette may split a family (stripe phase) but must never merge two families
    assert 4 <= auto.k <= 6 and auto.silhouette > 0.3
    assert all(len({t for p, t in zip(auto.labels, labels) if p == c}) == 1 for c in set(auto.labels))


def test_k_larger_than_images_is_reduced(groups):
    images, _ = groups
    x = np.stack([fallback_features(im) for im in images[:5]])
    res = cluster(x, 8)
    assert res.k == 5 and any("using k=5" in n for n in res.notes)
    assert cluster(x[:1], 8).k == 1
    assert cluster(np.zeros((0, 326)), 8).k == 0


def test_near_duplicates_removed(groups, faces_dir):
    from identitylock.core.images import load_image, resize_long_side

    images, _ = groups
    a = resize_long_side(load_image(faces_dir / "london001_1.jpg"), 384)[0]
    recompressed = cv2.imdecode(
        cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_UNCHANGED
    )
    resized = cv2.GaussianBlur(cv2.resize(cv2.resize(a, (200, 200)), (384, 384)), (0, 0), 1.0)
    other = resize_long_side(load_image(faces_dir / "london004_1.jpg"), 384)[0]  # same studio, another person
    hashes = [phash(a), phash(recompressed), phash(resized), phash(other), phash(images[25])]
    scores = [50.0, 60.0, 40.0, 70.0, 65.0]
    dup = near_duplicates(scores, hashes=hashes)
    # the best of the three copies (index 1) is kept; the other two point at it; distinct images stay
    assert dup == {0: 1, 2: 1}
    emb = np.stack([fallback_features(im) for im in (a, recompressed, images[15])])
    assert near_duplicates([1, 2, 3], embeddings=emb, min_cosine=0.98) == {0: 1}


def _cands(seeds_per_cluster: dict[int, list[tuple[int, float]]]) -> list[Candidate]:
    out, idx = [], 0
    for cl, items in seeds_per_cluster.items():
        for seed, sc in items:
            out.append(Candidate(idx, sc, cl, seed))
            idx += 1
    return out


@pytest.fixture
def skewed():
    # 3 clusters; seed 1 owns the best images everywhere, other seeds are slightly worse
    rng = np.random.default_rng(1)
    data = {}
    for cl in range(3):
        items = [(1, 95 - i * 0.1) for i in range(8)]
        items += [(s, 80 + rng.random()) for s in (2, 3, 4, 5) for _ in range(3)]
        data[cl] = items
    return _cands(data)


def test_selection_target_and_seed_diversity(skewed):
    by_index = {c.index: c for c in skewed}
    for strategy in ("quality-first", "balanced", "diversity-first"):
        picked = select(skewed, 12, strategy)
        assert len(picked) == 12 and len(set(picked)) == 12
    qf = [by_index[i] for i in select(skewed, 12, "quality-first")]
    assert all(c.seed == 1 for c in qf)  # quality-first ignores seeds
    bal = [by_index[i] for i in select(skewed, 12, "balanced")]
    per_cluster = Counter((c.cluster, c.seed) for c in bal)
    assert max(per_cluster.values()) == 1  # no seed repeats inside a cluster
    assert Counter(c.cluster for c in bal) == {0: 4, 1: 4, 2: 4}
    assert len({c.seed for c in bal}) == 5
    div = [by_index[i] for i in select(skewed, 10, "diversity-first")]
    assert {c.seed for c in div} == {1, 2, 3, 4, 5} and len({c.cluster for c in div}) == 3
    assert np.mean([c.score for c in qf]) > np.mean([c.score for c in bal])
    assert select(skewed, 1000, "balanced") == sorted(by_index, key=lambda i: (-by_index[i].score, i))
    with pytest.raises(ValueError):
        select(skewed, 5, "random")


def test_images_without_seed_count_as_own_group():
    cands = [Candidate(i, 90 - i, 0, None) for i in range(6)]
    assert select(cands, 3, "balanced") == [0, 1, 2]


# -- CLIP path -------------------------------------------------------------------------------------------------------
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
}


def test_clip_path_with_random_tiny_open_clip(tmp_path, groups):
    import open_clip
    import torch

    cfg = tmp_path / "IdentityLockTinyCLIP.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model("IdentityLockTinyCLIP", pretrained=None)
    ckpt = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    emb = ClipEmbedder.from_open_clip("IdentityLockTinyCLIP", str(ckpt), str(cfg))
    images, labels = groups
    x = emb.embed(images)
    assert x.shape == (40, 32) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    again = ClipEmbedder(model, emb.preprocess).embed(images[:3])
    assert np.allclose(again, x[:3], atol=1e-5)  # the checkpoint round-trips the random weights
    res = cluster(x, 4)
    assert res.k == 4 and len(res.labels) == 40
    with pytest.raises(IdentityLockError, match="needs --clip-checkpoint"):
        ClipEmbedder.from_open_clip("IdentityLockTinyCLIP", None)
