"""The suite is self-contained: fixtures live in the repository, and a skip is a failure unless allow-listed."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
REPO = TESTS.parent


def test_fixtures_fit_the_size_budget():
    size = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert size < 10 * 1024 * 1024, f"tests/fixtures is {size / 2**20:.1f} MiB; the budget is about 10 MB"


def test_every_labelled_photo_is_committed_with_its_sources():
    faces = FIXTURES / "faces"
    with open(faces / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 30
    missing = [r["file"] for r in rows if not (faces / r["file"]).is_file()]
    assert missing == []
    sources = (faces / "SOURCES.md").read_text()
    assert all(r["file"].split("_")[0] in sources for r in rows), "every photo's source is in SOURCES.md"
    for name in (
        "object_info.json",
        "lora_keymap_sd15.json",
        "LORA_KEYS.md",
        "protocol/history_response.json",
    ):
        assert (FIXTURES / "comfyui" / name).is_file(), name


def test_no_test_reads_files_beside_the_checkout():
    """The project's sibling data folder may add photos to a benchmark, never make a test pass.

    The patterns are assembled so that this file does not itself name the folder it forbids.
    """
    sibling = "sha" + "red"
    patterns = (f'"{sibling}"', f"../{sibling}", "parents[" + "2]")
    offenders = []
    for p in sorted(set(TESTS.glob("*.py")) - {Path(__file__).resolve()}):
        text = p.read_text()
        if any(pattern in text for pattern in patterns):
            offenders.append(p.name)
    assert offenders == [], offenders


def _run_suite(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    shutil.copy(TESTS / "skip_allowlist.txt", tmp_path / "skip_allowlist.txt")
    (tmp_path / "fixtures" / "faces").mkdir(parents=True)
    (tmp_path / "test_probe.py").write_text("import pytest\n\n" + body)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_skip_for_an_unlisted_reason_fails_the_run(tmp_path):
    res = _run_suite(tmp_path, "def test_x():\n    pytest.skip('the fixture photo is missing')\n")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Skips not on tests/skip_allowlist.txt" in res.stdout
    assert "the fixture photo is missing" in res.stdout


def test_an_allow_listed_skip_passes(tmp_path):
    res = _run_suite(tmp_path, "def test_x():\n    pytest.skip('chromium not installed (apt-get)')\n")
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_missing_fixture_is_a_failure_not_a_skip(tmp_path):
    res = _run_suite(tmp_path, "def test_x(faces_dir):\n    pass\n")
    assert res.returncode == 1 and "1 error" in res.stdout, res.stdout
    assert "skipped" not in res.stdout
