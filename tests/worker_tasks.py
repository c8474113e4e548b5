"""Test-only worker tasks for core/workers.py (a module of its own: spawned workers import it by name).

They wrap the real face-analysis task and kill the worker process on one chosen item, the way a segfault in a
native library, an abort or the OOM killer would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from identitylock.core.faces import _face_task
from identitylock.core.records import _records_task

POISON = "poison"


def _kill(how: str) -> None:
    if how == "abort":
        os.abort()
    if how == "exit":
        os._exit(3)
    if how == "segfault":
        import ctypes

        ctypes.string_at(0)
    raise AssertionError(how)


def faces_or_die(context: tuple, item: Any) -> Any:
    """``_face_task``, but the process dies on a file whose name starts with ``poison-<how>``."""
    name = Path(item).name if isinstance(item, (str, Path)) else ""
    if name.startswith(POISON):
        _kill(name.split("-")[1].split(".")[0])
    return _face_task(context, item)


def records_or_die(context: tuple, item: str) -> Any:
    name = Path(item).name
    if name.startswith(POISON):
        _kill(name.split("-")[1].split(".")[0])
    return _records_task(context, item)


def always_die(context: Any, item: Any) -> Any:
    os._exit(4)


def failing_setup(*args: Any) -> Any:
    from identitylock.core.errors import ModelNotFoundError

    raise ModelNotFoundError("test setup: no such model file; install it first")


def echo_setup(*args: Any) -> dict:
    return {"args": args}


def echo(context: dict, item: Any) -> Any:
    return (context["args"], item)
