"""Optimizer factory. AdamP comes from pytorch-optimizer; 8-bit AdamW only with bitsandbytes and a GPU."""

from __future__ import annotations

import logging
from collections.abc import Iterable

_log = logging.getLogger("IdentityLock.training")


def eight_bit_available(device: str | None = None) -> bool:
    try:
        import bitsandbytes  # noqa: F401  # type: ignore[import-not-found]
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))


def make_optimizer(
    name: str, params: Iterable, lr: float, weight_decay: float = 1e-2, device: str | None = None
):
    """Build the named optimizer over ``params``; falls back from adamw8bit to AdamW (logged) when unavailable."""
    import torch

    name = name.lower()
    params = list(params)
    if name == "adamw8bit":
        if eight_bit_available(device):
            import bitsandbytes as bnb  # type: ignore[import-not-found]

            return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
        _log.info("adamw8bit needs bitsandbytes and a CUDA device; using AdamW")
        name = "adamw"
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adamp":
        from pytorch_optimizer import AdamP

        return AdamP(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")
