"""The errors of the ComfyUI client: each message says what went wrong and what to do about it."""

from __future__ import annotations

from typing import Any

from ..errors import IdentityLockError


class ComfyError(IdentityLockError):
    """Anything that went wrong talking to ComfyUI or running a workflow there."""


class ServerUnavailable(ComfyError):
    """The server cannot be reached (down, wrong URL, refused, timed out)."""


class PromptRejected(ComfyError):
    """``POST /prompt`` refused the workflow (validation ``node_errors`` or an unknown node)."""

    def __init__(self, message: str, node_errors: dict[str, Any] | None = None, error: Any = None):
        super().__init__(message)
        self.node_errors = node_errors or {}
        self.error = error


class ExecutionFailed(ComfyError):
    """The workflow was accepted but a node raised while running."""

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.details = details or {}


class UploadFailed(ComfyError):
    """An input image could not be uploaded."""


class WorkflowError(IdentityLockError, ValueError):
    """The workflow file or a patch (``--set``) cannot be used."""
