"""Errors the user must act on. Each message says what was wrong and how to fix it.

Every subclass of :class:`IdentityLockError`, wherever it is defined, is shown as ``IdentityLock.<Name>``: ComfyUI
names a node's exception ``type(e).__module__ + "." + type(e).__qualname__`` (execution.py ``full_type_name``),
and our real module name is the install path (``/path/to/custom_nodes/ComfyUI-IdentityLock.core.errors``), which
tells the user nothing. Pickling (worker processes send exceptions back) still finds the real class.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The module name ComfyUI (and tracebacks) show for our errors.
PUBLIC_MODULE = "IdentityLock"

#: Command-line exit codes, one definition for every command: 0 success; 2 bad input the user can fix (the other
#: files are still processed and reported); 1 anything else (an environment problem such as a ComfyUI server that
#: is down, or an unexpected error).
EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


def _rebuild(module: str, qualname: str, args: tuple, state: dict[str, Any]) -> BaseException:
    """Unpickle an IdentityLock error by its real module (its ``__module__`` is the display name)."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    exc = obj.__new__(obj, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class IdentityLockError(Exception):
    """Base class: anything raised on purpose by IdentityLock. ``exit_code``: what the CLI exits with."""

    exit_code = EXIT_BAD_INPUT

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._real_module = cls.__module__
        cls.__module__ = PUBLIC_MODULE

    def __reduce__(self):
        cls = type(self)
        return _rebuild, (cls._real_module, cls.__qualname__, self.args, dict(self.__dict__))


IdentityLockError._real_module = __name__
IdentityLockError.__module__ = PUBLIC_MODULE


class ImageInputError(IdentityLockError, ValueError):
    """An image that cannot be used (unreadable, too small, too large, NaN, empty batch...)."""


class OptionError(IdentityLockError, ValueError):
    """A setting (node widget, command-line option) outside what it accepts."""


class NoFaceError(IdentityLockError):
    """No face was found, even after the detection rescue ladder."""

    def __init__(self, message: str, index: int | None = None, tried: tuple[str, ...] = ()):
        super().__init__(message)
        self.index = index
        self.tried = tried


class MultipleFacesError(IdentityLockError):
    """Several faces where exactly one was required."""


class BackendMismatchError(IdentityLockError, ValueError):
    """Identity vectors from different backends, models or dimensions were compared."""


class ModelNotFoundError(IdentityLockError, FileNotFoundError):
    """A model file the user must provide is missing; the message lists where we looked."""
