"""ComfyUI node registry. Each module listed here defines NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS.

A module that fails to import (say, an optional dependency is missing) is logged and skipped, so one broken
node never takes the whole pack, or ComfyUI, down.
"""

from __future__ import annotations

import importlib
import logging

_log = logging.getLogger("IdentityLock")

# One line per node module; keep it sorted by pipeline order.
NODE_MODULES = [
    "prep",
    "identity",
    "curation",
    "train",
    "seeds",
    "portrait",
    "metrics",
    "routes",
]

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

for _name in NODE_MODULES:
    try:
        _module = importlib.import_module(f".{_name}", __name__)
    except Exception:  # pragma: no cover - exercised only when a dependency is broken
        _log.exception("IdentityLock: could not load nodes/%s.py; its nodes are unavailable", _name)
        continue
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
