"""Fetching a finished run's files: downloaded into a staging folder, moved into ``--out`` only when complete,
so the output folder never holds a half-written image."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .jobs import Job
from .transport import ComfyServer, RunResult


def output_name(job: Job, index: int, file: dict[str, str], count: int) -> str:
    ext = os.path.splitext(file["filename"])[1] or ".png"
    suffix = f"_{index + 1:02d}" if count > 1 else ""
    return f"{job.name}{suffix}{ext}"


def _move_into(staging: Path, out_dir: Path, names: list[str]) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for name in names:
        target = out_dir / name
        os.replace(staging / name, target)  # same filesystem: atomic per file
        done.append(str(target))
    return done


def download_outputs(
    client: ComfyServer,
    job: Job,
    result: RunResult,
    staging_root: Path,
    out: Path,
    name_files: Callable[[Job, list[dict[str, str]]], list[str]] | None,
) -> list[str]:
    """Download ``result``'s files into a fresh staging folder under ``staging_root``, then move them into
    ``out``; returns their final paths."""
    if not result.files:
        return []
    staging = Path(tempfile.mkdtemp(prefix="job-", dir=staging_root))
    names = (
        name_files(job, result.files)
        if name_files
        else [output_name(job, i, f, len(result.files)) for i, f in enumerate(result.files)]
    )
    for f, name in zip(result.files, names):
        data = client.view(f["filename"], f["subfolder"], f["type"])
        (staging / name).write_bytes(data)
    files = _move_into(staging, out, names)
    shutil.rmtree(staging, ignore_errors=True)
    return files
