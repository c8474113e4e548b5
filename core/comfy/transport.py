"""One ComfyUI server over HTTP + websocket: upload, queue, follow progress, history, view.

Speaks the protocol a real ComfyUI 0.8 speaks (``tests/fixtures/comfyui/protocol/``): ``POST /upload/image``,
``POST /prompt``, progress over ``GET /ws?clientId=``, ``GET /history/{id}``, ``GET /view``. Every failure
becomes a :class:`ComfyError` subclass whose message says what went wrong and what to do about it.

Time limits are deadlines, not socket timeouts: a server that sends one byte every few seconds never trips
a per-read timeout, so every request (and every websocket) runs under a watchdog that closes its socket when
the request's time — or the whole run's ``--timeout`` — is up.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import (
    ComfyError,
    ExecutionFailed,
    PromptRejected,
    ProtocolError,
    RunTimeout,
    ServerUnavailable,
    UploadFailed,
    WorkflowError,
)
from .replies import (
    RunResult,
    execution_failed,
    format_node_errors,
    history_state,
    progress_event,
    run_result,
)
from .workflow import node_title

_log = logging.getLogger("IdentityLock")

#: Largest JSON reply read into memory (a full /object_info is a few MB).
MAX_JSON_BYTES = 256 << 20
_CHUNK = 1 << 16


class _Deadline:
    """A watchdog: calls ``abort`` when ``end`` (time.monotonic) passes, so a blocked read returns."""

    def __init__(self, end: float, abort: Callable[[], None]):
        self.end = end
        self.fired = False
        self._abort = abort
        self._timer = threading.Timer(max(0.0, end - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        try:
            self._abort()
        except OSError:
            pass

    def left(self) -> float:
        return self.end - time.monotonic()

    def cancel(self) -> None:
        self._timer.cancel()


def _write(sink: IO[bytes], chunk: bytes) -> None:
    try:
        sink.write(chunk)
    except OSError as exc:
        raise ComfyError(
            f"cannot write a downloaded file ({exc.strerror or exc}): free space in --out"
        ) from None


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)


def parse_server_url(url: Any) -> tuple[str, str, str, int, str]:
    """(normalised url, scheme, host, port, base path) of ``--server``; one clear sentence when unusable."""
    text = str(url).strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    usage = f"--server {str(url)!r}: expected http://host:port (e.g. http://127.0.0.1:8188)"
    try:
        parsed = urllib.parse.urlsplit(text)
        port = parsed.port
        host = parsed.hostname
    except ValueError:
        raise WorkflowError(usage) from None
    if parsed.scheme not in ("http", "https") or not host or parsed.query or parsed.fragment:
        raise WorkflowError(usage)
    if any(c.isspace() or not c.isprintable() for c in text):
        raise WorkflowError(usage)
    port = port or (443 if parsed.scheme == "https" else 80)
    return text, parsed.scheme, host, port, parsed.path


class ComfyServer:
    """One ComfyUI server. Thread-safe for sequential use by one worker thread.

    ``timeout`` bounds each request; ``deadline=`` (a ``time.monotonic()`` value) on the calls bounds them by
    the whole run's time as well.
    """

    def __init__(self, url: str, timeout: float = 30.0, client_id: str | None = None):
        self.url, self._scheme, self._host, self._port, self._base = parse_server_url(url)
        self.timeout = timeout
        self.client_id = client_id or str(uuid.uuid4())
        self._uploaded: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"ComfyServer({self.url!r})"

    def sibling(self) -> ComfyServer:
        """Another client of the same server with its own ``clientId`` (so its own progress websocket: the
        server keeps one socket per clientId) that shares this one's upload cache; for a second job in flight."""
        twin = ComfyServer(self.url, timeout=self.timeout)
        twin._uploaded = self._uploaded
        return twin

    # -- plumbing
    def _end(self, deadline: float | None) -> tuple[float, bool]:
        """(end time of a request, whether the run's deadline is what limits it)."""
        end = time.monotonic() + self.timeout
        if deadline is not None and deadline < end:
            return deadline, True
        return end, False

    def _timed_out(self, path: str, by_run: bool) -> ComfyError:
        if by_run:
            return RunTimeout(f"{self.url}{path}: the run did not finish within --timeout; raise --timeout")
        return ServerUnavailable(
            f"ComfyUI at {self.url} did not answer {path} within {self.timeout:g} s (hung or overloaded); "
            "check the server or raise --timeout"
        )

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        deadline: float | None = None,
        sink: IO[bytes] | None = None,
        max_bytes: int = MAX_JSON_BYTES,
    ) -> tuple[int, bytes]:
        """(HTTP status, body). With ``sink``, a 200 body is streamed there instead (no size limit)."""
        end, by_run = self._end(deadline)
        if end <= time.monotonic():
            raise self._timed_out(path, by_run)
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=max(0.01, end - time.monotonic()))
        watchdog = _Deadline(end, lambda: _shutdown(conn.sock))
        try:
            conn.request(method, self._base + path, body=body, headers=headers or {})
            resp = conn.getresponse()
            chunks, size = [], 0
            while True:
                if conn.sock is not None:
                    conn.sock.settimeout(max(0.01, watchdog.left()))
                chunk = resp.read1(_CHUNK)
                if not chunk:
                    break
                if watchdog.fired:
                    raise TimeoutError
                if sink is not None and resp.status == 200:
                    _write(sink, chunk)  # a local disk error is not the server's fault: not an OSError here
                    continue
                size += len(chunk)
                if size > max_bytes:
                    raise ProtocolError(
                        f"{self.url}{path}: the reply is larger than {max_bytes >> 20} MB; is this a ComfyUI server?"
                    )
                chunks.append(chunk)
            if watchdog.fired:
                raise TimeoutError
            if resp.length:  # the connection closed before Content-Length bytes came
                raise http.client.IncompleteRead(b"".join(chunks), resp.length)
            return resp.status, b"".join(chunks)
        except (OSError, http.client.HTTPException) as exc:
            if watchdog.fired or isinstance(exc, TimeoutError):
                raise self._timed_out(path, by_run) from None
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise ServerUnavailable(
                f"ComfyUI at {self.url} is not reachable ({reason or type(exc).__name__}); "
                "start it or check --server"
            ) from None
        finally:
            watchdog.cancel()
            conn.close()

    def _json(
        self, method: str, path: str, payload: Any = None, deadline: float | None = None
    ) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body else None
        status, raw = self._request(method, path, body, headers, deadline=deadline)
        try:
            return status, json.loads(raw.decode() or "null")
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            if status >= 400:
                return status, {"error": raw.decode(errors="replace").strip()[:500]}
            raise ProtocolError(
                f"{self.url}{path}: the server did not answer with JSON (HTTP {status}); is this a ComfyUI server?"
            ) from None

    # -- API
    def object_info(self, deadline: float | None = None) -> dict[str, Any]:
        status, data = self._json("GET", "/object_info", deadline=deadline)
        if status != 200 or not isinstance(data, dict):
            raise ProtocolError(f"{self.url}/object_info: HTTP {status}, not the node list ComfyUI sends")
        return data

    def upload_image(
        self, path: str | os.PathLike, name: str | None = None, deadline: float | None = None
    ) -> str:
        """Upload once per server (cached); returns the name LoadImage's ``image`` input takes."""
        p = Path(path)
        key = str(p.resolve())
        if key in self._uploaded:
            return self._uploaded[key]
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise UploadFailed(f"--upload {p}: cannot read the file ({exc.strerror or exc})") from None
        name = (name or p.name).replace('"', "_").replace("\r", "_").replace("\n", "_")
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
            deadline=deadline,
        )
        if status != 200:
            text = raw.decode(errors="replace").strip()[:300]
            raise UploadFailed(f"upload of {p.name} to {self.url} failed: HTTP {status} {text}")
        try:
            info = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            info = None
        sub = info.get("subfolder") if isinstance(info, dict) else None
        if not isinstance(info, dict) or not isinstance(info.get("name"), str) or not info["name"]:
            raise ProtocolError(
                f"upload of {p.name} to {self.url}: unexpected answer {raw[:200]!r}; is this a ComfyUI server?"
            )
        uploaded = f"{sub}/{info['name']}" if isinstance(sub, str) and sub else info["name"]
        self._uploaded[key] = uploaded
        return uploaded

    def queue_prompt(self, prompt: dict[str, Any], deadline: float | None = None) -> str:
        status, body = self._json(
            "POST", "/prompt", {"prompt": prompt, "client_id": self.client_id}, deadline=deadline
        )
        body = body if isinstance(body, dict) else {}
        if status != 200 or body.get("node_errors"):
            raise PromptRejected(
                f"{self.url} rejected the workflow:\n  {format_node_errors(prompt, body)}",
                body.get("node_errors"),
                body.get("error"),
            )
        prompt_id = body.get("prompt_id")
        if not isinstance(prompt_id, str) or not prompt_id:
            raise ProtocolError(
                f"{self.url}/prompt: the answer has no prompt_id ({str(body)[:200]}); is this a ComfyUI server?"
            )
        return prompt_id

    def history(self, prompt_id: str, deadline: float | None = None) -> Any:
        """The history entry of ``prompt_id`` (None while it is not there yet), unchecked."""
        path = f"/history/{urllib.parse.quote(prompt_id)}"
        status, body = self._json("GET", path, deadline=deadline)
        if status != 200 or not isinstance(body, dict):
            raise ProtocolError(f"{self.url}{path}: HTTP {status}, not the history ComfyUI sends")
        return body.get(prompt_id)

    def _view_path(self, filename: str, subfolder: str, type_: str) -> str:
        return "/view?" + urllib.parse.urlencode(
            {"filename": filename, "subfolder": subfolder, "type": type_}
        )

    def view(
        self, filename: str, subfolder: str = "", type_: str = "output", deadline: float | None = None
    ) -> bytes:
        status, raw = self._request("GET", self._view_path(filename, subfolder, type_), deadline=deadline)
        if status != 200:
            raise ComfyError(f"{self.url}/view {filename}: HTTP {status}")
        return raw

    def view_to(
        self,
        fh: IO[bytes],
        filename: str,
        subfolder: str = "",
        type_: str = "output",
        *,
        deadline: float | None = None,
    ) -> None:
        """Stream an output file into ``fh`` (no size limit, nothing held in memory)."""
        status, _ = self._request(
            "GET", self._view_path(filename, subfolder, type_), deadline=deadline, sink=fh
        )
        if status != 200:
            raise ComfyError(f"{self.url}/view {filename}: HTTP {status}")

    # -- running
    def _ws_url(self) -> str:
        scheme = "wss" if self._scheme == "https" else "ws"
        return f"{scheme}://{self.url.split('://', 1)[1]}/ws?clientId={self.client_id}"

    @contextmanager
    def _progress_socket(self, deadline: float | None) -> Iterator[Any]:
        """The progress websocket, registered on the server (or None: no websocket-client, or it failed).

        The server registers a socket only after the handshake and drops this client's messages until then.
        Its first message (``status`` with our ``sid``) proves the registration, so we wait for it before the
        prompt is posted; otherwise the start of a fast run is lost (seen under CPU load). After that the
        socket lives until the run's deadline, when a watchdog closes it (a trickling server cannot hold us).
        """
        try:
            import websocket  # websocket-client
        except ImportError:  # pragma: no cover
            yield None
            return
        ws = websocket.WebSocket(skip_utf8_validation=True)
        abort = lambda: _shutdown(getattr(ws, "sock", None))  # noqa: E731
        handshake = _Deadline(self._end(deadline)[0], abort)
        try:
            ws.connect(self._ws_url(), timeout=max(0.01, handshake.left()))
            ws.settimeout(max(0.01, min(10.0, handshake.left())))
            ws.recv()  # the greeting: from now on the server sends us this client's events
        except Exception as exc:
            _log.debug("websocket to %s failed (%s); polling /history instead", self.url, exc)
            _close_quietly(ws)
            yield None
            return
        finally:
            handshake.cancel()
        run_watchdog = _Deadline(deadline, abort) if deadline is not None else None
        try:
            yield ws
        finally:
            if run_watchdog is not None:
                run_watchdog.cancel()
            _close_quietly(ws)

    def run(
        self,
        prompt: dict[str, Any],
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> RunResult:
        """Queue ``prompt``, follow it to the end, return its outputs. Raises PromptRejected/ExecutionFailed.

        ``timeout`` (seconds) or ``deadline`` (time.monotonic) bounds the whole run, every request included."""
        if timeout is not None:
            end = time.monotonic() + timeout
            deadline = end if deadline is None else min(deadline, end)
        with self._progress_socket(deadline) as ws:
            prompt_id = self.queue_prompt(prompt, deadline=deadline)
            if ws is not None:
                self._follow_ws(ws, prompt, prompt_id, on_progress, deadline)
            entry = self._wait_history(prompt, prompt_id, deadline)
        return run_result(self.url, prompt_id, entry)

    def _run_timeout(self, prompt_id: str) -> RunTimeout:
        return RunTimeout(f"{self.url}: prompt {prompt_id} did not finish within --timeout; raise --timeout")

    def _follow_ws(self, ws, prompt, prompt_id, on_progress, deadline) -> None:
        import websocket

        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise self._run_timeout(prompt_id)
            ws.settimeout(5.0 if left is None else max(0.01, min(5.0, left)))
            try:
                msg = ws.recv()
            except websocket.WebSocketTimeoutException:
                # Quiet socket: check history in case we missed the end (e.g. the prompt was cached).
                if history_state(self.url, prompt, prompt_id, self.history(prompt_id, deadline)) == "done":
                    return
                continue
            except (websocket.WebSocketException, OSError):
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._run_timeout(prompt_id) from None
                _log.debug("websocket to %s closed; polling /history", self.url)
                return
            event = progress_event(msg, prompt_id)
            if event is None:
                continue
            kind, data = event
            mine = data.get("prompt_id") == prompt_id
            if kind == "execution_error" and mine:
                raise execution_failed(self.url, prompt, data)
            if kind == "execution_interrupted" and mine:
                raise ExecutionFailed(f"{self.url}: the run was interrupted (cancelled on the server)", data)
            if on_progress is not None and kind in ("executing", "progress", "executed", "execution_start"):
                info = dict(data, type=kind, server=self.url)
                nid = data.get("node")
                if isinstance(nid, str) and nid in prompt:
                    info["title"] = node_title(prompt, nid)
                on_progress(info)
            if mine and (kind == "execution_success" or (kind == "executing" and data.get("node") is None)):
                return

    def _wait_history(self, prompt, prompt_id, deadline) -> dict[str, Any]:
        delay = 0.05
        while True:
            entry = self.history(prompt_id, deadline)
            if history_state(self.url, prompt, prompt_id, entry) == "done":
                return entry
            if deadline is not None and time.monotonic() + delay > deadline:
                raise self._run_timeout(prompt_id)
            time.sleep(delay)
            delay = min(1.0, delay * 1.5)


def _close_quietly(ws: Any) -> None:
    try:
        ws.close(timeout=1)
    except Exception:  # closing a broken socket: nothing left to do
        pass
