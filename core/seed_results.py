"""What a seed search keeps of each seed, so it runs at any size: its results file (written as the search goes,
read back to resume it), a bounded set of images in memory, and a one-line reason when a seed failed.

Images: a 4,096-seed search at 1024 px would hold about 13 GB if every render were kept; :class:`HeldImages`
keeps only the best few by rank and tells the caller which seeds it let go.

Results file: a search of thousands of seeds runs for hours, and a crash, a kill or a cancel at seed k
must not lose the k records already measured. One JSON line per seed is appended (and flushed) as soon as the
seed is scored, after a header line that says what was searched; ``--resume`` (the node's ``resume``) reads the
lines back and skips those seeds. A line torn by a kill is dropped on resume (that seed is rendered again). A
header that does not match the new search (another reference, threshold or sampling parameters) is refused:
mixing two searches in one ranking would be wrong.
"""

from __future__ import annotations

import heapq
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import IdentityLockError

RESULTS_FORMAT = "identitylock.seed_search.records"
RESULTS_NAME = "seed_search.jsonl"


def rank_key(r: Any) -> tuple[int, float, int]:
    """The ranking of a seed record: one face by drift, then several faces by drift, then misses; ties by seed."""
    if r.drift is None or not math.isfinite(r.drift):
        return (2, 0.0, r.seed)
    return (0 if r.faces <= 1 else 1, r.drift, r.seed)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA, MPS), a RuntimeError that says "out of memory", or a host MemoryError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def describe_error(exc: BaseException) -> str:
    """One line for a seed's record: our errors as they are, anything else with its type (kept short)."""
    text = str(exc) if isinstance(exc, IdentityLockError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


class HeldImages:
    """The renders a search keeps in memory: the best ``limit`` by rank (None = every one, for small searches).

    A 4,096-seed search at 1024 px would otherwise hold about 13 GB of images. ``on_drop(seed)`` is called for
    each seed whose image is not (or no longer) held, so a caller can drop what it keeps beside it (latents)."""

    def __init__(self, limit: int | None, on_drop: Callable[[int], None] | None = None):
        self.limit = limit
        self.images: dict[int, Any] = {}
        self._heap: list[tuple[Any, int]] = []  # (negated rank key, seed): the worst held image on top
        self._on_drop = on_drop

    def _drop(self, seed: int) -> None:
        self.images.pop(seed, None)
        if self._on_drop is not None:
            self._on_drop(seed)

    def offer(self, record: Any, image: Any) -> None:
        if image is None or self.limit == 0:
            self._drop(record.seed)
            return
        self.images[record.seed] = image
        if self.limit is None:
            return
        g, d, s = rank_key(record)
        heapq.heappush(self._heap, ((-g, -d, -s), record.seed))
        if len(self._heap) > self.limit:
            self._drop(heapq.heappop(self._heap)[1])


def _header(backend: str, model: str, threshold: float, parameters: dict[str, Any]) -> dict[str, Any]:
    # through JSON once, so a header read back compares equal (tuples become lists, ints stay ints)
    return json.loads(
        json.dumps(
            {"format": RESULTS_FORMAT, "backend": backend, "model": model, "threshold": float(threshold),
             "parameters": parameters},
            default=str,
        )
    )  # fmt: skip


def _valid_record(d: dict[str, Any]) -> bool:
    """A record line we can rank: a hand-edited or foreign line that is not is rendered again instead."""
    drift = d.get("drift")
    return (
        type(d.get("seed")) is int
        and d["seed"] >= 0
        and (drift is None or (type(drift) in (int, float) and math.isfinite(drift)))
        and type(d.get("faces", 0)) is int
        and type(d.get("locked", False)) is bool
        and all(d.get(k) is None or isinstance(d[k], str) for k in ("error", "rescue", "detector", "path"))
    )


def read_results(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) of a results file; a torn or unreadable record line is skipped (rendered again)."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise IdentityLockError(f"cannot read the seed search results {p} ({exc.strerror or exc})") from None
    header: dict[str, Any] | None = None
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(data, dict):
            continue
        if i == 0:
            header = data
        elif _valid_record(data):
            records.append(data)
    if header is None or header.get("format") != RESULTS_FORMAT:
        raise IdentityLockError(
            f"{p} is not a seed search results file: choose another output folder or results name"
        )
    return header, records


class ResultsFile:
    """Append-only JSON-lines record of a search: ``open`` (fresh or resumed), ``append`` per seed, ``close``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fh: IO[str] | None = None

    def start(
        self, backend: str, model: str, threshold: float, parameters: dict[str, Any], resume: bool
    ) -> list[dict[str, Any]]:
        """Open for appending; return the records of a resumed search (empty when starting fresh).

        Resuming rewrites the file atomically with its valid lines first, so a torn last line never glues
        onto the next record."""
        from .fileio import atomic_write

        header = _header(backend, model, threshold, parameters)
        done: list[dict[str, Any]] = []
        if resume and self.path.exists():
            old, done = read_results(self.path)
            diff = sorted(k for k in header if old.get(k) != header[k] and k != "parameters")
            old_params, new_params = old.get("parameters") or {}, header["parameters"]
            diff += sorted(
                f"parameters.{k}"
                for k in set(old_params) | set(new_params)
                if old_params.get(k) != new_params.get(k)
            )
            if diff:
                raise IdentityLockError(
                    f"cannot resume: {self.path} was written by a search with other settings "
                    f"({', '.join(diff)}); use the same settings, another output folder, or start without resume"
                )
        seen: set[int] = set()
        unique = []
        for rec in done:  # a seed recorded twice (resumed after a kill between two writes) counts once
            if rec["seed"] not in seen:
                seen.add(rec["seed"])
                unique.append(rec)
        with atomic_write(self.path, "w") as fh:
            for item in [header, *unique]:
                fh.write(json.dumps(item, default=str) + "\n")
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        return unique

    def append(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            raise IdentityLockError("the seed search results file is not open")
        self._fh.write(json.dumps(record, default=str) + "\n")
        self._fh.flush()

    def sync(self) -> None:
        """Flush to disk (after each batch: a power cut loses at most one batch)."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self.sync()
            self._fh.close()
            self._fh = None
