"""Hostile corpus for seeds / render / metrics / portrait / views and the DriftSeedSearch, MatchedPortrait and
IdentityMetrics nodes (issue 15), generated here in tmp_path.

Each class of hostile input (broken or empty files, bad reference files, non-numeric and NaN numbers, huge seed
ranges, missing model files, output paths that cannot be written, names that try to leave the output folder,
control characters in file names, empty and NaN tensors) must end in one line that says what was wrong, exit code
2 from the CLI or an IdentityLockError from a node, and nothing written outside the output folder. Only lisa_* /
london* photos are used.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from identitylock.core.cli import main
from identitylock.core.errors import IdentityLockError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfy_standins import StandInModel, StandInVAE  # noqa: E402  (labelled stand-ins of ComfyUI's MODEL / VAE)


# -- the corpus ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory, faces_dir):
    from identitylock.core.faces import analyze_file, get_engine
    from identitylock.core.identity import reference_from_analyses

    root = tmp_path_factory.mktemp("hostile")
    ref = reference_from_analyses(
        [analyze_file(faces_dir / "lisa_1.jpg", get_engine("dlib"))], ["lisa_1.jpg"]
    )
    files = {"ref": ref.save(root / "lisa.safetensors")}
    (root / "zero.png").write_bytes(b"")
    (root / "text.png").write_text("not an image\n")
    jpg = (faces_dir / "lisa_2.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    (root / "garbage.safetensors").write_bytes(os.urandom(256))
    (root / "empty.safetensors").write_bytes(b"")
    (root / "a_file").write_text("x")
    from PIL import Image

    Image.new("RGB", (1, 1)).save(root / "tiny.png")
    refs = root / "refs"
    refs.mkdir()
    shutil.copy(faces_dir / "lisa_1.jpg", refs)
    cands = root / "cands"
    cands.mkdir()
    for name in ("lisa_4.jpg", "london001_1.jpg"):
        shutil.copy(faces_dir / name, cands)
    for name in ("zero.png", "text.png", "truncated.jpg"):
        shutil.copy(root / name, cands / name)
    shutil.copy(faces_dir / "lisa_3.jpg", cands / "evil\nname 0.0012 yes approved.jpg")
    files.update({p.name: p for p in root.iterdir()})
    files["root"] = root
    return files


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: bad option values
        rc = int(exc.code)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_line_error(rc: int, err: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error") or "error:" in line]
    assert lines, err


# -- CLI: errors before any work --------------------------------------------------------------------------------
def _seeds(c, out, *extra):
    return ["seeds", "--tiny", "--reference", c["ref"], "--prompt", "x", "--seeds", "0:1", "--steps", "1",
            "--out", out, *extra]  # fmt: skip


def _render(c, out, *extra):
    return ["render", "--tiny", "--passes", "2", "--prompt", "x", "--steps", "1", "--out", out, *extra]


def _metrics(c, out, *extra):
    return ["metrics", "--reference", c["refs"], "--candidates", c["cands"], "--workers", "1", "--out", out,
            "--no-thumbnails", *extra]  # fmt: skip


def _portrait(c, out, *extra):
    scene = c["root"] / "refs" / "lisa_1.jpg"
    return ["portrait", "--tiny", "--scene", scene, "--reference", c["ref"], "--steps", "1", "--attempts", "1",
            "--work-size", "64", "--out", out, *extra]  # fmt: skip


BEFORE_WORK = {
    # bad reference files
    "seeds-garbage-reference": lambda c, o: (
        _seeds(c, o)[:3] + ["--reference", c["garbage.safetensors"]] + _seeds(c, o)[5:]
    ),
    "seeds-empty-reference": lambda c, o: (
        _seeds(c, o)[:3] + ["--reference", c["empty.safetensors"]] + _seeds(c, o)[5:]
    ),
    "seeds-image-as-reference": lambda c, o: (
        _seeds(c, o)[:3] + ["--reference", c["text.png"]] + _seeds(c, o)[5:]
    ),
    "portrait-garbage-reference": lambda c, o: _portrait(c, o, "--reference", c["garbage.safetensors"]),
    "metrics-garbage-identity": lambda c, o: [
        "metrics",
        "--identity",
        c["garbage.safetensors"],
        "--candidates",
        c["cands"],
        "--out",
        o,
    ],  # fmt: skip
    "metrics-missing-reference": lambda c, o: (
        _metrics(c, o)[:1] + ["--reference", c["root"] / "nope"] + _metrics(c, o)[3:]
    ),
    # NaN / out-of-range / non-numeric numbers
    "seeds-nan-threshold": lambda c, o: _seeds(c, o, "--threshold", "nan"),
    "seeds-huge-threshold": lambda c, o: _seeds(c, o, "--threshold", "5"),
    "seeds-nan-cfg": lambda c, o: _seeds(c, o, "--cfg", "nan"),
    "seeds-zero-steps": lambda c, o: _seeds(c, o, "--steps", "0"),
    "seeds-odd-width": lambda c, o: _seeds(c, o, "--width", "100"),
    "seeds-non-numeric-steps": lambda c, o: _seeds(c, o, "--steps", "many"),
    "seeds-huge-range": lambda c, o: _seeds(c, o, "--seeds", "0:100000000"),
    "seeds-bad-spec": lambda c, o: _seeds(c, o, "--seeds", "1:x"),
    "render-nan-rescue": lambda c, o: _render(c, o, "--rescue", "nan"),
    "render-rescue-above-1": lambda c, o: _render(c, o, "--passes", "3", "--scene", "y", "--rescue", "1.5"),
    "render-negative-steps": lambda c, o: _render(c, o, "--steps", "-3"),
    "metrics-nan-threshold": lambda c, o: _metrics(c, o, "--threshold", "nan"),
    "metrics-negative-workers": lambda c, o: _metrics(c, o, "--workers", "-2"),
    "portrait-nan-drift": lambda c, o: _portrait(c, o, "--drift-threshold", "nan"),
    "portrait-nan-feather": lambda c, o: _portrait(c, o, "--feather", "nan"),
    "portrait-zero-denoise": lambda c, o: _portrait(c, o, "--denoise", "0"),
    "portrait-zero-attempts": lambda c, o: _portrait(c, o, "--attempts", "0"),
    "portrait-negative-face-index": lambda c, o: _portrait(c, o, "--face-index", "-4"),
    # missing model files
    "seeds-missing-model": lambda c, o: [
        "seeds",
        "--model",
        c["root"] / "no_model",
        "--reference",
        c["ref"],
        "--prompt",
        "x",
        "--out",
        o,
    ],  # fmt: skip
    "render-missing-lora": lambda c, o: _render(c, o, "--lora", c["root"] / "no.safetensors"),
    "render-garbage-lora": lambda c, o: _render(c, o, "--lora", c["garbage.safetensors"]),
    "metrics-missing-insightface-pack": lambda c, o: _metrics(
        c, o, "--backend", "insightface", "--workers", "2", "--insightface-pack", c["root"] / "no_pack"
    ),  # fmt: skip
    "views-missing-insightface-pack": lambda c, o: ["views", c["cands"], "--backend", "insightface"],
    "seeds-bogus-device": lambda c, o: _seeds(c, o, "--device", "bogus"),
    "render-bogus-device": lambda c, o: _render(c, o, "--device", "gpu0"),
    "portrait-bogus-device": lambda c, o: _portrait(c, o, "--device", "bogus"),
    "profile-missing-lora": lambda c, o: ["profile", "--lora", c["root"] / "no.safetensors"],
    # images that are not images
    "portrait-zero-byte-scene": lambda c, o: _portrait(c, o, "--scene", c["zero.png"]),
    "portrait-text-scene": lambda c, o: _portrait(c, o, "--scene", c["text.png"]),
    "portrait-1px-scene": lambda c, o: _portrait(c, o, "--scene", c["tiny.png"]),
    # output paths that cannot be written
    "seeds-out-is-a-file": lambda c, o: _seeds(c, c["a_file"]),
    "render-out-under-a-file": lambda c, o: _render(c, c["a_file"] / "sub"),
    "metrics-out-is-a-file": lambda c, o: _metrics(c, c["a_file"]),
    "portrait-out-is-a-file": lambda c, o: _portrait(c, c["a_file"]),
    # names that are nothing but separators
    "render-empty-name": lambda c, o: _render(c, o, "--name", "../.."),
    "metrics-empty-prefix": lambda c, o: _metrics(c, o, "--prefix", "/"),
}


@pytest.mark.parametrize("case", sorted(BEFORE_WORK))
def test_cli_hostile_input_is_one_line_and_writes_nothing_outside(
    case, corpus, tmp_path, capsys, monkeypatch
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = work / "out"
    before_root, before_tmp = _tree(corpus["root"]), _tree(tmp_path)
    rc, _, err = _cli(BEFORE_WORK[case](corpus, out), capsys)
    _one_line_error(rc, err)
    assert _tree(corpus["root"]) == before_root  # the corpus folder is untouched
    new = _tree(tmp_path) - before_tmp
    assert all(p == "work/out" or p.startswith("work/out/") for p in new), new


# -- CLI: the work runs, and stays inside --out ---------------------------------------------------------------
def test_render_with_escaping_name_stays_inside_out(corpus, tmp_path, capsys):
    """Issue 15: `render --name ../../X` wrote outside --out."""
    out = tmp_path / "a" / "b" / "out"
    rc, printed, err = _cli(_render(corpus, out, "--steps", "2", "--name", "../../escaped"), capsys)
    assert rc == 0, err
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents]
    assert outside == [] and (out / "escaped.png").exists() and (out / "escaped.json").exists()


def test_metrics_with_escaping_prefix_stays_inside_out_and_reports_bad_files(corpus, tmp_path, capsys):
    """Issue 15: `metrics --prefix ../../X` wrote outside --out. Unreadable candidates are reported (exit 2), a
    newline in a file name cannot forge a printed line."""
    out = tmp_path / "a" / "b" / "out"
    rc, printed, err = _cli(_metrics(corpus, out, "--prefix", "../../X"), capsys)
    assert rc == 2 and "Traceback" not in err
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents]
    assert outside == [] and sorted(p.name for p in out.iterdir()) == ["X.csv", "X.html", "X.json"]
    assert "could not read 3 file(s)" in err
    assert not any(line.startswith("name 0.0012") for line in (printed + err).splitlines())


def test_views_hostile_files_are_rows_not_tracebacks(corpus, capsys):
    rc, printed, err = _cli(["views", corpus["cands"]], capsys)
    assert rc == 2 and "Traceback" not in err
    rows = printed.splitlines()[1:]
    assert len(rows) == 6  # one row per file, the newline in a name escaped
    assert sum("error:" in r for r in rows) == 3
    assert not any(r.startswith("name 0.0012") for r in rows)


# -- nodes ------------------------------------------------------------------------------------------------------
def _tensor(arr):
    import torch

    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


HOSTILE_TENSORS = {
    "empty-batch": lambda: _tensor(np.zeros((0, 64, 64, 3))),
    "zero-size": lambda: _tensor(np.zeros((1, 0, 0, 3))),
    "nan": lambda: _tensor(np.full((1, 64, 64, 3), np.nan)),
    "wrong-rank": lambda: _tensor(np.zeros((64, 3))),
    "two-channels": lambda: _tensor(np.zeros((1, 64, 64, 2))),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_TENSORS))
def test_matched_portrait_hostile_scene(kind, corpus):
    from identitylock.core.identity import IdentityReference
    from identitylock.nodes.portrait import MatchedPortrait

    ref = IdentityReference.load(corpus["ref"])
    with pytest.raises(IdentityLockError):
        MatchedPortrait().run(scene=HOSTILE_TENSORS[kind](), model=StandInModel(), positive=[], negative=[],
                              vae=StandInVAE(),
                              identity=ref, seed=0, attempts=1, denoise=0.7, steps=2, cfg=5.0,
                              sampler_name="euler", scheduler="normal", mask_feather=0.06)  # fmt: skip


@pytest.mark.parametrize("kind", sorted(HOSTILE_TENSORS))
def test_identity_metrics_hostile_batches(kind, corpus, tmp_path, monkeypatch):
    import identitylock.nodes.metrics as mod
    from identitylock.core.identity import IdentityReference

    monkeypatch.setattr(mod, "output_directory", lambda: str(tmp_path))
    ref = IdentityReference.load(corpus["ref"])
    with pytest.raises(IdentityLockError):
        mod.IdentityMetrics().run(HOSTILE_TENSORS[kind](), identity=ref)
    assert list(tmp_path.rglob("*.html")) == []


@pytest.mark.parametrize("name", ["../../escaped", "..", "a/../../b", "x\nforged"])
def test_identity_metrics_report_name_is_confined(name, corpus, faces_dir, tmp_path, monkeypatch):
    import identitylock.nodes.metrics as mod
    from identitylock.core.identity import IdentityReference
    from identitylock.core.images import load_image, resize_long_side

    out = tmp_path / "output"
    monkeypatch.setattr(mod, "output_directory", lambda: str(out))
    monkeypatch.setattr(mod, "send_status", lambda *a, **k: None)
    img = resize_long_side(load_image(faces_dir / "lisa_4.jpg"), 256)[0]
    ref = IdentityReference.load(corpus["ref"])
    try:
        mod.IdentityMetrics().run(_tensor(img[None] / 255.0), identity=ref, report_name=name)
    except IdentityLockError as exc:
        assert "report_name" in str(exc)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents]
    assert outside == []


class _NoSampling:
    """DriftSeedSearch must refuse these inputs before it samples anything."""

    def sample(self, *a, **k):
        raise AssertionError("sampled despite a hostile input")

    decode = sample


DRIFT_CASES = {
    "nan-threshold": {"threshold": float("nan")},
    "threshold-above-2": {"threshold": 3.0},
    "seed-list-garbage": {"seed_list": "1:x"},
    "seed-list-huge": {"seed_list": "0:100000000"},
    "seed-list-negative": {"seed_list": "-5"},
    "seed-list-beyond-uint64": {"seed_list": str(2**64)},
    "not-an-identity": {"identity": "lisa"},
    "denoise-without-latent": {"denoise": 0.5},
}


@pytest.mark.parametrize("case", sorted(DRIFT_CASES))
def test_drift_seed_search_hostile_inputs(case, corpus):
    from identitylock.core.identity import IdentityReference
    from identitylock.nodes.seeds import DriftSeedSearch

    node = DriftSeedSearch()
    node.sampling = _NoSampling()
    args = dict(
        model=StandInModel(), positive=[], negative=[], vae=StandInVAE(), identity=IdentityReference.load(corpus["ref"]),
        seed_start=0, seed_count=4, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=1.0,
        width=64, height=64, threshold=0.0, stop_after=0, top_k=2, seeds_per_batch=1, save="none", results_name="",
    )  # fmt: skip
    args.update(DRIFT_CASES[case])
    with pytest.raises(IdentityLockError):
        node.search(**args)


def test_drift_seed_search_nan_renders_are_errors_not_locks(corpus):
    """A VAE that decodes NaN: every seed is recorded with its error, nothing locks, the save output blocks."""
    import torch
    from identitylock.core.identity import IdentityReference
    from identitylock.nodes.seeds import DriftSeedSearch

    class NaNSampling:
        def sample(self, model, seeds, *a):
            return torch.zeros((len(seeds), 4, 8, 8))

        def decode(self, vae, samples):
            return torch.full((samples.shape[0], 64, 64, 3), float("nan"))

    node = DriftSeedSearch()
    node.sampling = NaNSampling()
    with pytest.raises(IdentityLockError, match="decodable"):
        node.search(model=StandInModel(), positive=[], negative=[], vae=StandInVAE(),
                    identity=IdentityReference.load(corpus["ref"]), seed_start=0, seed_count=2, steps=2, cfg=5.0,
                    sampler_name="euler", scheduler="normal", denoise=1.0, width=64, height=64, threshold=0.0,
                    stop_after=0, top_k=2, seeds_per_batch=1, save="none", results_name="")  # fmt: skip


def test_nodes_refuse_something_that_is_not_an_identity(faces_dir, tmp_path, monkeypatch):
    import identitylock.nodes.metrics as mod
    from identitylock.core.images import load_image, resize_long_side
    from identitylock.nodes.portrait import MatchedPortrait

    monkeypatch.setattr(mod, "output_directory", lambda: str(tmp_path))
    img = _tensor(resize_long_side(load_image(faces_dir / "lisa_4.jpg"), 256)[0][None] / 255.0)
    with pytest.raises(IdentityLockError, match="IDENTITY"):
        mod.IdentityMetrics().run(img, identity="lisa.safetensors")
    with pytest.raises(IdentityLockError, match="IDENTITY"):
        MatchedPortrait().run(scene=img, model=StandInModel(), positive=[], negative=[], vae=StandInVAE(),
                              identity={"backend": 1},
                              seed=0, attempts=1, denoise=0.7, steps=2, cfg=5.0, sampler_name="euler",
                              scheduler="normal", mask_feather=0.06)  # fmt: skip


@pytest.mark.parametrize("payload", ["{not json", "[1, 2]", "[" * 100_000 + "]" * 100_000, None])
def test_hostile_png_metadata_is_one_error(payload, tmp_path):
    from identitylock.core.render import read_render_metadata
    from identitylock.core.seeds import read_verify_metadata
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if payload is not None:
        info.add_text("identitylock", payload)
        info.add_text("identitylock.render", payload)
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    for reader in (read_verify_metadata, read_render_metadata):
        with pytest.raises(IdentityLockError):
            reader(path)
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(IdentityLockError):
        read_verify_metadata(tmp_path / "zero.png")
