"""LoKr (LyCORIS's Kronecker-product adapter) for a Linear layer, written exactly as ComfyUI 0.8 loads it
(``comfy/weight_adapter/lokr.py``), so the file we save gives in ComfyUI the ΔW we trained.

Shapes: in = in_m·in_n and out = out_l·out_k, each split by :func:`factorization` (``factor`` = -1: the most
balanced split; f > 0: f and dim/f when f divides dim and f² <= dim). ΔW = scale · kron(w1, w2), w1 [out_l, in_m]
and w2 [out_k, in_n]. Each factor is either a full matrix (``lokr_w1`` / ``lokr_w2``) or a rank-r product
(``lokr_w1_a @ lokr_w1_b`` / ``lokr_w2_a @ lokr_w2_b``): w2 is low-rank when rank < max(out_k, in_n) / 2, w1 only
with ``decompose_both`` and rank < max(out_l, in_m) / 2 (LyCORIS's rules). scale = alpha / rank when any factor is
low-rank, else 1 (ComfyUI divides alpha by the rank of a low-rank factor and ignores alpha otherwise).

Init as LyCORIS: w1 (or w1_a, w1_b) Kaiming-uniform, w2_a Kaiming-uniform and w2_b (or a full w2) zero, so a fresh
LoKr leaves the model unchanged and the first step's gradient reaches w2_b (or w2); the other factors follow.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_KAIMING_A = math.sqrt(5)


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """(m, n) with m·n = dimension and m <= n: ``factor`` and dimension/factor when that split is allowed, else the
    split with the smallest m + n whose m stays <= factor (-1: no bound). The same rule as LyCORIS and ComfyUI:
    the factor shapes must match theirs or the file would not rebuild the same ΔW."""
    dimension, factor = int(dimension), int(factor)
    if factor > 0 and dimension % factor == 0 and dimension >= factor**2:
        m, n = factor, dimension // factor
        return (n, m) if m > n else (m, n)
    if factor < 0:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


class LoKrModule(nn.Module):
    """One LoKr adapter for a Linear layer of shape [out, in]; same interface as ``network.LoRAModule``."""

    kind = "lokr"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
        factor: int = -1,
        decompose_both: bool = False,
    ):
        super().__init__()
        self.rank, self.alpha, self.factor = int(rank), float(alpha), int(factor)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.in_m, self.in_n = factorization(in_features, factor)
        self.out_l, self.out_k = factorization(out_features, factor)
        r = self.rank
        self.w1_lowrank = bool(decompose_both) and r < max(self.out_l, self.in_m) / 2
        self.w2_lowrank = r < max(self.out_k, self.in_n) / 2
        if self.w1_lowrank:
            self.lokr_w1_a = nn.Parameter(torch.empty(self.out_l, r))
            self.lokr_w1_b = nn.Parameter(torch.empty(r, self.in_m))
            nn.init.kaiming_uniform_(self.lokr_w1_a, a=_KAIMING_A, generator=generator)
            nn.init.kaiming_uniform_(self.lokr_w1_b, a=_KAIMING_A, generator=generator)
        else:
            self.lokr_w1 = nn.Parameter(torch.empty(self.out_l, self.in_m))
            nn.init.kaiming_uniform_(self.lokr_w1, a=_KAIMING_A, generator=generator)
        if self.w2_lowrank:
            self.lokr_w2_a = nn.Parameter(torch.empty(self.out_k, r))
            self.lokr_w2_b = nn.Parameter(torch.zeros(r, self.in_n))
            nn.init.kaiming_uniform_(self.lokr_w2_a, a=_KAIMING_A, generator=generator)
        else:
            self.lokr_w2 = nn.Parameter(torch.zeros(self.out_k, self.in_n))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    # -- the factors -----------------------------------------------------------------------------------------
    @property
    def lowrank(self) -> bool:
        return self.w1_lowrank or self.w2_lowrank

    @property
    def scale(self) -> float:
        """alpha/rank with a low-rank factor, else 1: what ComfyUI multiplies kron(w1, w2) by."""
        return self.alpha / self.rank if self.lowrank else 1.0

    def w1(self) -> torch.Tensor:
        return self.lokr_w1_a @ self.lokr_w1_b if self.w1_lowrank else self.lokr_w1

    def w2(self) -> torch.Tensor:
        return self.lokr_w2_a @ self.lokr_w2_b if self.w2_lowrank else self.lokr_w2

    def _zero_init_factor(self) -> nn.Parameter:
        """The factor that starts at zero (LoRA's ``up``): the one an alpha change rescales."""
        return self.lokr_w2_b if self.w2_lowrank else self.lokr_w2

    # -- the interface the network uses ----------------------------------------------------------------------
    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """kron(w1, w2)·x without building ΔW: x as [.., in_m, in_n] -> w1 · X · w2ᵀ -> [.., out_l·out_k]."""
        x = self.dropout(x).to(self._zero_init_factor().dtype)
        h = x.reshape(*x.shape[:-1], self.in_m, self.in_n)
        if self.w2_lowrank:
            h = h @ self.lokr_w2_b.t() @ self.lokr_w2_a.t()
        else:
            h = h @ self.lokr_w2.t()
        y = self.w1() @ h  # [.., out_l, out_k]
        return y.reshape(*x.shape[:-1], self.out_features) * self.scale

    def weight_delta(self) -> torch.Tensor:
        return torch.kron(self.w1(), self.w2()) * self.scale

    @torch.no_grad()
    def rescale_for_alpha(self, alpha: float) -> None:
        """Take ``alpha`` keeping ΔW: scale the zero-initialised factor by old/new scale (no-op at scale 1)."""
        old = self.scale
        self.alpha = float(alpha)
        if self.scale != old:
            self._zero_init_factor().mul_(old / self.scale)

    def file_tensors(self) -> dict[str, torch.Tensor]:
        """The factors under LyCORIS's key suffixes (``alpha`` is added by the network)."""
        names = ("lokr_w1_a", "lokr_w1_b") if self.w1_lowrank else ("lokr_w1",)
        names += ("lokr_w2_a", "lokr_w2_b") if self.w2_lowrank else ("lokr_w2",)
        return {n: getattr(self, n) for n in names}
