"""Shared fixtures. Tests run offline: no hub downloads, real dlib on the shared face photos."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _faces_dir() -> Path | None:
    env = os.environ.get("IDENTITYLOCK_FACES_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data" / "faces")
    for c in candidates:
        if (c / "labels.csv").exists():
            return c
    return None


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The shared test photos (../shared/data/faces). Skips when absent (e.g. a pip install without shared/)."""
    d = _faces_dir()
    if d is None:
        pytest.skip("shared face photos not found (set IDENTITYLOCK_FACES_DIR to ../shared/data/faces)")
    return d


@pytest.fixture(scope="session")
def face_labels(faces_dir: Path) -> list[dict[str, str]]:
    """Rows of labels.csv: file, identity, faces_expected, notes."""
    with open(faces_dir / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))
