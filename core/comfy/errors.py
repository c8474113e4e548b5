"""The errors of the ComfyUI client: each message says what went wrong and what to do about it.

Each class carries the CLI exit code it stands for (``exit_code``): 2 for bad input the user can fix (a
workflow the server rejects, a bad ``--set``, an upload refused), 1 for everything else (a server that is
down, hung or answers nonsense, a node that fails while running, a run that takes too long).
"""

from __future__ import annotations

from typing import Any

from ..errors import EXIT_BAD_INPUT, EXIT_ERROR, IdentityLockError


class ComfyError(IdentityLockError):
    """Anything that went wrong talking to ComfyUI or running a workflow there."""

    exit_code = EXIT_ERROR


class ServerUnavailable(ComfyError):
    """The server cannot be reached (down, wrong URL, refused) or does not answer in time (hung)."""


class ProtocolError(ComfyError):
    """The server answered, but not the way ComfyUI does (a reply of an unexpected shape)."""


class RunTimeout(ComfyError):
    """A run did not finish within ``--timeout`` (the server is alive, the job is too slow)."""


class PromptRejected(ComfyError):
    """``POST /prompt`` refused the workflow (validation ``node_errors`` or an unknown node)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, node_errors: dict[str, Any] | None = None, error: Any = None):
        super().__init__(message)
        self.node_errors = node_errors if isinstance(node_errors, dict) else {}
        self.error = error


class ExecutionFailed(ComfyError):
    """The workflow was accepted but a node raised while running."""

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.details = details if isinstance(details, dict) else {}


class UploadFailed(ComfyError):
    """An input image could not be uploaded."""

    exit_code = EXIT_BAD_INPUT


class WorkflowError(IdentityLockError, ValueError):
    """The workflow file or a patch (``--set``) cannot be used."""

    exit_code = EXIT_BAD_INPUT


def exit_code_of(exc: BaseException) -> int:
    """The CLI exit code for ``exc``: its class's ``exit_code``; other IdentityLock errors are bad input (2),
    anything else is unexpected (1)."""
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int):
        return code
    return EXIT_BAD_INPUT if isinstance(exc, IdentityLockError) else EXIT_ERROR
