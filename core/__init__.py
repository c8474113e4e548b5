"""IdentityLock core: the framework-agnostic library behind the ComfyUI nodes and the ``identitylock`` CLI.

numpy / PIL / torch in and out; never imports ComfyUI. Submodules are imported on demand so that
``import identitylock.core`` stays fast.
"""

__version__ = "0.1.0"
