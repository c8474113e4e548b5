"""Packaging rules: requirements.txt mirrors pyproject, torch is never a dependency, one onnxruntime flavour."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower()


def test_requirements_txt_mirrors_runtime_dependencies():
    deps = sorted(_name(d) for d in _pyproject()["project"]["dependencies"])
    lines = [
        ln
        for ln in (REPO / "requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert sorted(_name(ln) for ln in lines) == deps
    assert sorted(ln.strip() for ln in lines) == sorted(
        d.strip() for d in _pyproject()["project"]["dependencies"]
    )


def test_torch_is_never_pinned_or_required():
    project = _pyproject()["project"]
    everything = list(project["dependencies"]) + [
        d for ds in project["optional-dependencies"].values() for d in ds
    ]
    assert not [d for d in everything if _name(d) in ("torch", "torchvision", "torchaudio")]


def test_exactly_one_onnxruntime_flavour_by_default():
    deps = [_name(d) for d in _pyproject()["project"]["dependencies"]]
    assert [d for d in deps if d.startswith("onnxruntime")] == ["onnxruntime"]
    assert any(_name(d) == "onnxruntime-gpu" for d in _pyproject()["project"]["optional-dependencies"]["gpu"])


def test_comfy_registry_section_and_console_script():
    data = _pyproject()
    comfy = data["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] == "IdentityLock"
    assert (REPO / comfy["Icon"]).exists()
    assert data["project"]["scripts"]["identitylock"] == "identitylock.core.cli:main"


def test_every_python_package_folder_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    for init in list((REPO / "core").rglob("__init__.py")) + list((REPO / "nodes").rglob("__init__.py")):
        rel = init.parent.relative_to(REPO).as_posix().replace("/", ".")
        assert f"identitylock.{rel}" in listed, f"{rel} is missing from [tool.setuptools] packages"


def test_core_never_imports_comfyui_or_nodes():
    bad = re.compile(
        r"^\s*(import|from)\s+(comfy|comfy_extras|comfy_api|folder_paths|server|execution|nodes)\b"
        r"|^\s*from\s+\.+nodes\b|^\s*from\s+\.+\s+import\s+.*\bnodes\b|^\s*(import|from)\s+identitylock\.nodes\b",
        re.M,
    )
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "core").rglob("*.py") if bad.search(p.read_text())]
    # Our own nodes' schemas reach core as core/data/identitylock_object_info.json (see test_workflows.py).
    assert offenders == []


def test_pack_never_unpickles():
    """Rule of the house: weights come through safetensors or torch.load(weights_only=True); nothing is unpickled."""
    bad = re.compile(
        r"weights_only\s*=\s*False|^\s*import\s+(c?pickle|dill|joblib)\b|allow_pickle\s*=\s*True", re.M
    )
    files = [*REPO.glob("*.py"), *(REPO / "core").rglob("*.py"), *(REPO / "nodes").rglob("*.py")]
    assert [str(p.relative_to(REPO)) for p in files if bad.search(p.read_text())] == []
    for p in files:
        text = p.read_text()
        for m in re.finditer(r"torch\.load\(", text):
            depth, i = 1, m.end()
            while depth and i < len(text):  # the call's full argument list (balanced parentheses)
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            call = text[m.start() : i]
            assert "weights_only=True" in call, f"{p.relative_to(REPO)}: {call}"


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "identitylock.core.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("prep", "embed", "drift", "doctor"):
        assert command in out.stdout
