"""HTTP route for the web/ extension: ``GET /identitylock/report?path=<relative path>`` serves an IdentityMetrics
report (HTML, CSV, PNG, JSON) from ComfyUI's output folder, so the node's "Open report" button can open it.

Registered only inside ComfyUI (PromptServer present); importing this module elsewhere does nothing. No node
classes: the empty mappings keep the node registry contract.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from pathlib import Path

from ._comfy import output_directory

_log = logging.getLogger("IdentityLock")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

ROUTE = "/identitylock/report"
SERVED_SUFFIXES = {".html", ".csv", ".png", ".jpg", ".jpeg", ".json", ".svg", ".txt"}


def resolve_report_path(output_dir: str | os.PathLike, rel: str | None) -> Path | None:
    """The file ``rel`` names inside ``output_dir``, or None if it is missing, outside it or not a report type."""
    if not rel or "\x00" in rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        return None
    base = Path(output_dir).resolve()
    try:
        target = (base / rel).resolve()
    except (OSError, RuntimeError):
        return None
    if base != target and base not in target.parents:
        return None
    if target.suffix.lower() not in SERVED_SUFFIXES or not target.is_file():
        return None
    return target


def _register() -> bool:
    try:
        from aiohttp import web  # type: ignore[import-not-found]
        from server import PromptServer  # type: ignore[import-not-found]
    except ImportError:
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return False

    @instance.routes.get(ROUTE)
    async def identitylock_report(request):  # pragma: no cover - exercised inside ComfyUI
        target = resolve_report_path(output_directory(), request.query.get("path"))
        if target is None:
            return web.Response(status=404, text="IdentityLock: no such report in the output folder")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        headers = {
            # The report is self-contained: forbid network access from it.
            "Content-Security-Policy": "default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'; font-src data:",
            "X-Content-Type-Options": "nosniff",
        }
        return web.FileResponse(target, headers={**headers, "Content-Type": ctype})

    _log.debug("IdentityLock: report route %s registered", ROUTE)
    return True


REGISTERED = _register()
