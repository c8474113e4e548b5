"""Many jobs over many servers: ``per_server`` worker threads per server pull the next job; a server that
goes down drops out and its job goes back to the others.

Every job that a worker takes ends as a :class:`JobResult`, finished or failed with a reason: no exception
is left to die with its thread. Jobs are pulled one at a time from the iterable, so a lazy generator of
millions of jobs costs memory only for those running.
"""

from __future__ import annotations

import collections
import copy
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import IdentityLockError
from .download import claim_output_dir, download_outputs, make_staging_root, release_output_dir
from .errors import ServerUnavailable, WorkflowError, exit_code_of
from .jobs import Job, JobResult
from .transport import ComfyServer
from .workflow import set_input

_log = logging.getLogger("IdentityLock")
NO_SERVER_LEFT = "no reachable server left to run this job"
NOT_RUN_AFTER_FAILURE = "not run: the run stopped after an earlier job failed"


class _JobSource:
    """Hands out (sequence number, job): jobs given back by a dead server first, then the iterable's next.

    A worker that finds nothing to take waits while other workers are busy: a job they give back (their
    server died) must still find a taker."""

    def __init__(self, jobs: Iterable[Job], stop: threading.Event):
        self._it = iter(jobs)
        self._stop = stop
        self._again: collections.deque[tuple[int, Job]] = collections.deque()
        self._cv = threading.Condition()
        self._seq = 0
        self._busy = 0
        self._exhausted = False

    def take(self) -> tuple[int, Job] | None:
        with self._cv:
            while not self._stop.is_set():
                if self._again:
                    self._busy += 1
                    return self._again.popleft()
                if not self._exhausted:
                    try:
                        job = next(self._it)
                    except StopIteration:
                        self._exhausted = True
                        continue
                    self._seq += 1
                    self._busy += 1
                    return self._seq, job
                if not self._busy:
                    return None
                self._cv.wait(0.2)
            return None

    def done(self, item: tuple[int, Job] | None = None) -> None:
        """A taken job ended (``item`` None) or goes back for another server (``item``)."""
        with self._cv:
            self._busy -= 1
            if item is not None:
                self._again.append(item)
            self._cv.notify_all()

    def rest(self, drain: bool) -> list[tuple[int, Job]]:
        """Jobs given back and never taken again; with ``drain``, also the iterable's remaining ones."""
        with self._cv:
            items, self._again = list(self._again), collections.deque()
            while drain and not self._exhausted:
                try:
                    job = next(self._it)
                except StopIteration:
                    break
                self._seq += 1
                items.append((self._seq, job))
            return items


def run_jobs(
    jobs: Iterable[Job],
    servers: list[str | ComfyServer],
    out_dir: str | os.PathLike,
    **options: Any,
) -> list[JobResult]:
    """Run ``jobs`` with :func:`stream_jobs` and return every result, in job order.

    Holds every result in memory: for a handful of jobs (a library call, a test). For a long run (a seed
    range, thousands of jobs) use :func:`stream_jobs` with ``on_result``, whose memory stays flat.
    For a list of jobs every job gets a result; for a lazy iterable, jobs never taken (the run stopped) are
    not in the results: compare their number with yours.
    """
    results: list[tuple[int, JobResult]] = []
    stream_jobs(
        jobs,
        servers,
        out_dir,
        on_result=lambda seq, r: results.append((seq, r)),
        drain=isinstance(jobs, Sequence),
        **options,
    )
    results.sort(key=lambda r: r[0])
    return [r for _, r in results]


def stream_jobs(
    jobs: Iterable[Job],
    servers: list[str | ComfyServer],
    out_dir: str | os.PathLike,
    *,
    on_result: Callable[[int, JobResult], None],
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    on_done: Callable[[JobResult], None] | None = None,
    on_place: Callable[[Job, list[str]], None] | None = None,
    timeout: float | None = None,
    per_server: int = 1,
    stop_on_error: bool = False,
    stop_on_bad_input: bool = False,
    name_files: Callable[[Job, list[dict[str, str]]], list[str]] | None = None,
    may_replace: Callable[[str], bool] | None = None,
    drain: bool = False,
) -> None:
    """Run ``jobs`` over ``servers`` and collect their files in ``out_dir``; each result goes to ``on_result``.

    Memory is flat in the number of jobs: jobs are pulled from the iterable one at a time as a worker frees
    up (a generator of 10^8 jobs is fine), and nothing is kept after ``on_result(seq, result)`` returns.
    Each server gets ``per_server`` worker threads, so at most that many of its jobs are in flight (queued or
    running there) at once: 2 keeps a GPU busy while the previous job's files download.

    A server that turns out unreachable stops taking jobs; its job goes back to the queue for the others.
    When none is left, the run stops. ``timeout`` is a deadline per job (upload, wait in the server's queue,
    run and download together). Output files are downloaded into a staging folder inside ``out_dir`` and
    moved in only when the job's files are all complete (``on_place(job, names)`` runs just before), never
    over an existing file unless ``may_replace(name)``. ``on_done`` runs (serialised) after each finished job,
    e.g. to record it; if it raises, that job is reported failed. ``on_result`` runs (serialised) for every
    job that ended, finished or failed. ``stop_on_bad_input`` stops taking new jobs after one fails for bad
    input (the same workflow would be refused for all). Jobs given back by a dead server and never run get
    a failed result; with ``drain`` (a list of jobs), so do the iterable's remaining ones.
    """
    if per_server < 1:
        raise WorkflowError(f"--per-server must be at least 1, got {per_server}")
    clients = [s if isinstance(s, ComfyServer) else ComfyServer(s) for s in servers]
    if not clients:
        raise WorkflowError("no --server given")
    out = Path(out_dir)
    created = claim_output_dir(out)
    staging_root = make_staging_root(out)
    stop = threading.Event()
    source = _JobSource(jobs, stop)
    failures: list[BaseException] = []  # errors outside any job (the job iterable itself raised)
    lock = threading.Lock()
    alive = {c.url: True for c in clients}
    emit = on_event or (lambda kind, data: None)

    def finish(seq: int, result: JobResult) -> None:
        with lock:
            if on_done is not None and result.ok:
                try:
                    on_done(result)
                except Exception as exc:  # e.g. the results file cannot be written: the job is not recorded
                    result.error = f"finished, but could not be recorded: {type(exc).__name__}: {exc}"
                    result.exit_code = exit_code_of(exc)
            on_result(seq, result)
        source.done()
        emit(
            "done", {"server": result.server, "job": result.job.name, "ok": result.ok, "error": result.error}
        )
        if not result.ok and (stop_on_error or (stop_on_bad_input and result.exit_code == 2)):
            stop.set()

    def worker(client: ComfyServer) -> None:
        try:
            work(client)
        except BaseException as exc:  # outside any job (the job iterable, a callback): raise it in the caller
            failures.append(exc)
            stop.set()

    def work(client: ComfyServer) -> None:
        while not stop.is_set() and alive[client.url]:
            item = source.take()
            if item is None:
                return
            seq, job = item
            emit("start", {"server": client.url, "job": job.name})
            try:
                result = _run_one(
                    client, job, staging_root, out, emit, timeout, name_files, may_replace, on_place
                )
            except ServerUnavailable as exc:
                with lock:
                    alive[client.url] = False
                    others = any(alive.values())
                if others:
                    source.done(item)  # another server will take it
                    emit("server_down", {"server": client.url, "error": str(exc)})
                    return
                finish(seq, JobResult(job, client.url, error=str(exc), exit_code=exit_code_of(exc)))
                stop.set()  # no server left: the other jobs are reported as not run
                return
            except Exception as exc:  # every job ends finished or failed with its reason, never lost
                _log.debug("job %s on %s failed", job.name, client.url, exc_info=True)
                message = (
                    str(exc)
                    if isinstance(exc, IdentityLockError)
                    else f"unexpected {type(exc).__name__}: {exc}"
                )
                result = JobResult(job, client.url, error=message, exit_code=exit_code_of(exc))
            finish(seq, result)

    # Each worker has its own client (its own websocket clientId); a server's workers share its upload cache.
    workers = [c if i == 0 else c.sibling() for c in clients for i in range(per_server)]
    threads = [
        threading.Thread(target=worker, args=(c,), daemon=True, name=f"comfy-{c.url}") for c in workers
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        raise
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
        release_output_dir(out, created)
    if failures:
        raise failures[0]
    reason = NO_SERVER_LEFT if not any(alive.values()) else NOT_RUN_AFTER_FAILURE
    for seq, job in source.rest(drain=drain):
        on_result(seq, JobResult(job, "", error=reason))


def _run_one(
    client: ComfyServer,
    job: Job,
    staging_root: Path,
    out: Path,
    emit: Callable[[str, dict[str, Any]], None],
    timeout: float | None,
    name_files: Callable[[Job, list[dict[str, str]]], list[str]] | None,
    may_replace: Callable[[str], bool] | None,
    on_place: Callable[[Job, list[str]], None] | None = None,
) -> JobResult:
    deadline = None if timeout is None else time.monotonic() + timeout
    prompt = job.prompt
    if job.uploads:
        prompt = copy.deepcopy(prompt)
        for target, path in job.uploads.items():
            ref, name = target.rsplit(".", 1) if "." in target else (target, "image")
            uploaded = client.upload_image(path, deadline=deadline)
            set_input(prompt, ref, name, uploaded, parse=False)
    result = client.run(
        prompt, on_progress=lambda info: emit("progress", dict(info, job=job.name)), deadline=deadline
    )
    before_place = None if on_place is None else (lambda names: on_place(job, names))
    files = download_outputs(
        client, job, result, staging_root, out, name_files, deadline, may_replace, before_place
    )
    return JobResult(job, client.url, result.prompt_id, files, None)
