"""A local stand-in for a ComfyUI 0.8 server, built from the transcripts in tests/fixtures/comfyui/protocol/.

Stdlib only (http.server + a minimal RFC 6455 websocket), bound to 127.0.0.1 on an ephemeral port. It speaks
the same messages, in the same order, as the captured server: ``POST /upload/image`` (multipart),
``POST /prompt`` (validated against the captured object_info.json: unknown class -> ``invalid_prompt``,
combo / min / max -> ``node_errors`` exactly shaped like ``prompt_validation_error_response.json``),
``/ws`` progress (status, execution_start, execution_cached, executing, progress, executed,
execution_success, executing null), ``execution_error`` for a checkpoint whose name contains "corrupt"
(as in ``ws_messages_execution_error.json``), ``GET /history/{id}``, ``GET /view`` (PNG bytes) and
``GET /object_info``.

Hostile servers for the client's robustness tests: ``mangle={"history": fn}`` passes a route's JSON reply through
``fn`` (return bytes to send raw bytes); ``trickle={"prompt": 0.5}`` sends that route's reply one byte every 0.5 s;
``die_after_prompts=N`` drops the connection on every ``POST /prompt`` after N accepted ones; ``ws_register_delay``
registers a websocket only that long after its handshake (how a busy server behaves). Route names: ``prompt``,
``upload``, ``history``, ``view``, ``object_info`` (and ``ws`` for ``trickle``: every websocket message).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import os
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parent / "fixtures" / "comfyui"
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def load_object_info() -> dict[str, Any]:
    return json.loads((SHARED / "object_info.json").read_text())


def load_transcript(name: str) -> Any:
    return json.loads((SHARED / "protocol" / name).read_text())


def txt2img() -> dict:
    """The captured txt2img prompt (history_response.json) with titles, as ComfyUI's 'Export (API)' writes."""
    body = load_transcript("history_response.json")["body"]
    prompt = next(iter(body.values()))["prompt"][2]
    titles = {"4": "Checkpoint", "6": "Positive", "7": "Negative", "5": "Latent", "3": "Sampler", "9": "Save"}
    for nid, t in titles.items():
        prompt[nid]["_meta"] = {"title": t}
    return prompt


def with_load_image(prompt: dict) -> dict:
    """``prompt`` plus a LoadImage titled "Reference" saved by a second SaveImage (for --upload)."""
    p = json.loads(json.dumps(prompt))
    p["20"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Reference"}}
    p["21"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["20", 0], "filename_prefix": "ref"},
        "_meta": {"title": "Save ref"},
    }
    return p


def _png(seed: int, size: int = 16) -> bytes:
    from PIL import Image

    rng = (seed * 2654435761) & 0xFFFFFFFF
    color = (rng & 255, (rng >> 8) & 255, (rng >> 16) & 255)
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


class _WS:
    """One accepted websocket connection (server side: frames unmasked)."""

    def __init__(self, sock: socket.socket, trickle: float = 0.0):
        self.sock = sock
        self.lock = threading.Lock()
        self.open = True
        self.trickle = trickle  # seconds per byte: a server that hangs while looking alive

    def send_text(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 127, n)
        with self.lock:
            if not self.open:
                return
            try:
                if not self.trickle:
                    self.sock.sendall(header + payload)
                    return
                for byte in header + payload:
                    self.sock.sendall(bytes([byte]))
                    time.sleep(self.trickle)
            except OSError:
                self.open = False

    def send_binary(self, payload: bytes) -> None:
        with self.lock:
            if self.open:
                try:
                    self.sock.sendall(struct.pack("!BB", 0x82, len(payload)) + payload)
                except OSError:
                    self.open = False

    def read_until_closed(self, rfile) -> None:
        try:
            while self.open:
                head = rfile.read(2)
                if len(head) < 2:
                    break
                opcode = head[0] & 0x0F
                masked = head[1] & 0x80
                n = head[1] & 0x7F
                if n == 126:
                    n = struct.unpack("!H", rfile.read(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", rfile.read(8))[0]
                mask = rfile.read(4) if masked else b"\0\0\0\0"
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(rfile.read(n)))
                if opcode == 8:
                    with self.lock:
                        try:
                            self.sock.sendall(b"\x88\x00")
                        except OSError:
                            pass
                    break
                if opcode == 9:  # ping -> pong
                    with self.lock:
                        self.sock.sendall(struct.pack("!BB", 0x8A, len(data)) + data)
        except OSError:
            pass
        finally:
            self.open = False


class FakeComfy:
    """Run with ``with FakeComfy() as srv: srv.url``. Attributes record what clients sent."""

    def __init__(
        self,
        extra_classes: dict[str, Any] | None = None,
        node_delay: float = 0.0,
        fail_uploads: bool = False,
        steps_progress: bool = True,
        mangle: dict[str, Any] | None = None,
        trickle: dict[str, float] | None = None,
        die_after_prompts: int | None = None,
        ws_register_delay: float = 0.0,
    ):
        self.object_info = load_object_info()
        self.object_info.update(extra_classes or {})
        self.node_delay = node_delay
        self.fail_uploads = fail_uploads
        self.steps_progress = steps_progress
        self.mangle = mangle or {}
        self.trickle = trickle or {}
        self.die_after_prompts = die_after_prompts
        self.ws_register_delay = ws_register_delay
        self.prompts: list[dict[str, Any]] = []  # every accepted prompt
        self.uploads: dict[str, bytes] = {}
        self.files: dict[tuple[str, str], bytes] = {}
        self.history: dict[str, Any] = {}
        self.sockets: dict[str, _WS] = {}
        self._counter = 0
        self._file_counter = 0
        self.pending = 0  # prompts accepted and not finished (queued or running)
        self.max_pending = 0
        self._lock = threading.Lock()
        self._queue: list[tuple[str, dict[str, Any], str]] = []
        self._cv = threading.Condition()
        self._httpd: ThreadingHTTPServer | None = None
        self._stopping = False

    # -- lifecycle
    def __enter__(self) -> FakeComfy:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        threading.Thread(target=self._executor, daemon=True).start()

    def stop(self) -> None:
        self._stopping = True
        with self._cv:
            self._cv.notify_all()
        for ws in list(self.sockets.values()):
            ws.open = False
            try:
                ws.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- protocol pieces
    def send(self, client_id: str | None, kind: str, data: dict[str, Any]) -> None:
        text = json.dumps({"type": kind, "data": data})
        targets = [self.sockets.get(client_id)] if client_id else list(self.sockets.values())
        for ws in targets:
            if ws is not None:
                ws.send_text(text)

    def validate(self, prompt: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for nid, node in prompt.items():
            if node.get("class_type") not in self.object_info:
                return 400, {
                    "error": {
                        "type": "invalid_prompt",
                        "message": f"Cannot execute because node {node.get('class_type')} does not exist.",
                        "details": f"Node ID '#{nid}'",
                        "extra_info": {},
                    },
                    "node_errors": {},
                }
        node_errors: dict[str, Any] = {}
        for nid, node in prompt.items():
            info = self.object_info[node["class_type"]]
            errors = []
            for section in ("required", "optional"):
                for name, spec in (info.get("input", {}).get(section) or {}).items():
                    value = node.get("inputs", {}).get(name)
                    if value is None:
                        if section == "required":
                            errors.append(
                                {
                                    "type": "required_input_missing",
                                    "message": "Required input is missing",
                                    "details": name,
                                    "extra_info": {"input_name": name},
                                }
                            )
                        continue
                    if isinstance(value, list):
                        if len(value) == 2 and str(value[0]) not in prompt:
                            errors.append(
                                {
                                    "type": "bad_linked_input",
                                    "message": "Bad linked input",
                                    "details": name,
                                    "extra_info": {"input_name": name},
                                }
                            )
                        continue
                    if isinstance(spec[0], list) and value in self.uploads:  # input/ folder lists uploads
                        continue
                    errors.extend(_check_value(name, spec, value))
            if errors:
                node_errors[nid] = {
                    "errors": errors,
                    "dependent_outputs": [],
                    "class_type": node["class_type"],
                }
        if node_errors:
            return 400, {
                "error": {
                    "type": "prompt_outputs_failed_validation",
                    "message": "Prompt outputs failed validation",
                    "details": "",
                    "extra_info": {},
                },
                "node_errors": node_errors,
            }
        return 200, {}

    def _executor(self) -> None:
        while not self._stopping:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait(0.5)
                if self._stopping:
                    return
                prompt_id, prompt, client_id = self._queue.pop(0)
            try:
                self._execute(prompt_id, prompt, client_id)
            except Exception as exc:  # pragma: no cover - a bug in the fake itself
                print("fake comfy executor error:", exc)
            finally:
                with self._lock:
                    self.pending -= 1

    def _execute(self, prompt_id: str, prompt: dict[str, Any], client_id: str) -> None:
        ts = lambda: int(time.time() * 1000)  # noqa: E731
        messages: list[list[Any]] = []

        def msg(kind: str, data: dict[str, Any], log: bool = False) -> None:
            self.send(client_id, kind, data)
            if log:
                messages.append([kind, data])

        msg("execution_start", {"prompt_id": prompt_id, "timestamp": ts()}, True)
        msg("execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": ts()}, True)
        outputs: dict[str, Any] = {}
        executed: list[str] = []
        for nid in _topo(prompt):
            node = prompt[nid]
            msg("executing", {"node": nid, "display_node": nid, "prompt_id": prompt_id})
            if self.node_delay:
                time.sleep(self.node_delay)
            ckpt = str(node.get("inputs", {}).get("ckpt_name", ""))
            if node["class_type"].startswith("CheckpointLoader") and "corrupt" in ckpt:
                err = dict(load_transcript("ws_messages_execution_error.json")[-1]["data"])
                err.update(
                    prompt_id=prompt_id,
                    node_id=nid,
                    node_type=node["class_type"],
                    executed=executed,
                    current_inputs={"ckpt_name": [ckpt]},
                    timestamp=ts(),
                )
                msg("execution_error", err, True)
                self.history[prompt_id] = {
                    "prompt": [0, prompt_id, prompt, {"client_id": client_id}, []],
                    "outputs": {},
                    "status": {"status_str": "error", "completed": False, "messages": messages},
                    "meta": {},
                }
                self.send(
                    client_id, "status", {"status": {"exec_info": {"queue_remaining": len(self._queue)}}}
                )
                return
            steps = node.get("inputs", {}).get("steps")
            if self.steps_progress and isinstance(steps, int) and "seed" in node.get("inputs", {}):
                for i in range(1, min(steps, 5) + 1):
                    msg("progress", {"value": i, "max": min(steps, 5), "prompt_id": prompt_id, "node": nid})
                self.send_preview(client_id)
            if node["class_type"] in ("SaveImage", "PreviewImage"):
                images = []
                batch = _batch_size(prompt, nid)
                seed = _seed_of(prompt)
                prefix = str(node.get("inputs", {}).get("filename_prefix", "ComfyUI"))
                kind = "output" if node["class_type"] == "SaveImage" else "temp"
                for b in range(batch):
                    with self._lock:
                        self._file_counter += 1
                        fname = f"{prefix}_{self._file_counter:05d}_.png"
                    self.files[(fname, kind)] = _png(seed * 31 + b)
                    images.append({"filename": fname, "subfolder": "", "type": kind})
                outputs[nid] = {"images": images}
                msg(
                    "executed",
                    {"node": nid, "display_node": nid, "output": {"images": images}, "prompt_id": prompt_id},
                )
            executed.append(nid)
        self.history[prompt_id] = {
            "prompt": [0, prompt_id, prompt, {"client_id": client_id}, list(outputs)],
            "outputs": outputs,
            "status": {
                "status_str": "success",
                "completed": True,
                "messages": messages + [["execution_success", {"prompt_id": prompt_id, "timestamp": ts()}]],
            },
            "meta": {
                nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                for nid in outputs
            },
        }
        msg("execution_success", {"prompt_id": prompt_id, "timestamp": ts()})
        self.send(client_id, "status", {"status": {"exec_info": {"queue_remaining": len(self._queue)}}})
        msg("executing", {"node": None, "prompt_id": prompt_id})

    def send_preview(self, client_id: str) -> None:
        ws = self.sockets.get(client_id)
        if ws is not None:
            ws.send_binary(struct.pack(">II", 1, 2) + b"\xff\xd8\xff\xd9")


def _check_value(name: str, spec: list[Any], value: Any) -> list[dict[str, Any]]:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    choices = kind if isinstance(kind, list) else (opts.get("options") if kind == "COMBO" else None)
    if choices is not None:
        if choices and value not in choices:
            return [
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": f"{name}: '{value}' not in (list of length {len(choices)})",
                    "extra_info": {"input_name": name, "input_config": None, "received_value": value},
                }
            ]
        return []
    if kind in ("INT", "FLOAT") and isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in opts and value < opts["min"]:
            return [
                {
                    "type": "value_smaller_than_min",
                    "message": f"Value {value} smaller than min of {opts['min']}",
                    "details": name,
                    "extra_info": {"input_name": name, "input_config": spec, "received_value": value},
                }
            ]
        if "max" in opts and value > opts["max"]:
            return [
                {
                    "type": "value_bigger_than_max",
                    "message": f"Value {value} bigger than max of {opts['max']}",
                    "details": name,
                    "extra_info": {"input_name": name, "input_config": spec, "received_value": value},
                }
            ]
    return []


def _topo(prompt: dict[str, Any]) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()

    def visit(nid: str) -> None:
        if nid in seen or nid not in prompt:
            return
        seen.add(nid)
        for v in prompt[nid].get("inputs", {}).values():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                visit(v[0])
        order.append(nid)

    for nid in prompt:
        visit(nid)
    return order


def _seed_of(prompt: dict[str, Any]) -> int:
    for node in prompt.values():
        for key in ("seed", "noise_seed"):
            if isinstance(node.get("inputs", {}).get(key), int):
                return node["inputs"][key]
    return 0


def _batch_size(prompt: dict[str, Any], nid: str) -> int:
    for node in prompt.values():
        b = node.get("inputs", {}).get("batch_size")
        if isinstance(b, int):
            return max(1, b)
    return 1


class _Handler(BaseHTTPRequestHandler):
    fake: FakeComfy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send_json(self, status: int, body: Any, route: str = "") -> None:
        if route in self.fake.mangle:
            body = self.fake.mangle[route](body)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._send_raw(status, raw, "application/json", route)

    def _send_raw(self, status: int, raw: bytes, ctype: str, route: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        delay = self.fake.trickle.get(route)
        if not delay:
            self.wfile.write(raw)
            return
        self.wfile.flush()
        for i in range(len(raw)):  # a server that hangs while looking alive
            if self.fake._stopping:
                return
            try:
                self.wfile.write(raw[i : i + 1])
                self.wfile.flush()
            except OSError:
                return
            time.sleep(delay)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path == "/ws":
            return self._websocket(q.get("clientId", [uuid.uuid4().hex])[0])
        if url.path == "/object_info":
            return self._send_json(200, self.fake.object_info, "object_info")
        if url.path.startswith("/history/"):
            pid = url.path.split("/", 2)[2]
            entry = self.fake.history.get(pid)
            return self._send_json(200, {pid: entry} if entry else {}, "history")
        if url.path == "/queue":
            return self._send_json(200, {"queue_running": [], "queue_pending": []})
        if url.path == "/view":
            key = (q.get("filename", [""])[0], q.get("type", ["output"])[0])
            data = self.fake.files.get(key)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if "view" in self.fake.mangle:
                data = self.fake.mangle["view"](data)
            return self._send_raw(200, data, "image/png", "view")
        self._send_json(404, {"error": "not found"})

    def do_POST(self) -> None:
        url = urllib.parse.urlparse(self.path)
        body = self._body()
        if url.path == "/prompt":
            try:
                req = json.loads(body)
            except json.JSONDecodeError:
                return self._send_json(400, {"error": {"type": "invalid_prompt", "message": "bad json"}})
            prompt = req.get("prompt")
            if not isinstance(prompt, dict):
                return self._send_json(
                    400,
                    {
                        "error": {
                            "type": "no_prompt",
                            "message": "No prompt provided",
                            "details": "",
                            "extra_info": {},
                        },
                        "node_errors": {},
                    },
                )
            status, err = self.fake.validate(prompt)
            if status != 200:
                return self._send_json(status, err, "prompt")
            if (
                self.fake.die_after_prompts is not None
                and len(self.fake.prompts) >= self.fake.die_after_prompts
            ):
                self.close_connection = True  # the server went away mid-run: no reply at all
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            with self.fake._lock:
                self.fake._counter += 1
                number = self.fake._counter
                self.fake.pending += 1
                self.fake.max_pending = max(self.fake.max_pending, self.fake.pending)
            prompt_id = str(uuid.uuid4())
            self.fake.prompts.append(prompt)
            client_id = req.get("client_id", "")
            self.fake.send(client_id, "status", {"status": {"exec_info": {"queue_remaining": 1}}})
            with self.fake._cv:
                self.fake._queue.append((prompt_id, prompt, client_id))
                self.fake._cv.notify()
            return self._send_json(
                200, {"prompt_id": prompt_id, "number": number, "node_errors": {}}, "prompt"
            )
        if url.path == "/upload/image":
            if self.fake.fail_uploads:
                return self._send_json(500, {"error": "disk full"})
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + self.headers.get("Content-Type", "").encode() + b"\r\n\r\n" + body
            )
            name = None
            for part in msg.iter_parts():
                if part.get_param("name", header="content-disposition") == "image":
                    name = os.path.basename(part.get_filename() or "upload.png")
                    self.fake.uploads[name] = part.get_payload(decode=True)
            if name is None:
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            return self._send_json(200, {"name": name, "subfolder": "", "type": "input"}, "upload")
        self._send_json(404, {"error": "not found"})

    def _websocket(self, client_id: str) -> None:
        key = self.headers.get("Sec-WebSocket-Key")
        if not key or "websocket" not in (self.headers.get("Upgrade") or "").lower():
            return self._send_json(400, {"error": "expected a websocket upgrade"})
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        ws = _WS(self.connection, self.fake.trickle.get("ws", 0.0))
        if self.fake.ws_register_delay:
            time.sleep(self.fake.ws_register_delay)  # the handshake is done, the server is not listening yet
        self.fake.sockets[client_id] = ws
        ws.send_text(
            json.dumps(
                {
                    "type": "status",
                    "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id},
                }
            )
        )
        ws.read_until_closed(self.rfile)
        if self.fake.sockets.get(client_id) is ws:
            del self.fake.sockets[client_id]
        self.close_connection = True


if (
    __name__ == "__main__"
):  # python tests/fake_comfy_server.py [--die-after N] [--node-delay S]: prints its URL
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--die-after", type=int, default=None, help="drop every POST /prompt after N accepted")
    ap.add_argument("--node-delay", type=float, default=0.0, help="seconds per node")
    cli = ap.parse_args()
    with FakeComfy(die_after_prompts=cli.die_after, node_delay=cli.node_delay) as srv:
        print(srv.url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
