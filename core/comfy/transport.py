"""One ComfyUI server over HTTP + websocket: upload, queue, follow progress, history, view.

Speaks the protocol a real ComfyUI 0.8 speaks (``tests/fixtures/comfyui/protocol/``): ``POST /upload/image``,
``POST /prompt``, progress over ``GET /ws?clientId=``, ``GET /history/{id}``, ``GET /view``. Every failure
becomes a :class:`ComfyError` subclass whose message says what went wrong and what to do about it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import (
    ComfyError,
    ExecutionFailed,
    PromptRejected,
    ServerUnavailable,
    UploadFailed,
    WorkflowError,
)
from .workflow import _id_key, node_title

_log = logging.getLogger("IdentityLock")


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
