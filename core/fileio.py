"""One home for how IdentityLock writes files: checked before the work, atomic, confined, normal permissions.

Why one module: every command and node writes something (crops, identity files, catalogs, LoRAs, reports,
checkpoints). Done separately, each got a different subset of right: some checked the output folder only after
minutes of work, some left ``.tmp`` files behind, some wrote mode 0600 (``mkstemp``/safetensors defaults), some
silently replaced an existing file, and a name like ``../../x`` escaped the output folder. These helpers do each
of those things once:

- :func:`check_output_dir` / :func:`check_output_file` — fail *before* the work with a sentence that says what
  to change (read-only folder, a file where a folder should be, an existing file without ``overwrite``).
- :func:`atomic_write` — write through a temporary file in the same folder, fsync, rename; on any error the
  temporary is removed, the old file is untouched. The result gets the user's normal permissions (umask).
- :func:`confined_name` / :func:`confined_path` — a user-supplied name or prefix becomes one safe file-name
  component inside a chosen folder, never a path out of it.
- :func:`unique_path` — a name that does not clobber an earlier output (``me.png`` → ``me_2.png``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import IdentityLockError

#: Longest file-name component we create. Linux allows 255 bytes; we leave room for suffixes such as
#: ``_main.png``, ``.partial`` and ``_2`` that are added to a user's stem.
MAX_NAME_BYTES = 180


class OutputPathError(IdentityLockError, ValueError):
    """An output location that cannot be written (read-only, a file where a folder should be, exists...)."""


def default_file_mode() -> int:
    """0666 minus the process umask: what ``open(..., 'w')`` gives, the permissions users expect."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_output_dir(path: str | os.PathLike, what: str = "output folder", create: bool = True) -> Path:
    """Make sure ``path`` is (or can become) a writable folder; raise a clear error *before* any work.

    Creates it (with parents) when ``create``. Probes writability with a real temporary file, because
    permission bits lie for root, read-only mounts and ACLs.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"the {what} {p} is an existing file, not a folder: choose a folder path")
    if not p.exists():
        if not create:
            raise OutputPathError(f"the {what} {p} does not exist: create it first")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputPathError(
                f"cannot create the {what} {p} ({exc.strerror or exc}): choose a writable location"
            ) from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".identitylock-write-check.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(
            f"cannot write into the {what} {p} ({exc.strerror or exc}): choose a writable folder"
        ) from None
    return p


def check_output_file(path: str | os.PathLike, overwrite: bool = False, what: str = "output file") -> Path:
    """Check, before the work, that ``path`` can be written: its folder is writable, it is not a folder, and
    it does not exist unless ``overwrite`` (the user must say so; we never replace a file without a word)."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"the {what} {p} is a folder: give a file name")
    if p.exists() and not overwrite:
        raise OutputPathError(
            f"the {what} {p} already exists: pass --overwrite to replace it, or choose another name"
        )
    check_output_dir(p.parent if str(p.parent) else Path("."), what=f"folder of the {what}")
    if len(os.fsencode(p.name)) > 255:
        raise OutputPathError(f"the {what} name is longer than 255 bytes: choose a shorter name")
    return p


@contextlib.contextmanager
def _replaced_via_temporary(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(fd, name)`` of a temporary beside ``path``; on success it gets normal permissions and is renamed
    over ``path``, on any error it is removed and ``path`` is untouched."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name[:MAX_NAME_BYTES]}.", suffix=".partial", dir=target.parent
    )
    try:
        yield fd, tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    except BaseException:  # the caller has closed ``fd`` (closing it twice could close a reused descriptor)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", fsync: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success rename it over ``path``, on error remove it.

    Readers never see half a file, a crash never destroys the previous version, and the file ends up with the
    user's normal permissions.
    """
    with _replaced_via_temporary(path) as (fd, _tmp):
        fh = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
        with fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())


def atomic_write_with(path: str | os.PathLike, writer: Callable[[str], Any]) -> Path:
    """For libraries that write by file name (safetensors, PIL, torch.save): ``writer(tmp_path)`` writes a
    temporary beside ``path``, which is then renamed over it with normal permissions; errors leave no trace."""
    with _replaced_via_temporary(path) as (fd, tmp):
        os.close(fd)
        writer(tmp)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int = 1, default: Any = None) -> Path:
    """JSON through :func:`atomic_write` (UTF-8, trailing newline)."""
    with atomic_write(path, "w") as fh:
        json.dump(data, fh, indent=indent, ensure_ascii=False, default=default)
        fh.write("\n")
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


_UNSAFE = re.compile(r"[^\w.\-]+", re.UNICODE)


def confined_name(name: str, what: str = "name", max_bytes: int = MAX_NAME_BYTES) -> str:
    """A user-supplied name or prefix as one safe file-name component.

    Path separators, ``..``, control characters (a newline could forge a row in a printed table) and other
    unsafe characters become ``_``; leading dots are dropped (no hidden files, no ``..``); the result is cut to
    ``max_bytes`` of UTF-8. An empty result is an error.
    """
    text = unicodedata.normalize("NFC", str(name))
    text = _UNSAFE.sub("_", text).strip("._")
    encoded = text.encode("utf-8")[:max_bytes]
    text = encoded.decode("utf-8", errors="ignore").rstrip("._")
    if not text:
        raise OutputPathError(
            f"the {what} {name!r} has no usable characters: use letters, digits, '-' or '_'"
        )
    return text


def confined_path(folder: str | os.PathLike, name: str, what: str = "name") -> Path:
    """``folder / confined_name(name)``, verified to stay inside ``folder``."""
    base = Path(folder).resolve()
    p = (base / confined_name(name, what)).resolve()
    if p.parent != base:
        raise OutputPathError(f"the {what} {name!r} would write outside {base}")
    return p


def short_stem(stem: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """Cut a file stem to ``max_bytes`` of UTF-8 (legal 249-byte input names plus our suffixes exceed 255)."""
    return stem.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore") or "image"


def unique_path(path: str | os.PathLike, taken: set[str] | None = None) -> Path:
    """``path`` if it is free (on disk and in ``taken``), else ``stem_2.ext``, ``stem_3.ext``...

    ``taken`` lets a batch reserve names before writing them (two inputs both called ``me.jpg``).
    """
    p = Path(path)
    taken = taken if taken is not None else set()
    candidate, n = p, 1
    while candidate.exists() or str(candidate) in taken:
        n += 1
        candidate = p.with_name(f"{p.stem}_{n}{p.suffix}")
    taken.add(str(candidate))
    return candidate


def printable(text: Any) -> str:
    """A value safe to print in a one-line table cell: control characters (newline, tab, escape) escaped."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in s)
