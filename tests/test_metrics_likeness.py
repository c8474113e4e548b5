"""Likeness in the units papers use: mean cosine to the reference centroid and to single reference photos, in
the CSV, the JSON summary and the dashboard (ArcFace vectors through the ONNX stand-in pack; dlib vectors)."""

from __future__ import annotations

import csv
import json

import numpy as np
from identitylock.core.faces import analyze, clear_engine_cache, get_engine
from identitylock.core.faces.types import Face, FaceAnalysis
from identitylock.core.images import load_image
from identitylock.core.metrics import AnalyzedImage, build_metrics
from identitylock.core.metrics.report import write_report

from .insightface_standins import make_pack


def _fake(name: str, vec: np.ndarray, backend: str = "dlib", model: str = "m") -> AnalyzedImage:
    face = Face(bbox=np.array([100.0, 100.0, 300.0, 300.0]), det_score=0.99, detector="hog")
    face.embedding = (vec / np.linalg.norm(vec)).astype(np.float32)
    return AnalyzedImage(name, FaceAnalysis([face], (512, 512), backend, model, ("direct",), "direct"))


def test_single_photo_and_centroid_likeness_are_computed_and_reported(tmp_path):
    rng = np.random.default_rng(3)
    person = rng.standard_normal(128)
    refs = [_fake(f"ref{i}.png", person + 0.5 * rng.standard_normal(128)) for i in range(4)]
    cands = [_fake(f"gen{i}.png", person + 0.8 * rng.standard_normal(128)) for i in range(5)]
    result = build_metrics(refs, {"lora": cands}, n_boot=50, tsne=False)
    R = np.stack([r.analysis.primary.embedding for r in refs]).astype(np.float64)
    rows = {r.name: r for r in result.rows}
    for c in cands:
        v = c.analysis.primary.embedding.astype(np.float64)
        assert np.isclose(rows[c.name].single_ref_sim, np.mean(R @ v))
        centroid = R.mean(axis=0) / np.linalg.norm(R.mean(axis=0))
        assert np.isclose(rows[c.name].similarity, centroid @ v)
    k = 2
    assert np.isclose(rows["ref2.png"].single_ref_sim, np.mean(np.delete(R, k, axis=0) @ R[k]))
    g = result.groups["lora"]
    assert np.isclose(g.single_ref_mean, np.mean([rows[c.name].single_ref_sim for c in cands]))
    assert (
        g.single_ref_mean < g.mean
    )  # a centroid averages the references' noise away: single photos score lower

    paths = write_report(result, tmp_path, thumbnails=False)
    with open(paths["csv"], newline="") as fh:
        table = {r["name"]: r for r in csv.DictReader(fh)}
    assert np.isclose(float(table["gen0.png"]["single_ref_sim"]), rows["gen0.png"].single_ref_sim, atol=1e-5)
    summary = json.loads(paths["json"].read_text())
    assert np.isclose(summary["groups"]["lora"]["single_ref_mean"], g.single_ref_mean, atol=1e-5)
    assert "single_ref_mean" in summary["likeness"]["to_single_photos"]
    html = paths["html"].read_text()
    assert "mean to single photos" in html and f"{g.single_ref_mean:.3f}" in html


def test_arcface_likeness_through_the_onnx_pack(tmp_path, faces_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    clear_engine_cache()
    pack = make_pack(tmp_path / "models" / "buffalo_l")
    eng = get_engine("arcface-onnx", model_dirs=[tmp_path])
    items = []
    for name in ("london004_1", "london004_2", "london025_1"):
        img = np.ascontiguousarray(load_image(faces_dir / f"{name}.jpg")[:640, :640])
        items.append(AnalyzedImage(name, analyze(img, eng, rescue=False)))
    result = build_metrics(items[:2], {"gen": items[2:]}, n_boot=20, tsne=False)
    summary = result.summary_dict()
    assert summary["backend"] == "insightface" and "ArcFace" in summary["likeness"]["units"]
    assert result.groups["gen"].single_ref_mean is not None and pack.exists()
    clear_engine_cache()
