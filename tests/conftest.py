"""Shared fixtures. Tests run offline: no hub downloads, real dlib on the committed face photos.

Everything the suite needs is inside the repository (tests/fixtures/, see ATTRIBUTION.md): a fresh clone runs it
whole. A missing fixture is a failure, never a skip. A skip is allowed only for a reason listed in
tests/skip_allowlist.txt (a tool that a developer's machine may lack and CI installs); any other skip turns the
run red, so nothing is hidden behind "s".
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# A developer's own `identitylock calibrate --save` must not change the thresholds the tests measure against.
os.environ["IDENTITYLOCK_CONFIG_DIR"] = tempfile.mkdtemp(prefix="identitylock_config_")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FACES = FIXTURES / "faces"
SKIP_ALLOWLIST = Path(__file__).resolve().parent / "skip_allowlist.txt"


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The committed test photos (tests/fixtures/faces: labels.csv + SOURCES.md say what each is)."""
    assert (FACES / "labels.csv").exists(), f"test photos missing from {FACES}: the checkout is incomplete"
    return FACES


@pytest.fixture(scope="session")
def face_labels(faces_dir: Path) -> list[dict[str, str]]:
    """Rows of labels.csv: file, identity, faces_expected, notes."""
    with open(faces_dir / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _allowed_skip_patterns() -> list[re.Pattern]:
    lines = SKIP_ALLOWLIST.read_text().splitlines()
    return [re.compile(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a test was skipped for a reason that is not on the allow-list."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    patterns = _allowed_skip_patterns()
    unexpected = []
    for report in reporter.stats.get("skipped", []):
        reason = _skip_reason(report)
        if not any(p.search(reason) for p in patterns):
            unexpected.append(f"{report.nodeid}: {reason}")
    if unexpected:
        reporter.write_line("")
        reporter.write_line("Skips not on tests/skip_allowlist.txt (each is a failure):", red=True, bold=True)
        for line in unexpected:
            reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
