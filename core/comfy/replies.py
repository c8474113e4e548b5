"""What ComfyUI's answers mean, checked for shape before use.

A server (or something else listening on its port) can answer anything. Every reply is checked here, and a
reply of an unexpected shape becomes a :class:`ProtocolError` with a one-sentence message, never an
exception deep in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ExecutionFailed, ProtocolError
from .workflow import _id_key, node_title

OUTPUT_KINDS = ("images", "gifs", "videos", "audio", "files")


@dataclass
class RunResult:
    """What one finished prompt produced."""

    prompt_id: str
    server: str
    outputs: dict[str, Any]
    files: list[dict[str, str]] = field(default_factory=list)  # {"node", "filename", "subfolder", "type"}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def format_node_errors(prompt: dict[str, Any] | None, body: Any) -> str:
    """Turn the ``error`` / ``node_errors`` of a rejected ``POST /prompt`` into readable lines."""
    body = _dict(body)
    lines = []
    err = body.get("error")
    if isinstance(err, dict):
        head = str(err.get("message") or err.get("type") or "rejected")
        if err.get("details"):
            head += f" ({err['details']})"
        lines.append(head)
    elif err:
        lines.append(str(err))
    for nid, info in _dict(body.get("node_errors")).items():
        info = _dict(info)
        cls = str(info.get("class_type", "?"))
        title = node_title(prompt, nid) if prompt and nid in prompt else cls
        errors = info.get("errors")
        for e in errors if isinstance(errors, list) else []:
            e = _dict(e)
            extra = _dict(e.get("extra_info"))
            inp = extra.get("input_name")
            inp = inp if isinstance(inp, str) else None
            msg = str(e.get("message", e.get("type", "error")))
            details = str(e.get("details", ""))
            where = f"node {nid} '{title}' ({cls})"
            text = f"{where}: {inp + ': ' if inp else ''}{msg}"
            if details and details != inp:
                text += f" — {details}"
            if "received_value" in extra and str(extra["received_value"]) not in text:
                text += f" (got {extra['received_value']!r})"
            lines.append(text)
    return "\n  ".join(lines) if lines else "the server rejected the workflow"


def execution_failed(url: str, prompt: dict[str, Any], data: Any) -> ExecutionFailed:
    """The error of an ``execution_error`` message, naming the node by its title."""
    data = _dict(data)
    nid = str(data.get("node_id", "?"))
    cls = str(data.get("node_type", "?"))
    title = node_title(prompt, nid) if nid in prompt else cls
    msg = str(data.get("exception_message") or "").strip()
    etype = str(data.get("exception_type") or "").rsplit(".", 1)[-1]
    return ExecutionFailed(
        f"{url}: node {nid} '{title}' ({cls}) failed while running: {etype + ': ' if etype else ''}{msg}",
        data,
    )


def history_state(url: str, prompt: dict[str, Any], prompt_id: str, entry: Any) -> str:
    """``"pending"``, ``"done"``; raises ExecutionFailed for a failed run, ProtocolError for a malformed entry."""
    if entry is None:
        return "pending"
    where = f"{url}/history/{prompt_id}"
    if not isinstance(entry, dict):
        raise ProtocolError(f"{where}: unexpected answer (a {type(entry).__name__}, not a history entry); "
                            "is this a ComfyUI server?")  # fmt: skip
    status = entry.get("status") or {}
    if not isinstance(status, dict) or not isinstance(entry.get("outputs", {}), dict):
        raise ProtocolError(f"{where}: unexpected answer ('status' and 'outputs' must be objects); "
                            "is this a ComfyUI server?")  # fmt: skip
    if status.get("status_str") == "error":
        messages = status.get("messages")
        for item in messages if isinstance(messages, list) else []:
            if isinstance(item, list) and len(item) == 2 and item[0] == "execution_error":
                raise execution_failed(url, prompt, item[1])
        raise ExecutionFailed(f"{url}: prompt {prompt_id} failed", status)
    if status.get("completed") or status.get("status_str") == "success":
        return "done"
    if not status and entry.get("outputs"):
        return "done"
    return "pending"


def run_result(url: str, prompt_id: str, entry: dict[str, Any]) -> RunResult:
    """The files a finished run produced: saved outputs; previews (type "temp") only when it saves nothing.

    Output entries that do not look like files (custom nodes report text, numbers...) are skipped."""
    outputs = _dict(entry.get("outputs"))
    found: list[dict[str, str]] = []
    for nid in sorted(outputs, key=_id_key):
        node_out = _dict(outputs[nid])
        for kind in OUTPUT_KINDS:
            items = node_out.get(kind)
            for f in items if isinstance(items, list) else []:
                if not isinstance(f, dict) or not isinstance(f.get("filename"), str) or not f["filename"]:
                    continue
                sub, typ = f.get("subfolder", ""), f.get("type", "output")
                found.append(
                    {
                        "node": nid,
                        "filename": f["filename"],
                        "subfolder": sub if isinstance(sub, str) else "",
                        "type": typ if isinstance(typ, str) else "output",
                    }
                )
    files = [f for f in found if f["type"] == "output"] or [f for f in found if f["type"] == "temp"]
    return RunResult(prompt_id=prompt_id, server=url, outputs=outputs, files=files)


def progress_event(raw: Any, prompt_id: str) -> tuple[str, dict[str, Any]] | None:
    """(type, data) of a websocket text message about ``prompt_id`` (or about no prompt); None to ignore it."""
    import json

    if isinstance(raw, bytes):  # binary preview frames
        return None
    try:
        event = json.loads(raw)
    except (json.JSONDecodeError, RecursionError, TypeError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    data = event.get("data") or {}
    if not isinstance(data, dict) or data.get("prompt_id") not in (None, prompt_id):
        return None
    return event["type"], data
