"""The results file of a fan-out: JSON Lines, one record appended per event, so a killed run loses nothing.

Why not one JSON list rewritten now and then: at 100,000 jobs that list is tens of MB held in memory and
rewritten again and again, and a kill between two rewrites loses what finished since the last one. Here each
record is one line written with a single ``write`` and flushed at once (a ``kill -9`` of the client cannot
lose it: it is in the kernel), and the file is fsynced at most every second and when the run ends (a power cut
loses at most that last second; those jobs are simply run again on ``--resume``).

Records (``status``):

- ``run``: a run started (workflow file, fingerprint of the workflow with its seeds blanked, seed spec);
- ``placing``: a job's files are about to be moved into the output folder (the names they will get);
- ``done``: a job finished (``job``, ``seed``, ``server``, ``prompt_id``, ``files``).

A failed job is not recorded (its error is on stderr; ``--resume`` runs it again), so a run that fails at
once leaves no file behind.

Reading it back (:func:`read_records`) skips a line torn by a kill; appending after such a line starts a new one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import ComfyError

#: Longest line read back (a record is a few hundred bytes; a longer line is not ours and is skipped).
MAX_LINE_BYTES = 1 << 20


class ResultsLog:
    """Append-only writer of a results file; thread-safe (worker threads call :meth:`append`)."""

    def __init__(self, path: str | os.PathLike, fsync_every: float = 1.0):
        self.path = Path(path)
        self._fsync_every = fsync_every
        self._lock = threading.Lock()
        self._last_sync = time.monotonic()
        try:
            self._fh = open(self.path, "ab")
            if self._fh.tell() and not _ends_with_newline(self.path):
                self._fh.write(b"\n")  # the last line was torn by a kill: start a fresh one
                self._fh.flush()
        except OSError as exc:
            raise ComfyError(
                f"cannot write the results file {self.path} ({exc.strerror or exc}): free space or fix "
                "the permissions of --out"
            ) from None

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=True, default=str) + "\n").encode()
        with self._lock:
            self._fh.write(line)
            self._fh.flush()  # one write(2) per record: in the kernel now, a kill -9 cannot lose it
            if time.monotonic() - self._last_sync >= self._fsync_every:
                os.fsync(self._fh.fileno())
                self._last_sync = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._fh.closed:
                return
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            finally:
                self._fh.close()

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The records of a results file, one at a time (constant memory); torn or foreign lines are skipped."""
    p = Path(path)
    if not p.exists():
        return
    try:
        fh = open(p, "rb")
    except OSError as exc:
        raise ComfyError(f"cannot read the results file {p} ({exc.strerror or exc})") from None
    with fh:
        while True:
            line = fh.readline(MAX_LINE_BYTES)
            if not line:
                return
            if not line.endswith(b"\n"):  # longer than a record, or the torn last line of a killed run
                while line and not line.endswith(b"\n"):
                    line = fh.readline(MAX_LINE_BYTES)
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict) and isinstance(record.get("status"), str):
                yield record


class EarlierRuns:
    """What earlier runs of the same plan finished, read back from the results file for ``--resume``.

    Memory does not grow with the number of jobs done: for a seed range it is one bit per seed of the range
    (allocated only when something is done; 12.5 MB for 10^8 seeds), for a seed list or a single job one
    name per planned job. Records of other workflows in the same file are ignored."""

    def __init__(self, stem: str, seeds: Sequence[int] | None):
        self.stem = stem
        self.seeds = seeds
        self.done = 0
        self.fingerprints: set[str] = set()
        self._bits: bytearray | None = None
        self._names: set[str] = set()
        self._placing: dict[str, list[str]] = {}

    def _key(self, record: dict[str, Any]) -> int | str | None:
        """Bit index (seed range) or job name when ``record`` is a job of this plan, else None."""
        name, seed = record.get("job"), record.get("seed")
        if self.seeds is None:
            return name if name == self.stem and seed is None else None
        if not isinstance(seed, int) or name != f"{self.stem}_seed_{seed}" or seed not in self.seeds:
            return None
        return self.seeds.index(seed) if isinstance(self.seeds, range) else name

    def add(self, record: dict[str, Any]) -> None:
        status = record.get("status")
        if status == "run":
            if record.get("stem") == self.stem and isinstance(record.get("fingerprint"), str):
                self.fingerprints.add(record["fingerprint"])
            return
        key = self._key(record)
        if key is None:
            return
        if status == "placing" and isinstance(record.get("files"), list):
            self._placing[record["job"]] = [f for f in record["files"] if isinstance(f, str)]
        elif status == "done":
            self._placing.pop(record["job"], None)
            if isinstance(key, int):
                if self._bits is None:
                    self._bits = bytearray((len(self.seeds) + 7) // 8)  # type: ignore[arg-type]
                if not self._bits[key >> 3] & (1 << (key & 7)):
                    self._bits[key >> 3] |= 1 << (key & 7)
                    self.done += 1
            elif key not in self._names:
                self._names.add(key)
                self.done += 1

    def is_done(self, seed: int | None = None) -> bool:
        """Whether the job of ``seed`` (None: the single job of a run without ``--seeds``) is recorded done."""
        if seed is not None and isinstance(self.seeds, range):
            if self._bits is None or seed not in self.seeds:
                return False
            i = self.seeds.index(seed)
            return bool(self._bits[i >> 3] & (1 << (i & 7)))
        return (self.stem if seed is None else f"{self.stem}_seed_{seed}") in self._names

    def unfinished_files(self) -> set[str]:
        """Names a killed run was moving into the output folder for a job it never recorded as done: the
        resumed job may replace exactly these (they are its own half-placed files), nothing else."""
        return {f for files in self._placing.values() for f in files}

    @classmethod
    def read(cls, path: str | os.PathLike, stem: str, seeds: Sequence[int] | None) -> EarlierRuns:
        state = cls(stem, seeds)
        for record in read_records(path):
            state.add(record)
        return state
