"""The terminal progress display of a fan-out."""

from __future__ import annotations

import threading
import time
from typing import Any


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
