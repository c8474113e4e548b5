"""Type checks for dataclasses read from user JSON (training phases, presets, controller, configs; quality configs).

Why: presets, phases and saved configs come from user JSON (``--preset x.json``, ``--phases``, the node's
``phases_json``). Without a check, ``"lr": "fast"`` or ``"max_steps": [1]`` reached the trainer and ended in a
TypeError traceback (or a silent wrong value: ``True`` is an int in Python). One checker, driven by the
dataclass annotations, gives every field the same sentence: which field, what it got, what it needs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", int: "a whole number", float: "a number", str: "text", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)  # fmt: skip


def _accepts(tp: Any, value: Any) -> bool | None:
    """True/False when ``tp`` is a plain JSON-ish type we can check; None for types left to the caller."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_accepts(a, value) for a in typing.get_args(tp)]
        if any(v is True for v in verdicts):
            return True
        return None if any(v is None for v in verdicts) else False
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    return None


def _expected(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in typing.get_args(tp))
    return {bool: "true/false", int: "a whole number", float: "a finite number", str: "text",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))  # fmt: skip


def check_fields(cls: type, data: Any, what: str, *, complete: bool = False) -> dict[str, Any]:
    """``data`` as keyword arguments for dataclass ``cls``: an object, known keys only, each of its field's type.

    Fields whose type is not a plain JSON type (nested dataclasses) are passed through for the caller.
    ``complete``: every field without a default must be present (the caller builds ``cls(**data)`` directly;
    a missing one was a TypeError about positional arguments). Raises ValueError with one sentence naming the field.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object {{...}}, got {_type_name(data)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(map(str, data)) - set(known))
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {unknown}; allowed: {sorted(known)}")
    if complete:
        needed = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [k for k in needed if k not in data]
        if missing:
            raise ValueError(f"{what}: missing field(s) {', '.join(missing)} (required: {', '.join(needed)})")
    for key, value in data.items():
        if _accepts(hints[key], value) is False:
            raise ValueError(
                f"{what}: {key} must be {_expected(hints[key])}, got {_type_name(value)} {value!r:.40}"
            )
    return dict(data)


def parse_json(text: str, what: str) -> Any:
    """``json.loads`` whose failures (syntax, nesting deep enough for RecursionError) become one sentence."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{what}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise ValueError(f"{what}: the JSON is nested too deeply") from None
