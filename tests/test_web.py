"""The web/ extension's pure logic (node's test runner) and the report route's path safety."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from identitylock.nodes import routes

REPO = Path(__file__).resolve().parents[1]


def test_node_unit_tests():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (needed for `node --test web/`)")
    major = int(
        subprocess.run([node, "--version"], capture_output=True, text=True)
        .stdout.strip()
        .lstrip("v")
        .split(".")[0]
    )
    if major < 20:
        pytest.skip(f"node {major} is too old for `node --test web/` (need 20+)")
    proc = subprocess.run([node, "--test", "web/"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout


def test_extension_files_exist():
    js = (REPO / "web" / "identitylock.js").read_text()
    assert "app.registerExtension" in js
    for event in ("identitylock.train", "identitylock.seed", "identitylock.portrait"):
        assert event in js
    assert (REPO / "web" / "icon.svg").read_text().lstrip().startswith("<svg")


def test_report_path_is_confined_to_output(tmp_path: Path):
    out = tmp_path / "output"
    (out / "identitylock" / "m1").mkdir(parents=True)
    report = out / "identitylock" / "m1" / "report.html"
    report.write_text("<html></html>")
    (tmp_path / "secret.html").write_text("no")
    (out / "model.safetensors").write_text("x")
    assert routes.resolve_report_path(out, "identitylock/m1/report.html") == report.resolve()
    for bad in (
        "../secret.html",
        "/etc/passwd",
        str(tmp_path / "secret.html"),
        "identitylock/../../secret.html",
        "model.safetensors",
        "identitylock/m1/missing.html",
        "",
        None,
        "a\x00b.html",
    ):
        assert routes.resolve_report_path(out, bad) is None, bad
    link = out / "link.html"
    link.symlink_to(tmp_path / "secret.html")
    assert routes.resolve_report_path(out, "link.html") is None  # symlink leaving the output folder


def test_routes_module_is_a_noop_without_comfyui():
    assert routes.REGISTERED is False
    assert routes.NODE_CLASS_MAPPINGS == {}
