"""The LoRA network the trainer optimises (torch), attachable to a diffusers UNet (forward hooks) or to a
ComfyUI ModelPatcher (weight wrappers), always keyed by the kohya module name it will be saved under.

ΔW = (alpha / rank) · up @ down; ``down`` starts Kaiming-uniform and ``up`` at zero (the kohya/peft convention),
so a fresh LoRA leaves the model unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from .lora_format import kohya_name


class LoRAModule(nn.Module):
    """One low-rank adapter for a Linear layer of shape [out, in]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.down = nn.Parameter(torch.empty(self.rank, in_features))
        self.up = nn.Parameter(torch.zeros(out_features, self.rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5), generator=generator)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter's contribution to the layer output for input ``x``."""
        h = nn.functional.linear(self.dropout(x).to(self.down.dtype), self.down)
        return nn.functional.linear(h, self.up) * self.scale

    def weight_delta(self) -> torch.Tensor:
        return (self.up @ self.down) * self.scale


class _WeightWrapper:
    """Callable w -> w + ΔW, the shape ComfyUI's ``ModelPatcher.add_weight_wrapper`` expects."""

    def __init__(self, lora: LoRAModule):
        self.lora = lora

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.lora.weight_delta().to(device=w.device, dtype=w.dtype).reshape(w.shape)


def target_linears(root: nn.Module, suffixes: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """(module path, module) of every Linear-like module whose path ends with one of ``suffixes``."""
    suffixes = tuple(suffixes)
    found = []
    for name, mod in root.named_modules():
        if not name:
            continue
        w = getattr(mod, "weight", None)
        if w is None or w.ndim != 2:
            continue
        if any(name == s or name.endswith("." + s) for s in suffixes):
            found.append((name, mod))
    return found


class LoRANetwork(nn.Module):
    """All adapters of one LoRA, keyed by kohya name; ``set_alpha`` implements the per-phase alpha change."""

    def __init__(self, rank: int, alpha: float, dropout: float = 0.0, seed: int = 0):
        super().__init__()
        self.rank, self.alpha, self.dropout = int(rank), float(alpha), float(dropout)
        # adapters are initialised from their own generator: same seed + same model = same start, always
        self._gen = torch.Generator().manual_seed(int(seed))
        self.loras = nn.ModuleDict()
        self._handles: list = []

    # -- building -------------------------------------------------------------------------------------------
    def add(self, name: str, in_features: int, out_features: int) -> LoRAModule:
        if name in self.loras:
            raise ValueError(f"duplicate LoRA module {name}")
        mod = LoRAModule(in_features, out_features, self.rank, self.alpha, self.dropout, self._gen)
        self.loras[name] = mod
        return mod

    def _adapter_for(self, path: str, mod: nn.Module, prefix: str, name_map: Callable | None) -> LoRAModule:
        """The adapter of Linear ``mod`` at ``path`` (created on first use; reused on resume/re-attach)."""
        key = kohya_name(name_map(path) if name_map else path, prefix)
        lora = (
            self.loras[key] if key in self.loras else self.add(key, mod.weight.shape[1], mod.weight.shape[0])
        )
        lora.to(device=mod.weight.device, dtype=torch.float32)  # fp32 master weights, cast where used
        return lora

    def attach_hooks(
        self,
        root: nn.Module,
        suffixes: Iterable[str],
        prefix: str = "lora_unet",
        name_map: Callable | None = None,
    ) -> int:
        """Add adapters to matching Linear layers of ``root`` via forward hooks (diffusers backend)."""
        n = 0
        for path, mod in target_linears(root, suffixes):
            lora = self._adapter_for(path, mod, prefix, name_map)

            def hook(module, inputs, output, lora=lora):
                return output + lora.delta(inputs[0]).to(output.dtype)

            self._handles.append(mod.register_forward_hook(hook))
            n += 1
        return n

    def weight_wrappers(
        self,
        root: nn.Module,
        suffixes: Iterable[str],
        prefix: str = "lora_unet",
        name_map: Callable | None = None,
    ) -> list[tuple[str, _WeightWrapper]]:
        """(weight path, wrapper) pairs for ComfyUI's ``add_weight_wrapper``; creates the adapters."""
        out = []
        for path, mod in target_linears(root, suffixes):
            lora = self._adapter_for(path, mod, prefix, name_map)
            out.append((f"{path}.weight", _WeightWrapper(lora)))
        return out

    def detach_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- alpha ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def set_alpha(self, alpha: float) -> None:
        """Change the forward scale to alpha/rank and rescale ``up`` by old/new so ΔW is unchanged."""
        alpha = float(alpha)
        if alpha <= 0:
            raise ValueError("alpha must be > 0")
        if alpha == self.alpha:
            return
        factor = self.alpha / alpha
        for lora in self.loras.values():
            lora.up.mul_(factor)
            lora.alpha = alpha
        self.alpha = alpha

    # -- state ----------------------------------------------------------------------------------------------
    def kohya_state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        sd = {}
        for name, lora in self.loras.items():
            # copy=True: on CPU ``.to`` returns the live parameter, so a kept state (the best identity probe's)
            # would follow every later optimizer step and the "best" file would hold the last weights
            sd[f"{name}.lora_down.weight"] = lora.down.detach().to("cpu", dtype, copy=True).contiguous()
            sd[f"{name}.lora_up.weight"] = lora.up.detach().to("cpu", dtype, copy=True).contiguous()
            sd[f"{name}.alpha"] = torch.tensor(float(self.alpha), dtype=dtype)
        return sd

    @torch.no_grad()
    def load_kohya_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        alphas = {float(v) for k, v in sd.items() if k.endswith(".alpha")}
        if len(alphas) > 1:
            raise ValueError("LoRA file has different alphas per module; not supported for resuming")
        if alphas:
            self.alpha = alphas.pop()
        for name, lora in self.loras.items():
            lora.down.copy_(sd[f"{name}.lora_down.weight"])
            lora.up.copy_(sd[f"{name}.lora_up.weight"])
            lora.alpha = self.alpha
