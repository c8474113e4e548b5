"""Errors the user must act on. Each message says what was wrong and how to fix it."""

from __future__ import annotations


class IdentityLockError(Exception):
    """Base class: anything raised on purpose by IdentityLock."""


class ImageInputError(IdentityLockError, ValueError):
    """An image that cannot be used (unreadable, too small, too large, NaN, empty batch...)."""


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
