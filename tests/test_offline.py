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
