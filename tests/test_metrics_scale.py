"""IdentityMetrics at 10,000 candidates: blocked pairwise work, bounded bootstrap memory, a sampled t-SNE map
and a dashboard that stays under 20 MB and still opens in Chromium. Speed is benchmarks/metrics.py's business."""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from identitylock.core.faces import Face, FaceAnalysis
from identitylock.core.faces.pose import Pose
from identitylock.core.metrics import AnalyzedImage, build_metrics
from identitylock.core.metrics import stats as stats_mod
from identitylock.core.metrics import tsne as tsne_mod
from identitylock.core.metrics.copycat import nearest_references
from identitylock.core.metrics.report import PANELS, dashboard_data, write_report


def _fake(name: str, vec: np.ndarray, yaw: float = 0.0, path: str | None = None) -> AnalyzedImage:
    face = Face(
        bbox=np.array([60, 60, 260, 260], dtype=float),
        det_score=0.9,
        detector="test",
        keypoints={"eye_fl": (110.0, 130.0), "eye_fr": (210.0, 130.0), "nose": (160.0, 190.0)},
        pose=Pose(yaw=yaw, pitch=yaw / 3, roll=0.0, confidence=0.7, method="test"),
        embedding=(vec / np.linalg.norm(vec)).astype(np.float32),
    )
    res = FaceAnalysis([face], (512, 512), "dlib", "m", ("direct",), "direct")
    return AnalyzedImage(name, res, path=path)


def _people(n_ref: int, n_cand: int, seed: int = 0, paths: list[str] | None = None):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=128)
    pick = (lambda k: paths[k % len(paths)]) if paths else (lambda k: None)
    refs = [_fake(f"r{i}.jpg", base + rng.normal(scale=0.2, size=128), path=pick(i)) for i in range(n_ref)]
    cands = [
        _fake(
            f"c{i}.jpg", base + rng.normal(scale=0.3, size=128), yaw=float(rng.uniform(-30, 30)), path=pick(i)
        )
        for i in range(n_cand)
    ]
    return refs, cands


def _old_bootstrap(v, stat, n_boot, alpha, seed):
    rng = np.random.default_rng(seed)
    boots = stat(v[rng.integers(0, len(v), size=(n_boot, len(v)))], axis=1)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def test_blocked_bootstrap_gives_the_same_intervals(monkeypatch):
    monkeypatch.setattr(stats_mod, "BOOT_CELLS", 997)  # many uneven blocks
    rng = np.random.default_rng(3)
    for n in (2, 5, 333, 1500):
        v = rng.normal(size=n)
        for stat in (np.median, np.mean):
            assert stats_mod.bootstrap_ci(v, stat, 500, 0.05, 7) == _old_bootstrap(v, stat, 500, 0.05, 7)
        w = rng.normal(size=n + 3)
        r = np.random.default_rng(9)
        ma = np.median(v[r.integers(0, len(v), size=(400, len(v)))], axis=1)
        mb = np.median(w[r.integers(0, len(w), size=(400, len(w)))], axis=1)
        old = tuple(float(x) for x in np.quantile(ma - mb, [0.025, 0.975]))
        assert stats_mod.bootstrap_diff_ci(v, w, 400, 0.05, 9) == old


def test_bootstrap_memory_does_not_grow_with_resamples_times_group():
    """Regression: 2,000 resamples of a 5,000-face group held 10 million indices and values (160 MB) at once."""
    v = np.random.default_rng(0).normal(size=5000)
    tracemalloc.start()
    stats_mod.bootstrap_ci(v, np.median, 2000, 0.05, 0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40e6, f"bootstrap peaked at {peak / 1e6:.0f} MB"


def test_blocked_nearest_references_equal_the_full_matrix():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(301, 32))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    refs = v[:57]
    for exclude_self, rows in ((False, v), (True, refs)):
        sims = rows @ refs.T
        if exclude_self:
            np.fill_diagonal(sims, -np.inf)
        full_idx = np.argmax(sims, axis=1)
        for block in (1, 7, 64, 10_000):
            idx, best = nearest_references(rows, refs, exclude_self=exclude_self, block=block)
            assert (idx == full_idx).all()
            np.testing.assert_allclose(best, sims[np.arange(len(rows)), full_idx], rtol=0, atol=1e-12)


def test_nearest_references_memory_is_one_block():
    """Regression: 3,000 references against themselves built a 3,000 x 3,000 matrix (72 MB) at once."""
    v = np.random.default_rng(2).normal(size=(3000, 128))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    tracemalloc.start()
    nearest_references(v, v, exclude_self=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40e6, f"nearest_references peaked at {peak / 1e6:.0f} MB"


def test_tsne_map_is_drawn_for_a_bounded_sample_with_every_reference(monkeypatch):
    """Regression: t-SNE ran on every face (about a minute at 10,000); now on at most MAX_POINTS."""
    monkeypatch.setattr(tsne_mod, "MAX_POINTS", 25)
    refs, cands = _people(6, 60)
    m = build_metrics(refs, {"a": cands[:30], "b": cands[30:]}, n_boot=50)
    mapped = [r for r in m.rows if r.tsne_x is not None]
    assert len(mapped) == 25 and all(r.tsne_y is not None for r in mapped)
    assert {r.name for r in mapped if r.kind == "reference"} == {f"r{i}.jpg" for i in range(6)}
    again = build_metrics(refs, {"a": cands[:30], "b": cands[30:]}, n_boot=50)
    assert [r.name for r in again.rows if r.tsne_x is not None] == [r.name for r in mapped]  # seeded
    assert "sample of 25 of 66 faces" in dashboard_data(m, thumbnails=False)["tsne_note"]
    small = build_metrics(refs, {"a": cands[:10]}, n_boot=50)
    assert all(r.tsne_x is not None for r in small.rows)


def test_thumbnails_stop_at_the_byte_budget_references_first(faces_dir):
    paths = [str(faces_dir / n) for n in ("lisa_1.jpg", "lisa_2.jpg", "london001_1.jpg", "obama_1.jpg")]
    refs, cands = _people(3, 40, paths=paths)
    m = build_metrics(refs, {"a": cands}, n_boot=50, tsne=False)
    every = dashboard_data(m)
    assert all(r["thumb"] for r in every["rows"]) and every["thumbs_left_out"] == 0
    one = len(every["rows"][0]["thumb"])
    capped = dashboard_data(m, thumb_bytes=one * 8)
    have = [r for r in capped["rows"] if r["thumb"]]
    assert 8 <= len(have) <= 9 and capped["thumbs_left_out"] == len(capped["rows"]) - len(have)
    assert all(r["thumb"] for r in capped["rows"] if r["kind"] == "reference")
    sims = sorted((r["nearest_sim"] for r in capped["rows"] if r["kind"] == "candidate"), reverse=True)
    kept = {r["nearest_sim"] for r in have if r["kind"] == "candidate"}
    assert sims[0] in kept and sims[-1] in kept  # both ends of the copycat scale
    assert "path" not in capped["rows"][0] and "similarity" in capped["rows"][0]


@pytest.mark.slow
def test_ten_thousand_candidates_report_is_small_and_opens_in_chromium(faces_dir, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from headless_chromium import Browser, find_chromium

    chromium = find_chromium()
    if not chromium:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    paths = sorted(str(p) for p in faces_dir.glob("*.jpg"))
    refs, cands = _people(12, 10_000, paths=paths)
    m = build_metrics(refs, {"lora_a": cands[:5000], "lora_b": cands[5000:]})
    assert sum(r.tsne_x is not None for r in m.rows) == tsne_mod.MAX_POINTS
    html_path = write_report(m, tmp_path)["html"]
    assert html_path.stat().st_size <= 20e6, html_path.stat().st_size
    b = Browser(chromium, width=1400, height=1800, domains=("Page", "Runtime", "Log"))
    try:
        b.call("Page.navigate", url=html_path.resolve().as_uri())
        assert b.wait("document.body && document.body.dataset.ready === '1'", 300, every=0.5)
        time.sleep(1.0)
        info = b.js(
            "({plots: document.querySelectorAll('.js-plotly-plot').length,"
            " cards: document.querySelectorAll('#cards .card').length,"
            " more: !document.getElementById('more-cards').hidden,"
            " count: document.getElementById('n-cards').textContent})"
        )
        b.js("document.getElementById('more-cards').click()")
        time.sleep(0.5)
        after = b.js("document.querySelectorAll('#cards .card').length")
    finally:
        b.close()
    assert info["plots"] == len(PANELS) and info["cards"] == 300 and info["more"], info
    assert info["count"].startswith("10000 image(s)") and after == 600
    assert not b.errors(), b.errors()
