"""Per-phase reconstruction losses (torch). Charbonnier is a smooth L1: mean(sqrt(d² + eps²) - eps)."""

from __future__ import annotations

from collections.abc import Callable


def make_loss(name: str, huber_delta: float = 1.0, charbonnier_eps: float = 1e-3) -> Callable:
    """Return loss(pred, target) -> scalar tensor for one of mse / huber / charbonnier / l1."""
    import torch
    import torch.nn.functional as F

    name = name.lower()
    if name == "mse":
        return lambda p, t: F.mse_loss(p.float(), t.float())
    if name == "huber":
        return lambda p, t: F.huber_loss(p.float(), t.float(), delta=huber_delta)
    if name == "l1":
        return lambda p, t: F.l1_loss(p.float(), t.float())
    if name == "charbonnier":
        eps2 = charbonnier_eps**2

        def charbonnier(p, t):
            d = p.float() - t.float()
            return (torch.sqrt(d * d + eps2) - charbonnier_eps).mean()

        return charbonnier
    raise ValueError(f"unknown loss {name!r}")
