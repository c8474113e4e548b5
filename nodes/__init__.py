"""ComfyUI node registry. Each module listed here defines NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS.

A module that fails to import makes the whole pack fail to import, with an ImportError that names the module
and the cause. ComfyUI then lists the pack as "IMPORT FAILED" with that message and goes on with the other
packs. Skipping the module quietly (as before) hid the failure: ComfyUI reported the pack as loaded, and the
node was simply missing from the menu and from every workflow that uses it. Node modules import only the
standard library, numpy and our own light modules at import time, so a missing optional dependency surfaces
when a node runs, not here.
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
    except Exception as _exc:
        _log.error("IdentityLock: nodes/%s.py failed to import", _name, exc_info=True)
        raise ImportError(
            f"IdentityLock: nodes/{_name}.py failed to import ({type(_exc).__name__}: {_exc}); the pack is not "
            "loaded. Reinstall it (pip install -r requirements.txt) or report this error."
        ) from _exc
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
