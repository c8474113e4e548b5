"""IdentityLock — ComfyUI entry point.

ComfyUI imports this folder by path (any folder name under ``custom_nodes/``); ``pip install -e .`` maps the
same folder to the import name ``identitylock``. Importing it must stay cheap: node modules import their heavy
dependencies (dlib, onnxruntime, diffusers, ...) only when a node runs.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
