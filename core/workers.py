"""The one process pool of IdentityLock: ordered, bounded, and a worker that dies never loses the batch.

Why processes: dlib holds the GIL, so face analysis only scales on several cores with processes. Why one pool:
face analysis (``faces.analyze_many``/``FacePool``) and curation (``records.iter_records``) both need the same
things — ``spawn`` workers (safe inside servers that already initialised CUDA, such as ComfyUI), one engine per
worker loaded once, a bounded number of items in flight so memory stays flat, results in input order — and the
same guarantee: *one image that kills a worker (segfault, abort, OOM-kill) must never lose the batch*.

How a worker is initialised: the pool is given ``setup`` and ``setup_args`` (module-level, picklable). Each
worker calls ``setup(*setup_args)`` once, in the initializer, and keeps the returned *context* (the engine, the
quality config, ...) in a dict keyed by this pool's id; tasks are ``task(context, item)``. The only module-level
state is that dict, and it lives only in worker processes, which belong to exactly one pool and die with it, so
nothing leaks from one run into the next. With ``workers=1`` everything runs in the calling process with the
context held by the pool object (no global at all) — used by the ComfyUI nodes; there a crash cannot be isolated.

Crash isolation: when a worker dies, ``ProcessPoolExecutor`` fails every item in flight. Results that had already
arrived are kept; the items in flight are retried one at a time in a fresh single worker; an item that kills that
worker again is reported through ``crashed(item, reason)`` (the caller turns it into a failed result with a reason)
and the rest go on. An exception raised by ``setup`` is not a crash: it is re-raised in the caller, unchanged.
"""

from __future__ import annotations

import os
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import IdentityLockError

CRASH_REASON = "its worker process died (crash, abort or out of memory)"
#: Isolated retries that crash in a row before we conclude it is not the images (a broken install, no memory).
MAX_CRASHES_IN_A_ROW = 5


class WorkerCrashError(IdentityLockError):
    """Worker processes keep dying whatever the item: the cause is the environment, not one input."""


# Worker processes only: pool id -> context made by ``setup`` (or the setup error). See the module docstring.
_contexts: dict[str, Any] = {}


class _SetupFailed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _limit_threads() -> None:
    """One thread per worker for OpenMP/OpenCV: the pool already uses every core."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover - OpenCV missing or odd build
        pass


def _worker_init(pool_id: str, setup: Callable[..., Any], setup_args: tuple) -> None:
    """The one way a worker starts: limit threads, build this pool's context once."""
    _limit_threads()
    try:
        _contexts[pool_id] = setup(*setup_args)
    except Exception as exc:  # re-raised by each task, so the caller sees the real error, not a "crash"
        _contexts[pool_id] = _SetupFailed(exc)


def _context(pool_id: str) -> Any:
    ctx = _contexts[pool_id]
    if isinstance(ctx, _SetupFailed):
        raise ctx.exc
    return ctx


def _worker_run(pool_id: str, task: Callable[[Any, Any], Any], item: Any) -> Any:
    return task(_context(pool_id), item)


def _worker_ready(pool_id: str) -> bool:
    _context(pool_id)
    return True


class WorkerPool:
    """Run ``task(context, item)`` over many items on ``workers`` processes, in order, surviving crashes.

    ``crashed(item, reason)`` makes the result for an item that killed its worker twice (default: raise).
    ``window`` bounds the items in flight (memory stays flat; a crash re-runs at most ``window`` items).
    """

    def __init__(
        self,
        task: Callable[[Any, Any], Any],
        setup: Callable[..., Any],
        setup_args: tuple = (),
        *,
        workers: int | None = None,
        crashed: Callable[[Any, str], Any] | None = None,
        window: int | None = None,
    ):
        self.task, self.setup, self.setup_args = task, setup, tuple(setup_args)
        self.workers = max(1, workers or (os.cpu_count() or 1))
        self.window = max(1, window or 8 * self.workers)
        self.crashed = crashed
        self.crashes = 0  # worker deaths seen (for reports and tests)
        self._id = uuid.uuid4().hex
        self._local: Any = None
        self._executor: Any = None
        if self.workers == 1:
            self._local = setup(*self.setup_args)
        else:
            self._executor = self._start(self.workers)

    # -- executor lifecycle ------------------------------------------------------------------------------------
    def _start(self, n: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(
            n,
            mp_context=mp.get_context("spawn"),
            initializer=_worker_init,
            initargs=(self._id, self.setup, self.setup_args),
        )

    def warm(self) -> None:
        """Start every worker and build its context now, not inside the first timed batch."""
        if self._executor is not None:
            list(self._executor.map(_worker_ready, [self._id] * (2 * self.workers), chunksize=1))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._local = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- running -----------------------------------------------------------------------------------------------
    def map(self, items: Iterable[Any], progress: Callable[[int, int], None] | None = None) -> list[Any]:
        return list(self.imap(items, progress))

    def imap(self, items: Iterable[Any], progress: Callable[[int, int], None] | None = None) -> Iterator[Any]:
        """Yield one result per item, in input order."""
        items = list(items)
        total = len(items)
        source = self._local_results(items) if self.workers == 1 else self._pool_results(items)
        for done, result in enumerate(source, 1):
            if progress:
                progress(done, total)
            yield result

    def _local_results(self, items: list[Any]) -> Iterator[Any]:
        for item in items:
            yield self.task(self._local, item)

    def _pool_results(self, items: list[Any]) -> Iterator[Any]:
        from concurrent.futures import wait
        from concurrent.futures.process import BrokenProcessPool

        ready: dict[int, Any] = {}
        pending: deque = deque()  # (index, future)
        nxt = 0
        for out in range(len(items)):
            while nxt < len(items) and len(pending) < self.window:
                if self._executor is None:  # first use after a crash
                    self._executor = self._start(self.workers)
                pending.append((nxt, self._executor.submit(_worker_run, self._id, self.task, items[nxt])))
                nxt += 1
            while out not in ready:
                index, fut = pending[0]
                try:
                    ready[index] = fut.result()
                    pending.popleft()
                except BrokenProcessPool:
                    wait([f for _, f in pending])
                    suspects = []
                    for i, f in pending:  # keep what arrived before the crash, retry the rest
                        if f.exception() is None:
                            ready[i] = f.result()
                        else:
                            suspects.append(i)
                    pending.clear()
                    self.crashes += 1
                    self._executor.shutdown(wait=True)
                    self._executor = None
                    ready.update(self._isolate([(i, items[i]) for i in suspects]))
            yield ready.pop(out)

    def _isolate(self, suspects: list[tuple[int, Any]]) -> dict[int, Any]:
        """Re-run items one at a time in a fresh single worker; the one that kills it again is ``crashed``."""
        from concurrent.futures.process import BrokenProcessPool

        out: dict[int, Any] = {}
        single = None
        in_a_row = 0
        try:
            for i, item in suspects:
                single = single or self._start(1)
                try:
                    out[i] = single.submit(_worker_run, self._id, self.task, item).result()
                    in_a_row = 0
                except BrokenProcessPool:
                    self.crashes += 1
                    in_a_row += 1
                    single.shutdown(wait=True)
                    single = None
                    if self.crashed is None:
                        raise
                    if in_a_row >= MAX_CRASHES_IN_A_ROW:
                        raise WorkerCrashError(
                            f"worker processes died on {in_a_row} different items in a row, so the cause is not "
                            "one bad image: check free memory and the face engine installation (identitylock "
                            "doctor), or run with --workers 1 to see the error"
                        ) from None
                    out[i] = self.crashed(item, CRASH_REASON)
        finally:
            if single is not None:
                single.shutdown(wait=True)
        return out


def default_workers(total: int, workers: int | None) -> int:
    """``workers`` or all cores, never more processes than items."""
    return max(1, workers or min(os.cpu_count() or 1, max(1, total)))
