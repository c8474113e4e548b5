"""Workflow files and edits: load (API or UI format), find nodes by title/id/class, ``--set``, seeds.

Pure data manipulation on API-format prompts (``{node_id: {"class_type": ..., "inputs": {...}}}``); nothing
here talks to a server.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import WorkflowError

SEED_INPUTS = ("seed", "noise_seed")
#: Deepest nesting accepted in a workflow file; real workflows stay under 10.
MAX_JSON_DEPTH = 64
#: ComfyUI's seed inputs take 0 .. 2**64 - 1.
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def is_ui_workflow(data: Any) -> bool:
    """UI-format workflows (what ComfyUI's editor saves) have a ``nodes`` list and ``links``."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def is_api_workflow(data: Any) -> bool:
    """API format: ``{node_id: {"class_type": ..., "inputs": {...}}}``."""
    if not isinstance(data, dict) or not data:
        return False
    return all(isinstance(v, dict) and isinstance(v.get("class_type"), str) for v in data.values())


def api_shape_problem(data: dict[str, Any]) -> str | None:
    """The first thing in an API-format workflow that later code could not handle (None = usable).

    Checked once at load, so the rest of the client can rely on ``inputs`` and ``_meta`` being objects."""
    for nid, node in data.items():
        if not isinstance(node.get("inputs", {}), dict):
            return f"node {nid}: 'inputs' must be an object {{name: value}}"
        meta = node.get("_meta", {})
        if not isinstance(meta, dict) or not isinstance(meta.get("title", ""), (str, type(None))):
            return f"node {nid}: '_meta' must be an object with a text 'title'"
    return None


def json_depth_problem(data: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """A message when ``data`` nests deeper than ``limit`` (no real workflow does; deep copies and re-encoding
    of such data would overflow Python's stack), else None. Iterative, so it cannot overflow itself."""
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return f"nested more than {limit} levels deep"
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None


def read_json(path: str | os.PathLike, what: str = "workflow") -> Any:
    """Parse a JSON file, turning every way it can fail (missing, unreadable, not UTF-8, not JSON, nested so
    deep that the parser overflows) into one :class:`WorkflowError` sentence."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(f"{p}: {what} file not found") from None
    except IsADirectoryError:
        raise WorkflowError(f"{p}: is a folder, not a {what} file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(
            f"{p}: cannot read the {what} ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " Export it from ComfyUI with 'Export (API)'." if what == "workflow" else ""
        raise WorkflowError(
            f"{p}: not a {what} — the file is not JSON ({exc.msg} at line {exc.lineno}).{hint}"
        ) from None
    except RecursionError:
        data = None
        problem: str | None = "nested too deeply to parse"
    else:
        problem = json_depth_problem(data)
    if problem:
        raise WorkflowError(f"{p}: not a usable {what} — its JSON is {problem}") from None
    return data


def load_workflow(path: str | os.PathLike, object_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read an API-format workflow. A UI-format file is converted when ``object_info`` is given."""
    return workflow_from_data(read_json(path), Path(path), object_info)


def workflow_from_data(
    data: Any, where: str | os.PathLike, object_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The API-format prompt in parsed JSON ``data`` (read from ``where``): checked, UI format converted."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and is_api_workflow(data["prompt"]):
        data = data["prompt"]  # a saved POST /prompt body
    if is_api_workflow(data):
        problem = api_shape_problem(data)
        if problem:
            raise WorkflowError(f"{where}: not a usable workflow — {problem}")
        return data
    if is_ui_workflow(data):
        if object_info is None:
            raise WorkflowError(
                f"{where}: this is a UI-format workflow; use the API-format file (workflows/api/...) or "
                "'Export (API)' in ComfyUI"
            )
        from ..workflow_validate import ui_to_api

        try:
            return ui_to_api(data, object_info)
        except ValueError as exc:
            raise WorkflowError(f"{where}: cannot convert this UI-format workflow: {exc}") from None
    raise WorkflowError(
        f"{where}: not a ComfyUI workflow (expected {{node_id: {{'class_type': ..., 'inputs': {{...}}}}}} "
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
            value = float(text)
        except ValueError:
            raise WorkflowError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise WorkflowError(f"expected a finite number, got {text!r}")
        return value
    if isinstance(current, str) or current is None:
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    except RecursionError:
        value, problem = None, "nested too deeply to parse"
    else:
        problem = json_depth_problem(value)
    if problem:
        raise WorkflowError(f"the JSON value is {problem}")
    return value


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


def parse_seed_range(text: str) -> Sequence[int]:
    """``A:B`` (inclusive), ``A:B:STEP`` or a comma list ``1,5,9``.

    A range comes back as a lazy :class:`range` (``0:100000000`` costs no memory; jobs are made one at a time
    as servers free up). Seeds must lie in ComfyUI's 0 .. 2**64-1."""
    usage = f"--seeds {text!r}: expected A:B (inclusive), A:B:STEP or a list 1,5,9 of whole numbers"
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
            seeds: Sequence[int] = range(a, b + 1, step)
            low, high = a, b
        else:
            seeds = [int(p) for p in text.split(",") if p.strip()]
            low, high = min(seeds, default=0), max(seeds, default=0)
    except ValueError:
        raise WorkflowError(usage) from None
    if not seeds:
        raise WorkflowError(f"{usage} (it names no seed)")
    if low < 0 or high > MAX_SEED:
        raise WorkflowError(f"--seeds {text!r}: seeds must lie between 0 and {MAX_SEED} (ComfyUI's range)")
    return seeds
