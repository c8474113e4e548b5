"""`identitylock train` and LoRATrainAdaptive under hostile use (issue 15), on generated inputs.

Every bad input must end in exit code 2 (CLI) or an IdentityLockError (node) with one sentence, before any
training step, never with a traceback or advice to unpickle (``weights_only=False``). Trains a tiny random SD
pipeline on lisa_* crops only (CC0, per SOURCES.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from identitylock.core.cli import main
from identitylock.core.errors import IdentityLockError
from identitylock.core.fileio import default_file_mode
from identitylock.core.training import dataset as ds
from identitylock.core.training.lora_format import read_metadata

PHASES = json.dumps([{"name": "ONLY", "lr": 1e-3, "alpha": 4, "min_steps": 3, "max_steps": 3}])


class Gadget:
    """A custom class: its pickle names a global that weights_only loading refuses (torch then advises
    weights_only=False in its own message)."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory, faces_dir):
    from identitylock.core.diffusion import build_tiny_pipeline
    from identitylock.core.images import load_image
    from PIL import Image

    root = tmp_path_factory.mktemp("train_hostile")
    model = root / "tiny_sd"
    build_tiny_pipeline(0, root / "tok").save_pretrained(model)
    imgs = root / "imgs"
    imgs.mkdir()
    for i, f in enumerate(sorted(faces_dir.glob("lisa_*.jpg"))[:3]):
        Image.fromarray(ds.resize_square(ds.centre_square(load_image(f)), 64)).save(imgs / f"lisa_{i}.png")
    return model, imgs


def args_for(setup, out, *extra):
    model, imgs = setup
    return ["train", "--images", str(imgs), "--model", str(model), "--trigger", "lsaperson", "--out", str(out),
            "--preset", "TINY_TEST", "--phases", PHASES, "--resolution", "64", "--device", "cpu", "--window", "3",
            *extra]  # fmt: skip


def one_sentence_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert not any("Traceback" in line or "weights_only" in line for line in err), err
    return errors[0]


def no_partials(folder: Path) -> bool:
    return not any(p.name.endswith(".partial") for p in folder.rglob("*"))


def test_train_refuses_to_discard_a_saved_run(setup, tmp_path, capsys):
    """Issue 15: train without --resume silently replaced an interrupted run's state (step 25 -> step 5)."""
    out = tmp_path / "lisa.safetensors"
    state = Path(str(out) + ".state.pt")
    assert main(args_for(setup, out)) == 0
    out.unlink()  # what an interrupted run leaves: a state, no LoRA yet
    saved = state.read_bytes()
    capsys.readouterr()
    assert main(args_for(setup, out, "--seed", "3")) == 2
    msg = one_sentence_error(capsys)
    assert "--resume" in msg and "--overwrite" in msg and str(state) in msg
    assert state.read_bytes() == saved and not out.exists()
    assert main(args_for(setup, out, "--resume", "--seed", "3")) == 0  # continues the saved run (its seed)
    assert read_metadata(out)["seed"] == 0 and read_metadata(out)["steps"] == 3
    capsys.readouterr()
    assert main(args_for(setup, out, "--seed", "3")) == 2  # the LoRA and the state are both in the way
    assert "--overwrite" in one_sentence_error(capsys)
    assert main(args_for(setup, out, "--overwrite", "--seed", "3")) == 0
    assert read_metadata(out)["seed"] == 3
    # issue 15: the LoRA and the state have the user's normal permissions, not safetensors' 0600
    for f in (out, state):
        assert (f.stat().st_mode & 0o777) == default_file_mode(), f


def test_resume_without_checkpoint_is_one_sentence(setup, tmp_path, capsys):
    out = tmp_path / "never.safetensors"
    assert main(args_for(setup, out, "--resume")) == 2
    assert "nothing to resume" in one_sentence_error(capsys)


def _hostile_states(tmp_path: Path) -> dict[str, bytes]:
    f = tmp_path / "gadget.pt"
    torch.save({"version": 1, "step": 25, "obj": Gadget()}, f)
    gadget = f.read_bytes()
    return {"custom_class": gadget, "truncated": gadget[: len(gadget) // 2], "text": b"not a checkpoint\n",
            "empty": b"", "random": np.random.default_rng(0).bytes(4096)}  # fmt: skip


def test_hostile_checkpoint_never_suggests_unpickling(setup, tmp_path, capsys):
    """Issue 15: torch's own message on such a file says to retry with weights_only=False."""
    out = tmp_path / "h.safetensors"
    for kind, content in _hostile_states(tmp_path).items():
        Path(str(out) + ".state.pt").write_bytes(content)
        assert main(args_for(setup, out, "--resume")) == 2, kind
        msg = one_sentence_error(capsys)
        assert "cannot resume" in msg and "--overwrite" in msg, (kind, msg)
    assert not out.exists()


def test_bad_outputs_fail_before_any_training_step(setup, tmp_path, capsys):
    """Issue 15: an output path under a file, or a folder where the file goes, failed after the training steps
    (traceback, sometimes a stray temporary)."""
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    folder = tmp_path / "taken.safetensors"
    folder.mkdir()
    cases = {
        "out under a file": (a_file / "lisa.safetensors", ()),
        "out is a folder": (folder, ()),
        "checkpoint is a folder": (tmp_path / "ok.safetensors", ("--checkpoint", str(tmp_path))),
        "checkpoint under a file": (tmp_path / "ok2.safetensors", ("--checkpoint", str(a_file / "s.pt"))),
    }
    for name, (out, extra) in cases.items():
        assert main(args_for(setup, out, *extra)) == 2, name
        msg = one_sentence_error(capsys)
        assert "folder" in msg or "existing file" in msg, (name, msg)
    assert no_partials(tmp_path) and not list(tmp_path.rglob("*.state.pt"))


def test_help_names_the_embed_command_and_safetensors(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "`identitylock embed`" in text and ".safetensors" in text and "face embed" not in text


def test_hostile_cli_corpus(setup, tmp_path, capsys):
    """Generated hostile inputs, one class each: every one exits 2 with one sentence, no traceback."""
    from PIL import Image

    model, imgs = setup

    def folder(name: str, files: dict[str, bytes | np.ndarray]) -> str:
        d = tmp_path / name
        d.mkdir()
        for fname, content in files.items():
            if isinstance(content, np.ndarray):
                Image.fromarray(content).save(d / fname)
            else:
                (d / fname).write_bytes(content)
        return str(d)

    face = np.asarray(Image.open(next(Path(imgs).glob("*.png"))))
    grey = np.full((64, 64, 3), 128, np.uint8)
    f = tmp_path / "wrong.json"
    f.write_text('{"name": "p", "rank": "16", "alpha": 16, "lr": 1e-4}')
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    cases = {
        "empty image folder": ["--images", folder("empty", {})],
        "one image": ["--images", folder("one", {"a.png": face})],
        "zero-byte image": ["--images", folder("zero", {"a.png": face, "b.png": b""})],
        "mislabelled text": ["--images", folder("mislabel", {"a.png": face, "b.png": b"hello"})],
        "mixed sizes": [
            "--images",
            folder("mixed", {"a.png": face, "b.png": np.zeros((32, 32, 3), np.uint8)}),
        ],
        "not a multiple of 8": [
            "--images",
            folder("odd", {"a.png": grey[:60, :60], "b.png": grey[:60, :60]}),
            "--resolution",
            "60",
        ],  # fmt: skip
        "non-utf8 caption": [
            "--images",
            folder("cap", {"a.png": face, "b.png": grey, "a.txt": b"\xff\xfe\x00"}),
        ],
        "brace trigger": ["--trigger", "{x}"],
        "phases wrong type": ["--phases", '[{"name": "A", "lr": "fast", "alpha": 4}]'],
        "phases list of strings": ["--phases", '["A"]'],
        "phases unknown key": ["--phases", '[{"name": "A", "lr": 1, "alpha": 4, "epochs": 3}]'],
        "phases not JSON": ["--phases", "{broken"],
        "phases too deep": ["--phases", "[" * 50_000],
        "phases missing file": ["--phases", str(tmp_path / "nope.json")],
        "preset wrong types": ["--preset", str(f)],
        "unknown preset": ["--preset", "NOPE"],
        "window 0": ["--window", "0"],
        "p-threshold nan": ["--p-threshold", "nan"],
        "significance 2": ["--significance", "2"],
        "negative rank": ["--rank", "-4"],
        "resolution 0": ["--resolution", "0"],
        "missing model": ["--model", str(tmp_path / "no_model")],
        "garbage model file": ["--model", str(garbage)],
        "config not a folder": ["--model", str(garbage), "--config", str(tmp_path / "no_config")],
        "model folder without index": ["--model", str(tmp_path)],
        "garbage identity": ["--identity", str(garbage)],
        "resume and overwrite": ["--resume", "--overwrite"],
    }
    for i, (name, extra) in enumerate(cases.items()):
        rc = main(args_for(setup, tmp_path / f"c{i}.safetensors") + list(extra))
        assert rc == 2, name
        one_sentence_error(capsys)
    assert not list(tmp_path.glob("c*.safetensors*")), "nothing may be written for a refused run"


def test_hostile_node_corpus(tmp_path, monkeypatch):
    """LoRATrainAdaptive: every hostile value raises one IdentityLockError before ComfyUI objects are touched."""
    from identitylock.nodes import train as node_mod

    monkeypatch.setattr(node_mod, "output_directory", lambda: str(tmp_path / "output"))
    monkeypatch.setattr(node_mod, "_loras_dir", lambda: str(tmp_path / "loras"))
    monkeypatch.setattr(node_mod, "_phases_dir", lambda: str(tmp_path / "phases"))
    secret = tmp_path / "secret.json"
    secret.write_text(PHASES)
    (tmp_path / "loras" / "taken.safetensors").mkdir(parents=True)
    state_dir = tmp_path / "output" / "identitylock_training"
    state_dir.mkdir(parents=True)
    for kind, content in _hostile_states(tmp_path).items():
        (state_dir / f"hostile_{kind}.safetensors.state.pt").write_bytes(content)
    good = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    nan = good.clone()
    nan[1, 5, 5, 0] = float("nan")

    class Untouchable:
        """MODEL/CLIP/VAE stand-in: any use means the node started work before checking its inputs."""

        def __getattr__(self, name):
            raise AssertionError(f"touched .{name} before the inputs were checked")

    cases = {
        "empty batch": {"images": torch.zeros((0, 64, 64, 3))},
        "one image": {"images": good[:1]},
        "NaN pixel": {"images": nan},
        "inf pixel": {"images": good.clone().fill_(float("inf"))},
        "not a multiple of 8": {"images": good[:, :60, :60]},
        "wrong rank tensor": {"images": good[0, 0]},
        "empty trigger": {"trigger_word": "  "},
        "path lora_name": {"lora_name": "../../escape"},
        "preset as a path": {"preset": str(secret)},
        "bogus schedule": {"schedule": "weekly"},
        "phases path outside": {"phases_json": str(secret)},
        "phases traversal name": {"phases_json": "../secret"},
        "phases absolute path": {"phases_json": "/etc/hostname"},
        "phases not JSON": {"phases_json": "[{"},
        "phases wrong types": {"phases_json": '[{"name": "A", "lr": [1], "alpha": 4}]'},
        "phases too deep": {"phases_json": "{" * 50_000},
        "phases empty list": {"phases_json": "[]"},
        "window 0": {"window": 0},
        "p_threshold nan": {"p_threshold": float("nan")},
        "significance > 1": {"significance": 1.5},
        "min_val_gain nan": {"min_val_gain": float("nan")},
        "negative rank": {"rank": -1},
        "probe without identity": {"probe_every": 5},
        "resume nothing saved": {"resume": True, "lora_name": "never"},
        "resume and overwrite": {"resume": True, "overwrite": True},
        "lora name is a folder": {"lora_name": "taken"},
        **{
            f"hostile state {k}": {"resume": True, "lora_name": f"hostile_{k}"}
            for k in _hostile_states(tmp_path)
        },
        **{f"saved state in the way {k}": {"lora_name": f"hostile_{k}"} for k in ("empty",)},
    }
    base = dict(images=good, trigger_word="lsaperson", lora_name="lisa", preset="TINY_TEST", schedule="adaptive",
                seed=0, phases_json=PHASES, window=3)  # fmt: skip
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for name, change in cases.items():
        kw = {**base, **change}
        model = Untouchable()
        if name.startswith("hostile state"):  # the state is loaded after clone(): hand it a clone-only model
            model = type("Clonable", (), {"clone": lambda self: self})()
        with pytest.raises(IdentityLockError) as err:
            node_mod.LoRATrainAdaptive().train(model, Untouchable(), Untouchable(), **kw)
        msg = str(err.value)
        assert "\n" not in msg and "weights_only" not in msg and "Traceback" not in msg, (name, msg)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "a refused run wrote something"
    assert os.listdir(tmp_path / "loras") == ["taken.safetensors"]


def test_train_loads_models_through_the_one_load_pipeline(setup, tmp_path, capsys):
    """Issue 18: the trainer had its own load_pipeline that had drifted from core.diffusion's (no model_index
    check, no error translation: a folder without model_index.json gave a traceback). One loader now."""
    from identitylock.core.training import diffusers_backend

    assert not hasattr(diffusers_backend, "load_pipeline")
    empty = tmp_path / "not_a_pipeline"
    empty.mkdir()
    assert main(args_for(setup, tmp_path / "x.safetensors", "--model", str(empty))) == 2
    assert "without model_index.json" in one_sentence_error(capsys)
