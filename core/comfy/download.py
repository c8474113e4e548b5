"""Fetching a finished run's files: streamed into a staging folder, moved into ``--out`` only when complete
(so the output folder never holds a half-written image), and never over an existing file (a second run into
the same folder adds ``_2``, ``_3``... instead of replacing the first run's images)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from ..fileio import check_output_dir, default_file_mode, unique_path
from .errors import ProtocolError
from .jobs import Job
from .replies import RunResult
from .transport import ComfyServer

_PLACE_LOCK = threading.Lock()
_EXT = re.compile(r"\.[A-Za-z0-9]{1,8}")


def safe_ext(filename: str, default: str = ".png") -> str:
    """The extension of a server-chosen file name, if it is a plain one (``.png``, ``.webp``...)."""
    ext = os.path.splitext(str(filename))[1]
    return ext if _EXT.fullmatch(ext) else default


def output_name(job: Job, index: int, file: dict[str, str], count: int) -> str:
    suffix = f"_{index + 1:02d}" if count > 1 else ""
    return f"{job.name}{suffix}{safe_ext(file['filename'])}"


def claim_output_dir(out: Path) -> bool:
    """Check (and create) the output folder before any work; True when this call created it."""
    existed = out.exists()
    check_output_dir(out)
    return not existed


def release_output_dir(out: Path, created: bool) -> None:
    """Remove a folder :func:`claim_output_dir` created if nothing was put into it (a failed run leaves nothing)."""
    if created:
        try:
            out.rmdir()
        except OSError:  # not empty: it holds results
            pass


STAGING_PREFIX = ".identitylock-partial-"


def make_staging_root(out: Path) -> Path:
    """The hidden folder a run downloads into, named after this process: a run killed with SIGKILL cannot
    remove its own, so the next run into ``out`` removes those whose process is gone."""
    for old in out.glob(f"{STAGING_PREFIX}*-*"):
        pid = old.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def place(src: Path, target: Path) -> Path:
    """Move ``src`` to ``target``, or to ``target_2``... when that name is taken: never replaces a file.

    A hard link claims a name atomically (it fails if the name exists), also against another process
    writing the same folder; where hard links are not supported, a lock orders this process's threads."""
    while True:
        candidate = unique_path(target)
        try:
            os.link(src, candidate)
        except FileExistsError:
            continue
        except OSError:
            with _PLACE_LOCK:
                candidate = unique_path(target)
                os.replace(src, candidate)
            return candidate
        os.unlink(src)
        return candidate


def download_outputs(
    client: ComfyServer,
    job: Job,
    result: RunResult,
    staging_root: Path,
    out: Path,
    name_files: Callable[[Job, list[dict[str, str]]], list[str]] | None,
    deadline: float | None = None,
    may_replace: Callable[[str], bool] | None = None,
    before_place: Callable[[list[str]], None] | None = None,
) -> list[str]:
    """Download ``result``'s files into a fresh staging folder under ``staging_root``, then move them into
    ``out``; returns their final paths. An existing file is replaced only when ``may_replace(name)`` says so
    (``generate`` re-running a job of its own catalog); otherwise the new file gets a free name.
    ``before_place(names)`` runs once the files are complete, just before the first is moved in (to record
    which names a job is about to take, so a run killed in between can be resumed without a duplicate)."""
    if not result.files:
        return []
    staging = Path(tempfile.mkdtemp(prefix="job-", dir=staging_root))
    try:
        names = (
            name_files(job, result.files)
            if name_files
            else [output_name(job, i, f, len(result.files)) for i, f in enumerate(result.files)]
        )
        for f, name in zip(result.files, names):
            with open(staging / name, "wb") as fh:
                client.view_to(fh, f["filename"], f["subfolder"], f["type"], deadline=deadline)
                if not fh.tell():
                    raise ProtocolError(f"{client.url}/view {f['filename']}: the server sent an empty file")
            os.chmod(staging / name, default_file_mode())
        out.mkdir(parents=True, exist_ok=True)
        if before_place is not None:
            before_place(list(names))
        placed = []
        for name in names:
            if may_replace is not None and may_replace(name):
                os.replace(staging / name, out / name)
                placed.append(str(out / name))
            else:
                placed.append(str(place(staging / name, out / name)))
        return placed
    finally:
        shutil.rmtree(staging, ignore_errors=True)
