"""Many jobs over many servers: one worker thread per server pulls the next job; a server that goes down
drops out and its job goes back to the others."""

from __future__ import annotations

import copy
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .download import download_outputs
from .errors import ComfyError, ServerUnavailable, WorkflowError
from .jobs import Job, JobResult
from .transport import ComfyServer
from .workflow import set_input


def run_jobs(
    jobs: list[Job],
    servers: list[str | ComfyServer],
    out_dir: str | os.PathLike,
    *,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    on_done: Callable[[JobResult], None] | None = None,
    timeout: float | None = None,
    stop_on_error: bool = False,
    name_files: Callable[[Job, list[dict[str, str]]], list[str]] | None = None,
) -> list[JobResult]:
    """Run ``jobs`` over ``servers`` (one worker thread per server) and collect their files in ``out_dir``.

    A server that turns out unreachable stops taking jobs; its job goes back to the queue for the others.
    Output files are downloaded into a staging folder beside ``out_dir`` and moved in only when the job's
    files are all complete. ``on_done`` runs (serialised) after each job, e.g. to update a catalog.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    clients = [s if isinstance(s, ComfyServer) else ComfyServer(s) for s in servers]
    if not clients:
        raise WorkflowError("no --server given")
    todo: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        todo.put(job)
    results: list[JobResult] = []
    lock = threading.Lock()
    alive = {c.url: True for c in clients}
    stop = threading.Event()
    emit = on_event or (lambda kind, data: None)

    def worker(client: ComfyServer) -> None:
        while not stop.is_set():
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            emit("start", {"server": client.url, "job": job.name})
            try:
                result = _run_one(client, job, staging_root, out, emit, timeout, name_files)
            except ServerUnavailable as exc:
                with lock:
                    alive[client.url] = False
                    others = any(alive.values())
                if others:
                    todo.put(job)  # another server will take it
                    emit("server_down", {"server": client.url, "error": str(exc)})
                    return
                result = JobResult(job, client.url, error=str(exc))
            except ComfyError as exc:
                result = JobResult(job, client.url, error=str(exc))
            except WorkflowError as exc:
                result = JobResult(job, client.url, error=str(exc))
            with lock:
                results.append(result)
                if on_done is not None:
                    on_done(result)
            emit("done", {"server": client.url, "job": job.name, "ok": result.ok, "error": result.error})
            if not result.ok and stop_on_error:
                stop.set()

    threads = [
        threading.Thread(target=worker, args=(c,), daemon=True, name=f"comfy-{c.url}") for c in clients
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
    # Jobs never run because every server went down.
    leftover = []
    while True:
        try:
            leftover.append(todo.get_nowait())
        except queue.Empty:
            break
    for job in leftover:
        if not stop.is_set():
            results.append(JobResult(job, "", error="no reachable server left to run this job"))
    order = {id(j): i for i, j in enumerate(jobs)}
    results.sort(key=lambda r: order.get(id(r.job), 0))
    return results


def _run_one(
    client: ComfyServer,
    job: Job,
    staging_root: Path,
    out: Path,
    emit: Callable[[str, dict[str, Any]], None],
    timeout: float | None,
    name_files: Callable[[Job, list[dict[str, str]]], list[str]] | None,
) -> JobResult:
    prompt = job.prompt
    if job.uploads:
        prompt = copy.deepcopy(prompt)
        for target, path in job.uploads.items():
            ref, name = target.rsplit(".", 1) if "." in target else (target, "image")
            uploaded = client.upload_image(path)
            set_input(prompt, ref, name, uploaded, parse=False)
    result = client.run(
        prompt, on_progress=lambda info: emit("progress", dict(info, job=job.name)), timeout=timeout
    )
    files = download_outputs(client, job, result, staging_root, out, name_files)
    return JobResult(job, client.url, result.prompt_id, files, None)
