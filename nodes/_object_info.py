"""IdentityLock's own nodes as ComfyUI ``/object_info`` entries: the one place that turns INPUT_TYPES into schemas.

``scripts/build_workflows.py`` writes the result to ``core/data/identitylock_object_info.json``, which
``core.workflow_validate`` reads, so core validates workflows without importing nodes/ (or ComfyUI).
``tests/test_workflows.py`` fails when the committed file no longer matches the nodes.

Run outside ComfyUI (no ``folder_paths``): file-list combos such as IdentityLoad's then hold only their
placeholder, so the file does not depend on what the generating machine has installed.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from . import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, NODE_MODULES

SCHEMA_PATH = "core/data/identitylock_object_info.json"  # relative to the repository / package root


def class_object_info(name: str, cls: type, display_name: str | None = None) -> dict[str, Any]:
    """``/object_info`` entry for a V1 node class (what ComfyUI's server builds from it)."""
    inputs = cls.INPUT_TYPES()
    returns = list(getattr(cls, "RETURN_TYPES", ()))
    info = {
        "input": {k: v for k, v in inputs.items() if k in ("required", "optional")},
        "input_order": {k: list(v) for k, v in inputs.items() if k in ("required", "optional")},
        "output": returns,
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(returns))),
        "output_name": list(getattr(cls, "RETURN_NAMES", None) or returns),
        "name": name,
        "display_name": display_name or name,
        "description": getattr(cls, "DESCRIPTION", ""),
        "category": getattr(cls, "CATEGORY", ""),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        "python_module": "custom_nodes.identitylock",
    }
    return json.loads(json.dumps(info, default=str))


def build_object_info() -> dict[str, Any]:
    """Schemas of every IdentityLock node, by class name. Raises if a node module failed to import: a
    schema file written without its nodes would silently drop them from validation."""
    for module in NODE_MODULES:
        importlib.import_module(f".{module}", __package__)  # re-raises the error nodes/__init__ only logged
    return {
        name: class_object_info(name, NODE_CLASS_MAPPINGS[name], NODE_DISPLAY_NAME_MAPPINGS.get(name))
        for name in sorted(NODE_CLASS_MAPPINGS)
    }


def render(info: dict[str, Any]) -> str:
    """The exact text of the schema file (stable, diff-friendly)."""
    return json.dumps(info, indent=1, ensure_ascii=False) + "\n"
