"""HTTP + websocket client for ComfyUI servers (the scale-out path: existing ComfyUI workers, no cluster code).

Speaks the protocol a real ComfyUI 0.8 speaks (``../shared/comfyui/protocol/``): ``POST /upload/image``,
``POST /prompt``, progress over ``GET /ws?clientId=``, ``GET /history/{id}``, ``GET /view``. Every failure
becomes a :class:`ComfyError` subclass whose message says what went wrong and what to do about it.

Jobs fan out over several servers with one worker thread per server; each finished job's files are written
to a staging folder and moved into the output folder only when complete, so ``--out`` never holds a
half-written image.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IdentityLockError

_log = logging.getLogger("IdentityLock")

SEED_INPUTS = ("seed", "noise_seed")


class ComfyError(IdentityLockError):
    """Anything that went wrong talking to ComfyUI or running a workflow there."""


class ServerUnavailable(ComfyError):
    """The server cannot be reached (down, wrong URL, refused, timed out)."""


class PromptRejected(ComfyError):
    """``POST /prompt`` refused the workflow (validation ``node_errors`` or an unknown node)."""

    def __init__(self, message: str, node_errors: dict[str, Any] | None = None, error: Any = None):
        super().__init__(message)
        self.node_errors = node_errors or {}
        self.error = error


class ExecutionFailed(ComfyError):
    """The workflow was accepted but a node raised while running."""

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.details = details or {}


class UploadFailed(ComfyError):
    """An input image could not be uploaded."""


class WorkflowError(IdentityLockError, ValueError):
    """The workflow file or a patch (``--set``) cannot be used."""


# --------------------------------------------------------------------------------------------------------------
# Workflows


def is_ui_workflow(data: Any) -> bool:
    """UI-format workflows (what ComfyUI's editor saves) have a ``nodes`` list and ``links``."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def is_api_workflow(data: Any) -> bool:
    """API format: ``{node_id: {"class_type": ..., "inputs": {...}}}``."""
    if not isinstance(data, dict) or not data:
        return False
    return all(isinstance(v, dict) and isinstance(v.get("class_type"), str) for v in data.values())


def load_workflow(path: str | os.PathLike, object_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read an API-format workflow. A UI-format file is converted when ``object_info`` is given."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(f"{p}: workflow file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"{p}: cannot read the workflow ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(
            f"{p}: not a workflow — the file is not JSON ({exc.msg} at line {exc.lineno}). "
            "Export it from ComfyUI with 'Export (API)'."
        ) from None
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and is_api_workflow(data["prompt"]):
        data = data["prompt"]  # a saved POST /prompt body
    if is_api_workflow(data):
        return data
    if is_ui_workflow(data):
        if object_info is None:
            raise WorkflowError(
                f"{p}: this is a UI-format workflow; use the API-format file (workflows/api/...) or "
                "'Export (API)' in ComfyUI"
            )
        from .workflow_validate import ui_to_api

        return ui_to_api(data, object_info)
    raise WorkflowError(
        f"{p}: not a ComfyUI workflow (expected {{node_id: {{'class_type': ..., 'inputs': {{...}}}}}} "
        "or a UI workflow with 'nodes' and 'links')"
    )


def node_title(prompt: dict[str, Any], node_id: str) -> str:
    node = prompt[node_id]
    return (node.get("_meta") or {}).get("title") or node["class_type"]


def find_nodes(prompt: dict[str, Any], ref: str) -> list[str]:
    """Node ids matching ``ref``: an id, else a title (exact, then case-insensitive), else a unique class."""
    if ref in prompt:
        return [ref]
    exact = [nid for nid in prompt if (prompt[nid].get("_meta") or {}).get("title") == ref]
    if exact:
        return exact
    folded = [
        nid for nid in prompt if ((prompt[nid].get("_meta") or {}).get("title") or "").lower() == ref.lower()
    ]
    if folded:
        return folded
    return [nid for nid in prompt if prompt[nid]["class_type"] == ref]


def _describe_nodes(prompt: dict[str, Any]) -> str:
    return ", ".join(f"{nid} '{node_title(prompt, nid)}'" for nid in sorted(prompt, key=_id_key))


def _id_key(nid: str) -> tuple[int, str]:
    return (int(nid), "") if nid.isdigit() else (1 << 30, nid)


def parse_value(text: str, current: Any) -> Any:
    """Interpret a ``--set`` value using the type of the value it replaces."""
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise WorkflowError(f"expected true/false, got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                raise WorkflowError(f"expected an integer, got {text!r}") from None
            if not f.is_integer():
                raise WorkflowError(f"expected an integer, got {text!r}") from None
            return int(f)
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise WorkflowError(f"expected a number, got {text!r}") from None
    if isinstance(current, str) or current is None:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_set(spec: str) -> tuple[str, str, str]:
    """``"Node title.input=value"`` -> (node ref, input, value). Titles may contain dots; inputs may not."""
    if "=" not in spec:
        raise WorkflowError(f"--set {spec!r}: expected 'Node title.input=value' (or 'id.input=value')")
    key, value = spec.split("=", 1)
    if "." not in key:
        raise WorkflowError(
            f"--set {spec!r}: expected 'Node title.input=value' — the '.input' part is missing"
        )
    ref, name = key.rsplit(".", 1)
    ref, name = ref.strip(), name.strip()
    if not ref or not name:
        raise WorkflowError(f"--set {spec!r}: empty node or input name")
    return ref, name, value


def set_input(prompt: dict[str, Any], ref: str, name: str, value: Any, *, parse: bool = True) -> list[str]:
    """Set input ``name`` on every node matching ``ref``; returns the ids changed. Raises on no match."""
    ids = find_nodes(prompt, ref)
    if not ids:
        raise WorkflowError(
            f"no node with id or title {ref!r} in the workflow; nodes are: {_describe_nodes(prompt)}"
        )
    for nid in ids:
        inputs = prompt[nid].setdefault("inputs", {})
        if name not in inputs:
            raise WorkflowError(
                f"node {nid} '{node_title(prompt, nid)}' ({prompt[nid]['class_type']}) has no input {name!r}; "
                f"its inputs are: {', '.join(sorted(inputs)) or '(none)'}"
            )
        current = inputs[name]
        if isinstance(current, list) and len(current) == 2 and isinstance(current[0], str):
            raise WorkflowError(
                f"node {nid} '{node_title(prompt, nid)}': input {name!r} is linked to node {current[0]}; "
                "set the source node's value instead"
            )
        if parse and isinstance(value, str):
            try:
                value = parse_value(value, current)
            except WorkflowError as exc:
                raise WorkflowError(f"node {nid} '{node_title(prompt, nid)}' input {name!r}: {exc}") from None
        inputs[name] = value
    return ids


def apply_sets(prompt: dict[str, Any], specs: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``prompt`` with every ``--set`` applied (all checked before anything is queued)."""
    out = copy.deepcopy(prompt)
    for spec in specs:
        ref, name, value = split_set(spec)
        set_input(out, ref, name, value)
    return out


def seed_targets(prompt: dict[str, Any]) -> list[tuple[str, str]]:
    """(node id, input) pairs holding a literal seed: what ``--seeds`` changes."""
    found = []
    for nid, node in prompt.items():
        for name in SEED_INPUTS:
            if isinstance(node.get("inputs", {}).get(name), int):
                found.append((nid, name))
    return sorted(found, key=lambda t: _id_key(t[0]))


def set_seed(
    prompt: dict[str, Any], seed: int, targets: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    out = copy.deepcopy(prompt)
    targets = seed_targets(out) if targets is None else targets
    if not targets:
        raise WorkflowError("--seeds: the workflow has no literal 'seed' / 'noise_seed' input to vary")
    for nid, name in targets:
        out[nid]["inputs"][name] = int(seed)
    return out


def parse_seed_range(text: str) -> list[int]:
    """``A:B`` (inclusive), ``A:B:STEP`` or a comma list ``1,5,9``."""
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) == 2:
                a, b, step = parts[0], parts[1], 1
            elif len(parts) == 3:
                a, b, step = parts
            else:
                raise ValueError
            if step <= 0 or b < a:
                raise ValueError
            return list(range(a, b + 1, step))
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise WorkflowError(f"--seeds {text!r}: expected A:B (inclusive), A:B:STEP or a list 1,5,9") from None


# --------------------------------------------------------------------------------------------------------------
# One server


def format_node_errors(prompt: dict[str, Any] | None, body: dict[str, Any]) -> str:
    """Turn the ``error`` / ``node_errors`` of a rejected ``POST /prompt`` into readable lines."""
    lines = []
    err = body.get("error")
    if isinstance(err, dict):
        head = err.get("message") or err.get("type") or "rejected"
        if err.get("details"):
            head += f" ({err['details']})"
        lines.append(head)
    elif err:
        lines.append(str(err))
    for nid, info in (body.get("node_errors") or {}).items():
        cls = info.get("class_type", "?")
        title = node_title(prompt, nid) if prompt and nid in prompt else cls
        for e in info.get("errors", []):
            extra = e.get("extra_info") or {}
            inp = extra.get("input_name")
            msg = e.get("message", e.get("type", "error"))
            details = e.get("details", "")
            where = f"node {nid} '{title}' ({cls})"
            text = f"{where}: {inp + ': ' if inp else ''}{msg}"
            if details and details != inp:
                text += f" — {details}"
            if "received_value" in extra and str(extra["received_value"]) not in text:
                text += f" (got {extra['received_value']!r})"
            lines.append(text)
    return "\n  ".join(lines) if lines else "the server rejected the workflow"


@dataclass
class RunResult:
    """What one finished prompt produced."""

    prompt_id: str
    server: str
    outputs: dict[str, Any]
    files: list[dict[str, str]] = field(default_factory=list)  # {"node", "filename", "subfolder", "type"}


class ComfyServer:
    """One ComfyUI server. Thread-safe for sequential use by one worker thread."""

    def __init__(self, url: str, timeout: float = 30.0, client_id: str | None = None):
        url = url.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise WorkflowError(f"--server {url!r}: expected http://host:port")
        self.url = url
        self.timeout = timeout
        self.client_id = client_id or str(uuid.uuid4())
        self._uploaded: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"ComfyServer({self.url!r})"

    # -- plumbing
    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerUnavailable(
                f"ComfyUI at {self.url} is not reachable ({reason}); start it or check --server"
            ) from None

    def _json(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        status, raw = self._request(
            method, path, body, {"Content-Type": "application/json"} if body else None
        )
        try:
            return status, json.loads(raw.decode() or "null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            if status >= 400:
                return status, {"error": raw.decode(errors="replace").strip()[:500]}
            raise ComfyError(
                f"{self.url}{path}: the server did not answer with JSON (HTTP {status})"
            ) from None

    # -- API
    def object_info(self) -> dict[str, Any]:
        status, data = self._json("GET", "/object_info")
        if status != 200 or not isinstance(data, dict):
            raise ComfyError(f"{self.url}/object_info: HTTP {status}")
        return data

    def upload_image(self, path: str | os.PathLike, name: str | None = None) -> str:
        """Upload once per server (cached); returns the name LoadImage's ``image`` input takes."""
        p = Path(path)
        key = str(p.resolve())
        if key in self._uploaded:
            return self._uploaded[key]
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise UploadFailed(f"--upload {p}: cannot read the file ({exc.strerror or exc})") from None
        name = name or p.name
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        status, raw = self._request(
            "POST",
            "/upload/image",
            b"".join(parts),
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        if status != 200:
            text = raw.decode(errors="replace").strip()[:300]
            raise UploadFailed(f"upload of {p.name} to {self.url} failed: HTTP {status} {text}")
        try:
            info = json.loads(raw)
            uploaded = info["name"] if not info.get("subfolder") else f"{info['subfolder']}/{info['name']}"
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UploadFailed(f"upload of {p.name} to {self.url}: unexpected answer {raw[:200]!r}") from None
        self._uploaded[key] = uploaded
        return uploaded

    def queue_prompt(self, prompt: dict[str, Any]) -> str:
        status, body = self._json("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})
        body = body if isinstance(body, dict) else {}
        if status != 200 or body.get("node_errors") or "prompt_id" not in body:
            raise PromptRejected(
                f"{self.url} rejected the workflow:\n  {format_node_errors(prompt, body)}",
                body.get("node_errors"),
                body.get("error"),
            )
        return body["prompt_id"]

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        status, body = self._json("GET", f"/history/{urllib.parse.quote(prompt_id)}")
        if status != 200 or not isinstance(body, dict):
            raise ComfyError(f"{self.url}/history/{prompt_id}: HTTP {status}")
        return body.get(prompt_id)

    def view(self, filename: str, subfolder: str = "", type_: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type_})
        status, raw = self._request("GET", f"/view?{q}")
        if status != 200:
            raise ComfyError(f"{self.url}/view {filename}: HTTP {status}")
        return raw

    # -- running
    def _ws_url(self) -> str:
        scheme = "wss" if self.url.startswith("https") else "ws"
        return f"{scheme}://{self.url.split('://', 1)[1]}/ws?clientId={self.client_id}"

    def connect_ws(self):
        """Open the progress websocket (None when websocket-client is missing or the socket fails)."""
        try:
            import websocket  # websocket-client
        except ImportError:  # pragma: no cover
            return None
        try:
            ws = websocket.create_connection(self._ws_url(), timeout=self.timeout)
        except Exception as exc:
            _log.debug("websocket to %s failed (%s); falling back to polling /history", self.url, exc)
            return None
        return ws

    def run(
        self,
        prompt: dict[str, Any],
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        """Queue ``prompt``, follow it to the end, return its outputs. Raises PromptRejected/ExecutionFailed."""
        ws = self.connect_ws()  # connect first so no message of this prompt is missed
        try:
            prompt_id = self.queue_prompt(prompt)
            if ws is not None:
                self._follow_ws(ws, prompt, prompt_id, on_progress, timeout)
            entry = self._wait_history(prompt, prompt_id, timeout)
        finally:
            if ws is not None:
                try:
                    ws.close()
                except Exception:
                    pass
        return self._result(prompt_id, entry)

    def _follow_ws(self, ws, prompt, prompt_id, on_progress, timeout) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        ws.settimeout(5.0)
        import websocket

        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise ComfyError(f"{self.url}: prompt {prompt_id} did not finish within {timeout:.0f} s")
            try:
                msg = ws.recv()
            except websocket.WebSocketTimeoutException:
                # Quiet socket: check history in case we missed the end (e.g. the prompt was cached).
                entry = self.history(prompt_id)
                if entry and (entry.get("status") or {}).get("completed") is not None:
                    if (entry.get("status") or {}).get("status_str") in ("success", "error"):
                        return
                continue
            except (websocket.WebSocketException, OSError):
                _log.debug("websocket to %s closed; polling /history", self.url)
                return
            if isinstance(msg, bytes):  # binary preview frames
                continue
            try:
                event = json.loads(msg)
            except json.JSONDecodeError:
                continue
            kind, data = event.get("type"), event.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if kind == "execution_error" and data.get("prompt_id") == prompt_id:
                raise self._execution_failed(prompt, data)
            if kind == "execution_interrupted" and data.get("prompt_id") == prompt_id:
                raise ExecutionFailed(f"{self.url}: the run was interrupted (cancelled on the server)", data)
            if on_progress is not None and kind in ("executing", "progress", "executed", "execution_start"):
                info = dict(data, type=kind, server=self.url)
                nid = data.get("node")
                if nid is not None and nid in prompt:
                    info["title"] = node_title(prompt, nid)
                on_progress(info)
            if kind == "execution_success" and data.get("prompt_id") == prompt_id:
                return
            if kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return

    def _wait_history(self, prompt, prompt_id, timeout) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while True:
            entry = self.history(prompt_id)
            status = (entry or {}).get("status") or {}
            if entry is not None and status.get("status_str") == "error":
                for kind, data in status.get("messages", []):
                    if kind == "execution_error":
                        raise self._execution_failed(prompt, data)
                raise ExecutionFailed(f"{self.url}: prompt {prompt_id} failed", status)
            if entry is not None and (status.get("completed") or status.get("status_str") == "success"):
                return entry
            if entry is not None and not status and entry.get("outputs"):
                return entry
            if deadline is not None and time.monotonic() > deadline:
                raise ComfyError(f"{self.url}: prompt {prompt_id} did not finish within {timeout:.0f} s")
            time.sleep(delay)
            delay = min(1.0, delay * 1.5)

    def _execution_failed(self, prompt, data: dict[str, Any]) -> ExecutionFailed:
        nid = str(data.get("node_id", "?"))
        cls = data.get("node_type", "?")
        title = node_title(prompt, nid) if nid in prompt else cls
        msg = (data.get("exception_message") or "").strip()
        etype = (data.get("exception_type") or "").rsplit(".", 1)[-1]
        return ExecutionFailed(
            f"{self.url}: node {nid} '{title}' ({cls}) failed while running: {etype + ': ' if etype else ''}{msg}",
            data,
        )

    def _result(self, prompt_id: str, entry: dict[str, Any]) -> RunResult:
        outputs = entry.get("outputs") or {}
        found: list[dict[str, str]] = []
        for nid in sorted(outputs, key=_id_key):
            for kind in ("images", "gifs", "videos", "audio", "files"):
                for f in outputs[nid].get(kind, []) or []:
                    if isinstance(f, dict) and f.get("filename"):
                        found.append(
                            {
                                "node": nid,
                                "filename": f["filename"],
                                "subfolder": f.get("subfolder", ""),
                                "type": f.get("type", "output"),
                            }
                        )
        # Saved outputs; previews (type "temp") only when the workflow saves nothing.
        files = [f for f in found if f["type"] == "output"] or [f for f in found if f["type"] == "temp"]
        return RunResult(prompt_id=prompt_id, server=self.url, outputs=outputs, files=files)


# --------------------------------------------------------------------------------------------------------------
# Many jobs over many servers


@dataclass
class Job:
    """One prompt to run. ``name`` prefixes its output files; ``meta`` travels to the result."""

    name: str
    prompt: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    uploads: dict[str, str] = field(
        default_factory=dict
    )  # "node ref.input" -> local path, uploaded per server


@dataclass
class JobResult:
    job: Job
    server: str
    prompt_id: str | None = None
    files: list[str] = field(default_factory=list)  # paths in the output folder
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


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
    if not result.files:
        return JobResult(job, client.url, result.prompt_id, [], None)
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
    return JobResult(job, client.url, result.prompt_id, files, None)


class ProgressLine:
    """A one-line terminal progress display shared by the worker threads (plain log lines when not a TTY)."""

    def __init__(self, total: int, stream=None):
        import sys

        self.total = total
        self.done = 0
        self.failed = 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.per_server: dict[str, str] = {}
        self._lock = threading.Lock()
        self._last = 0.0

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            server = data.get("server", "")
            short = server.split("://", 1)[-1]
            if kind == "done":
                self.done += 1
                self.failed += 0 if data.get("ok") else 1
                if not self.tty or not data.get("ok"):
                    state = "ok" if data.get("ok") else f"FAILED: {data.get('error')}"
                    self._print_line(f"[{self.done}/{self.total}] {data.get('job')} on {short}: {state}")
                self.per_server[short] = "idle"
            elif kind == "server_down":
                self._print_line(f"server {short} is down, its jobs go to the others: {data.get('error')}")
            elif kind == "progress":
                if data.get("type") == "progress":
                    self.per_server[short] = (
                        f"{data.get('job')} {data.get('title', data.get('node'))} {data.get('value')}/{data.get('max')}"
                    )
                elif data.get("type") == "executing" and data.get("node") is not None:
                    self.per_server[short] = f"{data.get('job')} {data.get('title', data.get('node'))}"
            elif kind == "start":
                self.per_server[short] = f"{data.get('job')} queued"
            if self.tty and time.monotonic() - self._last > 0.1:
                self._last = time.monotonic()
                width = 30
                filled = int(width * self.done / max(1, self.total))
                bar = "#" * filled + "-" * (width - filled)
                busy = " | ".join(f"{s}: {v}" for s, v in self.per_server.items())
                self.stream.write(f"\r[{bar}] {self.done}/{self.total} {busy}"[:200].ljust(120))
                self.stream.flush()

    def _print_line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 120 + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
