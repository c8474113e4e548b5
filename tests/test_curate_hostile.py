"""Hostile inputs for ``curate``/``quality`` and the QualityScore/ClusterSelect nodes (issue 15).

Every test here failed on the code before its fix: network access for CLIP names, tracebacks, an overwrite
that destroyed the old portfolio before building the new one, output checks after the work, a black placeholder
counted as an image, hostile PNG metadata that made a good photo "unreadable", an unreadable sub-folder skipped
without a word, a legal 255-byte name that broke the portfolio. The generated corpus at the end runs them all.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from identitylock.core.cli import main as cli_main
from identitylock.core.curate import curate
from identitylock.core.errors import IdentityLockError
from identitylock.core.images import load_image, save_png
from identitylock.core.quality import QualityConfig
from identitylock.core.records import process_path

FAST = {"rescue": False}
C = QualityConfig.for_strategy("C")


@pytest.fixture(scope="module")
def face(faces_dir):
    return cv2.resize(load_image(faces_dir / "london001_1.jpg"), (512, 512), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory, faces_dir):
    d = tmp_path_factory.mktemp("small")
    for i, n in enumerate(("london001_1", "london025_1", "london004_1")):
        img = cv2.resize(load_image(faces_dir / f"{n}.jpg"), (512, 512), interpolation=cv2.INTER_AREA)
        save_png(img, d / f"img_seed_{i}.png")
    return d


def _no_work(monkeypatch):
    """Fail the test if image analysis starts (the checks must come before the work)."""

    def boom(*a, **k):
        raise AssertionError("the work started before the input/output checks")

    monkeypatch.setattr("identitylock.core.curate.iter_records", boom)
    monkeypatch.setattr("identitylock.core.records.iter_records", boom, raising=False)


# -- 1, 2: CLIP names never reach the network, a missing checkpoint is one sentence -----------------------------
@pytest.mark.parametrize(
    "clip_args",
    [
        ["--clip-model", "ViT-B-32", "--clip-checkpoint", "laion2b_s34b_b79k"],
        ["--clip-model", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "--clip-checkpoint", "x.bin"],
        ["--clip-model", "ViT-B-32", "--clip-checkpoint", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"],
        ["--clip-model", "ViT-B-32", "--clip-checkpoint", "https://example.com/clip.pt"],
    ],
)
def test_clip_hub_names_are_refused_without_any_network(
    small_folder, tmp_path, monkeypatch, capsys, clip_args
):
    attempts = []

    def no_dns(*a, **k):
        attempts.append(("getaddrinfo", a[:2]))
        raise OSError("network disabled by the test")

    def no_connect(self, *a, **k):
        attempts.append(("connect", a))
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    _no_work(monkeypatch)
    rc = cli_main(["curate", str(small_folder), "--out", str(tmp_path / "p"), "-q", *clip_args])
    err = capsys.readouterr().err
    assert attempts == []
    assert rc == 2 and "Traceback" not in err
    assert "never download" in err and len(err.strip().splitlines()) == 1


def test_clip_model_without_checkpoint_is_a_clear_error(small_folder, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    rc = cli_main(["curate", str(small_folder), "--out", str(tmp_path / "p"), "--clip-model", "ViT-B-32"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs --clip-checkpoint" in err and "Traceback" not in err


# -- 3: --overwrite builds beside the old run, then swaps -------------------------------------------------------
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): (os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def test_interrupted_overwrite_keeps_the_old_portfolio(small_folder, tmp_path, monkeypatch):
    out = tmp_path / "p"
    curate([small_folder], out, target=2, k=1, config=C, workers=1, analyze_kwargs=FAST)
    (out / "my_notes.txt").write_text("the user's own file")
    before = _snapshot(out)
    assert "master_image_catalog.json" in before and "curated/curated_catalog.json" in before

    def interrupted(*a, **k):
        raise KeyboardInterrupt  # what Ctrl-C inside the build looks like

    monkeypatch.setattr("identitylock.core.curate.build_catalogs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        curate([small_folder], out, target=3, k=1, config=C, workers=1, analyze_kwargs=FAST, overwrite=True)
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no staging left behind
    monkeypatch.undo()
    res = curate([small_folder], out, target=3, k=1, config=C, workers=1, analyze_kwargs=FAST, overwrite=True)
    after = _snapshot(out)
    assert after["my_notes.txt"] == b"the user's own file"
    assert json.loads(after["master_image_catalog.json"])["session_info"]["run_id"] == res.report["run_id"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


# -- 4: bad output paths fail before the work, with no stray temporary ------------------------------------------
def test_curate_output_that_is_a_file_fails_before_the_work(small_folder, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    f = tmp_path / "portfolio"
    f.write_text("a file")
    rc = cli_main(["curate", str(small_folder), "--out", str(f), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "is an existing file" in err and "Traceback" not in err
    rc = cli_main(["curate", str(small_folder), "--out", str(f / "sub"), "-q"])
    assert rc == 2 and "cannot create" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["portfolio"]


def test_quality_output_that_is_a_folder_fails_before_the_work(small_folder, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    (tmp_path / "scores.json").mkdir()
    rc = cli_main(["quality", str(small_folder), "--out", str(tmp_path / "scores.json"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "is a folder" in err and "Traceback" not in err
    rc = cli_main(
        ["quality", str(small_folder), "--out", str(tmp_path / "x.json"), "--save-config", str(tmp_path)]
    )
    assert rc == 2 and "is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["scores.json"]


# -- 7: hostile PNG metadata is ignored, the image is kept ------------------------------------------------------
def _prompt(seed_json: str) -> str:
    return (
        '{"3": {"class_type": "KSampler", "inputs": {"seed": '
        + seed_json
        + ', "steps": NaN, "positive": ["6", 0]}},'
        ' "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "portrait"}}}'
    )


HOSTILE_CHUNKS = {
    "seed_nan": {"prompt": _prompt("NaN")},
    "seed_1e400": {"prompt": _prompt("1e400")},
    "seed_inf": {"prompt": _prompt("-Infinity")},
    "seed_huge_int": {"prompt": _prompt("9" * 4000)},
    "seed_fraction": {"prompt": _prompt("1.5")},
    "nested": {"prompt": "[" * 100_000 + "]" * 100_000},
    "nested_graph": {
        "prompt": '{"3": {"class_type": "KSampler", "inputs": {"seed": ' + "[" * 50_000 + "]" * 50_000 + "}}}"
    },
    "a1111_huge_seed": {"parameters": "portrait\nSteps: 20, Seed: " + "9" * 5000},
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_CHUNKS))
def test_hostile_png_metadata_keeps_the_image(face, tmp_path, kind):
    p = save_png(face, tmp_path / f"{kind}.png", HOSTILE_CHUNKS[kind])
    from identitylock.core.faces import get_engine

    rec = process_path(p, get_engine("dlib"), C, FAST)
    assert rec.error is None and rec.quality is not None and rec.quality.metrics.faces == 1
    assert rec.seed is None or (isinstance(rec.seed, int) and abs(rec.seed) < 2**64)
    json.dumps(rec.meta, allow_nan=False)  # nothing non-finite reaches a catalog


# -- 8: unreadable sub-folders are reported, long names are shortened -------------------------------------------
def test_unreadable_subfolder_is_reported_as_bad_input(small_folder, tmp_path, monkeypatch, capsys, caplog):
    import shutil

    src = tmp_path / "in"
    shutil.copytree(small_folder, src)
    locked = src / "locked"
    locked.mkdir()
    shutil.copy(small_folder / "img_seed_0.png", locked / "hidden.png")
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads any folder: make it fail the way it does for everyone else
        real = os.scandir

        def scandir(path="."):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        rc = cli_main(
            ["quality", str(src), "--out", str(tmp_path / "s.json"), "-q", "--workers", "1", "--no-rescue"]
        )
    finally:
        locked.chmod(0o755)
    doc = json.loads((tmp_path / "s.json").read_text())
    assert rc == 2 and doc["counts"]["unreadable"] == 1 and doc["counts"]["total"] == 4
    bad = [e for e in doc["images"] if e.get("error")]
    assert bad[0]["path"] == str(locked) and "cannot read this folder" in bad[0]["error"]
    assert "cannot read this folder" in caplog.text and str(locked) in capsys.readouterr().out


def test_legal_255_byte_names_colliding_in_the_portfolio(face, tmp_path):
    name = "x" * 251 + ".png"  # the longest legal name; the collision suffix used to make it 257 bytes
    save_png(face, tmp_path / "in" / name)
    save_png(cv2.flip(face, 1), tmp_path / "in" / "sub" / name)
    res = curate(
        [tmp_path / "in"],
        tmp_path / "p",
        target=5,
        k=1,
        config=C,
        workers=1,
        link_mode="copy",
        analyze_kwargs=FAST,
    )
    placed = sorted(p.name for p in (tmp_path / "p" / "curated" / "images").iterdir())
    assert res.report["counts"]["selected"] == 2 and len(placed) == 2
    assert all(len(n.encode()) <= 255 for n in placed) and placed[0] != placed[1]
    assert sorted(e["filename"] for e in res.curated["catalog"]) == placed


# -- 5: empty node results are empty, never a black image that counts -------------------------------------------
def test_nodes_empty_results_are_empty_batches_not_black_images(face):
    import torch
    from identitylock.core.errors import ImageInputError
    from identitylock.nodes.curation import ClusterSelect, QualityScore

    flat = np.full_like(face, 128)
    noise = np.random.default_rng(0).integers(0, 255, face.shape, dtype=np.uint8)
    batch = torch.from_numpy(np.stack([flat, noise]).astype(np.float32) / 255.0)
    passing, rejected, scores, summary, preview = QualityScore().run(
        batch, "B balanced", 0.5, 0.3, 0.2, "dlib", False
    )
    assert tuple(passing.shape) == (0, 512, 512, 3) and rejected.shape[0] == 2
    assert preview.shape[0] == 0 and json.loads(scores)["counts"]["passed"] == 0
    with pytest.raises(ImageInputError, match="batch is empty.*QualityScore"):
        ClusterSelect().run(passing, 5, 2, "balanced", "C aggressive", True, "dlib")
    selected, catalog, text = ClusterSelect().run(batch, 5, 2, "balanced", "C aggressive", True, "dlib")
    assert selected.shape[0] == 0 and json.loads(catalog)["report"]["counts"]["selected"] == 0
    assert "images found      2" in text and "selected          0" in text


# -- the generated hostile corpus, end to end -------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, face):
    """Good photos among everything a folder of 'images' can hold."""
    from PIL import Image

    d = tmp_path_factory.mktemp("corpus")
    good = {"good_a.png": face, "good_b.png": cv2.flip(face, 1)}
    for n, img in good.items():
        save_png(img, d / n)
    save_png(face, d / "good_nan_seed.png", HOSTILE_CHUNKS["seed_nan"])
    save_png(face, d / "good_nested.png", HOSTILE_CHUNKS["nested"])
    save_png(face, d / ("y" * 251 + ".png"))
    save_png(face, d / "line\nbreak.png")
    Image.fromarray(face).convert("RGBA").save(d / "good_rgba.png")
    Image.fromarray(face).convert("L").save(d / "good_grey.png")
    Image.fromarray(face).convert("CMYK").save(d / "good_cmyk.jpg")
    bad = {
        "empty.png": b"",
        "text.png": b"this is not an image",
        "truncated.png": (d / "good_a.png").read_bytes()[:2000],
        "bomb_header.png": _png_header_only(60000, 60000),
    }
    for n, data in bad.items():
        (d / n).write_bytes(data)
    save_png(np.zeros((8, 8, 3), np.uint8), d / "tiny.png")
    save_png(np.zeros((512, 512, 3), np.uint8), d / "black.png")
    save_png(np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8), d / "noise.png")
    (d / "folder.png").mkdir()
    os.symlink(d / "missing_target.png", d / "dangling.png")
    os.mkfifo(d / "fifo.png")  # opening it would block for ever
    return d, 9, len(bad) + 3  # good images; unreadable: bad bytes, tiny, dangling link, FIFO


def test_hostile_corpus_quality_and_curate(corpus, tmp_path, capsys):
    d, n_good, n_bad = corpus
    rc = cli_main(
        ["quality", str(d), "--out", str(tmp_path / "s.json"), "-q", "--workers", "2", "--no-rescue"]
    )
    out = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out.err
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["counts"]["unreadable"] == n_bad
    assert doc["counts"]["passed"] == n_good, [
        (e["filename"][:20], e.get("error") or e["quality"]["reasons"]) for e in doc["images"]
    ]
    rc = cli_main(
        [
            "curate",
            str(d),
            "--out",
            str(tmp_path / "p"),
            "-q",
            "--workers",
            "2",
            "--no-rescue",
            "--k",
            "1",
            "--link",
            "copy",
            "--no-dedup",
        ]
    )
    out = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out.err
    master = json.loads((tmp_path / "p" / "master_image_catalog.json").read_text())
    assert master["counts"]["unreadable"] == n_bad and master["counts"]["selected"] == n_good
    placed = list((tmp_path / "p" / "curated" / "images").iterdir())
    assert len(placed) == n_good and all(len(p.name.encode()) <= 255 for p in placed)
    assert not [p for p in (tmp_path / "p").rglob("*") if p.name.endswith((".partial", ".tmp"))]


def test_hostile_batches_in_the_nodes(face):
    import torch
    from identitylock.nodes.curation import ClusterSelect, QualityScore

    rng = np.random.default_rng(2)
    imgs = [
        face,
        np.zeros_like(face),
        np.full_like(face, 255),
        rng.integers(0, 255, face.shape, dtype=np.uint8),
        cv2.GaussianBlur(face, (0, 0), 4),
        cv2.flip(face, 1),
    ]
    batch = torch.from_numpy(np.stack(imgs).astype(np.float32) / 255.0)
    passing, rejected, scores, summary, preview = QualityScore().run(
        batch, "B balanced", 0.5, 0.3, 0.2, "dlib", True
    )
    doc = json.loads(scores)
    assert doc["counts"]["passed"] == 2 and passing.shape[0] == 2 and rejected.shape[0] == 4
    assert preview.shape[0] == 1
    selected, catalog, text = ClusterSelect().run(passing, 5, 0, "balanced", "B balanced", True, "dlib")
    assert selected.shape[0] == json.loads(catalog)["report"]["counts"]["selected"] == 2
    with pytest.raises(IdentityLockError):
        QualityScore().run(batch[..., :2], "B balanced", 0.5, 0.3, 0.2, "dlib", False)


@pytest.mark.parametrize(
    "config_text",
    [
        "[1, 2]",  # a list, not an object
        '{"weights": [1, 2]}',
        '{"weights": {"sharpness": "high"}}',
        '{"thresholds": {"name": "x", "min_sharpness": "soft", "min_contrast": 1, "min_confidence": 0.5, "min_score": 1}}',
        '{"thresholds": {"min_sharpness": 1}}',  # missing fields
        '{"curves": {"sharpness": "abc"}}',
        '{"curves": {"sharpness": [[0, 0], [1]]}}',
        '{"whole_image_share": "a lot"}',
        '{"unknown_key": 1}',
        "{not json",
        "[" * 100_000 + "]" * 100_000,  # deep enough for RecursionError
        "\udcff",  # not UTF-8 once written with surrogateescape
    ],
)
def test_wrong_quality_config_is_one_sentence(config_text, small_folder, tmp_path, capsys):
    cfg = tmp_path / "q.json"
    cfg.write_bytes(config_text.encode("utf-8", "surrogateescape"))
    rc = cli_main(["quality", str(small_folder), "--config", str(cfg), "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.startswith("error: quality settings"), err
    assert not (tmp_path / "s.json").exists()


def test_save_config_into_a_missing_folder_is_created_and_a_file_parent_refused(
    small_folder, tmp_path, capsys
):
    target = tmp_path / "new" / "deeper" / "q.json"
    assert cli_main(
        ["quality", str(small_folder), "--save-config", str(target), "--out", str(tmp_path / "s.json")]
    ) in (0, 2)
    assert json.loads(target.read_text())["thresholds"]["name"].startswith("B")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = cli_main(
        [
            "quality",
            str(small_folder),
            "--save-config",
            str(blocker / "q.json"),
            "--out",
            str(tmp_path / "t.json"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "--save-config" in err, err
    assert not (tmp_path / "t.json").exists(), "refused before the work"


def test_quality_says_when_it_replaces_its_scores_and_config(small_folder, tmp_path, capsys):
    out, cfg = tmp_path / "s.json", tmp_path / "q.json"
    args = ["quality", str(small_folder), "--out", str(out), "--save-config", str(cfg), "--workers", "1"]
    cli_main(args)
    first = capsys.readouterr()
    assert "replaced" not in first.out + first.err
    cli_main(args)
    second = capsys.readouterr()
    assert "(replaced the previous file)" in second.out
    assert "replaced the existing quality config" in second.err
