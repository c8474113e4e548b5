"""End-to-end portfolio: real photos through the streaming pipeline, catalogs validated, bad input handled."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from identitylock.core.catalog import (
    CURATED_CATALOG_SCHEMA,
    MASTER_CATALOG_SCHEMA,
    SCORES_SCHEMA,
    SELECTION_REPORT_SCHEMA,
    validate,
)
from identitylock.core.cli import main as cli_main
from identitylock.core.curate import curate, iter_records
from identitylock.core.errors import IdentityLockError
from identitylock.core.images import load_image, save_png
from identitylock.core.quality import QualityConfig

FAST = {"rescue": False}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, faces_dir):
    d = tmp_path_factory.mktemp("gen")
    sub = d / "batch2"
    sub.mkdir()
    names = ["london001_1", "london001_2", "london025_1", "london025_2", "london004_1", "london006_1"]
    for i, n in enumerate(names):
        img = load_image(faces_dir / f"{n}.jpg")
        img = cv2.resize(img, (768, 768), interpolation=cv2.INTER_AREA)
        target = (sub if i % 2 else d) / f"char_seed_{100 + i % 3}_{n}.png"
        save_png(img, target)
        if n == "london025_1":  # a recompressed copy: near-duplicate
            cv2.imwrite(
                str(d / "char_seed_200_copy.jpg"),
                cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 85],
            )
    shutil.copy(faces_dir / "multi_2.jpg", d / "two_faces.jpg")
    shutil.copy(faces_dir / "noface_1.jpg", d / "no_face.jpg")
    (d / "broken.png").write_bytes(b"not an image")
    # same file name in two folders (collision in curated/images)
    save_png(cv2.resize(load_image(faces_dir / "london042_1.jpg"), (640, 640)), d / "same.png")
    save_png(cv2.resize(load_image(faces_dir / "london042_2.jpg"), (512, 512)), sub / "same.png")
    return d


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("portfolio") / "p"
    res = curate(
        [folder], out, target=5, k=3, config=QualityConfig.for_strategy("C"), workers=2, analyze_kwargs=FAST
    )
    return out, res


def test_portfolio_files_and_schemas(run):
    out, res = run
    master = json.loads((out / "master_image_catalog.json").read_text())
    curated = json.loads((out / "curated" / "curated_catalog.json").read_text())
    report = json.loads((out / "selection_report.json").read_text())
    assert validate(master, MASTER_CATALOG_SCHEMA) == []
    assert validate(curated, CURATED_CATALOG_SCHEMA) == []
    assert validate(report, SELECTION_REPORT_SCHEMA) == []
    assert (out / "selection_log.txt").read_text().startswith("IdentityLock curation run")
    # the validator is not a rubber stamp
    broken = json.loads(json.dumps(curated))
    broken["catalog"][0]["quality_score"] = 140
    del broken["catalog"][0]["seed"]
    assert len(validate(broken, CURATED_CATALOG_SCHEMA)) == 2
    for e in curated["catalog"]:
        link = out / "curated" / e["image"]
        assert link.exists() and link.is_symlink()
    assert len({e["filename"] for e in curated["catalog"]}) == len(curated["catalog"])


def test_reasons_duplicates_and_unreadable(run):
    out, res = run
    by_name = {e["filename"]: e for e in res.master["catalog"]}
    assert by_name["two_faces.jpg"]["quality"]["reason"] == "multiple_faces"
    assert by_name["no_face.jpg"]["quality"]["reason"] == "no_face"
    assert (
        by_name["broken.png"]["status"] == "unreadable"
        and "not a readable image" in by_name["broken.png"]["error"]
    )
    assert [u["path"].endswith("broken.png") for u in res.report["unreadable"]] == [True]
    dup_pair = {
        by_name["char_seed_200_copy.jpg"]["status"],
        by_name["char_seed_102_london025_1.png"]["status"],
    }
    assert "duplicate" in dup_pair, dup_pair
    assert res.report["counts"]["duplicates"] >= 1
    assert by_name["char_seed_102_london025_1.png"]["seed"] == 102


def test_selection_respects_target_and_seeds(run):
    _, res = run
    sel = [e for e in res.master["catalog"] if e["status"] == "selected"]
    assert len(sel) == min(5, res.report["counts"]["passed"]) and len(sel) == len(res.curated["catalog"])
    scores = [e["quality_score"] for e in res.curated["catalog"]]
    assert scores == sorted(scores, reverse=True)
    assert all("tier_20" in e["training_tiers"] for e in res.curated["catalog"])


def test_rerun_does_not_mix(folder, run, tmp_path):
    out, res = run
    with pytest.raises(IdentityLockError, match="already holds a curation run"):
        curate([folder], out, target=5, workers=1, analyze_kwargs=FAST)
    small = tmp_path / "small"
    small.mkdir()
    for p in sorted(folder.glob("char_seed_*.png"))[:3]:
        shutil.copy(p, small / p.name)
    shutil.copytree(out, tmp_path / "p2", symlinks=True)
    res2 = curate(
        [small],
        tmp_path / "p2",
        target=50,
        k=8,
        overwrite=True,
        workers=1,
        analyze_kwargs=FAST,
        config=QualityConfig.for_strategy("C"),
        link_mode="copy",
    )
    files = list((tmp_path / "p2" / "curated" / "images").iterdir())
    assert len(files) == res2.report["counts"]["selected"] <= 3 and not any(f.is_symlink() for f in files)
    assert res2.master["counts"]["total"] == 3
    assert any("target 50" in w for w in res2.report["warnings"])
    assert any("using k=" in w or "one cluster" in w for w in res2.report["warnings"])


def test_empty_folder_and_bad_args(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(IdentityLockError, match="no images found"):
        curate([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(IdentityLockError, match="no such file"):
        curate([tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(IdentityLockError, match="target"):
        curate([tmp_path / "empty"], tmp_path / "out", target=0)
    assert cli_main(["curate", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2


def test_streaming_records_in_order(folder):
    paths = sorted(folder.rglob("*.png"))[:4]
    recs = list(iter_records(paths, workers=2, analyze_kwargs=FAST, window=2))
    assert [r.path for r in recs] == [str(p) for p in paths]
    assert all(r.features is None or r.features.dtype == np.float32 for r in recs)


def test_quality_cli(folder, tmp_path):
    out = tmp_path / "scores.json"
    rc = cli_main(
        [
            "quality",
            str(folder / "batch2"),
            "--out",
            str(out),
            "--quality",
            "C",
            "--no-rescue",
            "-q",
            "--workers",
            "1",
        ]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    assert validate(doc, SCORES_SCHEMA) == [] and doc["counts"]["total"] == 4


def test_nodes_run_without_comfyui(faces_dir):
    import torch
    from identitylock.nodes.curation import ClusterSelect, QualityScore

    imgs = [
        cv2.resize(load_image(faces_dir / f"{n}.jpg"), (384, 384))
        for n in ("london001_1", "london025_1", "noface_1")
    ]
    batch = torch.from_numpy(np.stack(imgs).astype(np.float32) / 255.0)
    passing, rejected, scores, summary, preview = QualityScore().run(
        batch, "C aggressive", 0.5, 0.3, 0.2, "dlib", True
    )
    assert rejected.shape[0] >= 1 and json.loads(scores)["counts"]["total"] == 3 and "no_face" in summary
    assert preview.shape[-1] == 3

    class FakeClipVision:  # stands in for comfy.clip_vision.ClipVisionModel: encode_image(IMAGE).image_embeds
        def encode_image(self, image):
            class Out:
                image_embeds = image.mean(dim=(1, 2))

            return Out()

    selected, catalog, text = ClusterSelect().run(
        batch, 2, 2, "balanced", "C aggressive", True, "dlib", FakeClipVision(), "1,2,3"
    )
    cat = json.loads(catalog)
    assert cat["curated"]["embedding"] == "comfyui:clip_vision" and selected.shape[0] == len(
        cat["curated"]["catalog"]
    )
    with pytest.raises(IdentityLockError):
        ClusterSelect().run(batch, 2, 2, "balanced", "C aggressive", True, "dlib", None, "1,2")
