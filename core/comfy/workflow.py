"""Workflow files and edits: load (API or UI format), find nodes by title/id/class, ``--set``, seeds.

Pure data manipulation on API-format prompts (``{node_id: {"class_type": ..., "inputs": {...}}}``); nothing
here talks to a server.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import WorkflowError

SEED_INPUTS = ("seed", "noise_seed")


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
        from ..workflow_validate import ui_to_api

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
