"""The prep -> embed -> drift path makes no network call: sockets are blocked while it runs."""

from __future__ import annotations

import json
import socket

import pytest
from identitylock.core.cli import main as cli_main
from identitylock.core.faces import clear_engine_cache


class NetworkCall(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[:2])
        raise NetworkCall(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    clear_engine_cache()  # engines must be created (model files opened) with the network blocked too
    yield calls
    clear_engine_cache()


def test_prep_embed_drift_offline(faces_dir, tmp_path, no_network, capsys):
    prepared = tmp_path / "prepared"
    assert (
        cli_main(
            [
                "prep",
                str(faces_dir / "lisa_1.jpg"),
                str(faces_dir / "lisa_2.jpg"),
                "--out",
                str(prepared),
                "--size",
                "384",
                "--backend",
                "auto",
            ]
        )
        == 0
    )
    pngs = sorted(prepared.glob("*.png"))
    assert len(pngs) == 2 * 6  # main + 4 rotations + 60 % crop, per photo
    ref = tmp_path / "lisa.safetensors"
    assert cli_main(["embed", str(prepared), "--out", str(ref), "--backend", "auto"]) == 0
    capsys.readouterr()
    assert (
        cli_main(
            ["drift", str(ref), str(faces_dir / "lisa_3.jpg"), str(faces_dir / "london006_1.jpg"), "--json"]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["locked"] is True and rows[1]["locked"] is False
    assert no_network == []


@pytest.mark.parametrize(("family", "extra"), [("zimage", []), ("flux1", ["--precision", "bf16"])])
def test_train_cli_other_families_offline(family, extra, faces_dir, tmp_path, no_network, capsys):
    """`identitylock train` on a local diffusers folder of a DiT family: family detected from model_index.json,
    text through the pipeline's own encoders, no network call at all (sockets refused, HF_HUB_OFFLINE or not).
    FLUX.1 with --precision bf16 loads its base weights in bf16 (LoRA weights stay fp32)."""
    from identitylock.core.images import load_image
    from identitylock.core.training import dataset as ds
    from identitylock.core.training.lora_format import read_metadata
    from identitylock.core.training.tiny_families import tiny_pipeline
    from PIL import Image

    model = tmp_path / f"tiny_{family}"
    tiny_pipeline(family, tokenizer_dir=tmp_path / "tok").save_pretrained(model)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, f in enumerate(sorted(faces_dir.glob("lisa_*.jpg"))[:3]):
        Image.fromarray(ds.resize_square(ds.centre_square(load_image(f)), 64)).save(imgs / f"lisa_{i}.png")
    out = tmp_path / "lisa.safetensors"
    phases = json.dumps([{"name": "ONLY", "lr": 1e-3, "alpha": 4, "min_steps": 3, "max_steps": 3}])
    rc = cli_main(["train", "--images", str(imgs), "--model", str(model), "--trigger", "lsaperson", "--out",
                   str(out), "--preset", "TINY_TEST", "--phases", phases, "--resolution", "64", "--device", "cpu",
                   "--window", "3", *extra])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert read_metadata(out)["family"] == family
    assert no_network == []
