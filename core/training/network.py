"""The adapter network the trainer optimises (torch), attachable to a diffusers UNet (forward hooks) or to a
ComfyUI ModelPatcher (weight wrappers), always keyed by the kohya module name it will be saved under.

Two adapter kinds with one interface (``delta(x)``, ``weight_delta()``, ``rescale_for_alpha``, ``file_tensors``):
- ``lora`` (default): ΔW = (alpha / rank) · up @ down; ``down`` starts Kaiming-uniform and ``up`` at zero (the
  kohya/peft convention), so a fresh LoRA leaves the model unchanged. File keys ``lora_down/lora_up.weight``.
- ``lokr``: LyCORIS's Kronecker adapter (core/training/lokr.py), file keys ``lokr_w1``/``lokr_w2``(``_a``/``_b``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..errors import IdentityLockError
from .checkpoint import TrainingStateError
from .lokr import LoKrModule
from .lora_format import ADAPTER_KINDS, kohya_name


class LoRAModule(nn.Module):
    """One low-rank adapter for a Linear layer of shape [out, in]."""

    kind = "lora"

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

    @torch.no_grad()
    def rescale_for_alpha(self, alpha: float) -> None:
        """Take ``alpha`` keeping ΔW: ``up`` times old/new alpha."""
        self.up.mul_(self.alpha / float(alpha))
        self.alpha = float(alpha)

    def file_tensors(self) -> dict[str, torch.Tensor]:
        return {"lora_down.weight": self.down, "lora_up.weight": self.up}


Adapter = LoRAModule | LoKrModule


def file_kind(sd: dict[str, torch.Tensor]) -> str | None:
    """'lora' or 'lokr' from the keys of a kohya/LyCORIS state dict (a file or ``state_dict()``); None if neither."""
    for k in sd:
        if k.endswith((".lora_down.weight", ".down")):
            return "lora"
        if ".lokr_w" in k:
            return "lokr"
    return None


class _WeightWrapper:
    """Callable w -> w + ΔW, the shape ComfyUI's ``ModelPatcher.add_weight_wrapper`` expects."""

    def __init__(self, lora: Adapter):
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
    """All adapters of one LoRA or LoKr, keyed by kohya name; ``set_alpha`` implements the per-phase alpha change.

    ``kind`` "lora" (default) or "lokr"; ``factor`` (LoKr: -1 = most balanced split, else f >= 1) and
    ``decompose_both`` (LoKr: w1 low-rank too) are ignored for LoRA.
    """

    def __init__(
        self,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        seed: int = 0,
        kind: str = "lora",
        factor: int = -1,
        decompose_both: bool = False,
    ):
        super().__init__()
        kind = str(kind).strip().lower()
        if kind not in ADAPTER_KINDS:
            raise IdentityLockError(f"adapter type {kind!r} is not one of {', '.join(ADAPTER_KINDS)}")
        if int(factor) != factor or not (int(factor) == -1 or int(factor) >= 1):
            raise IdentityLockError(f"LoKr factor {factor!r} must be -1 (automatic) or a whole number >= 1")
        self.kind, self.factor, self.decompose_both = kind, int(factor), bool(decompose_both)
        self.rank, self.alpha, self.dropout = int(rank), float(alpha), float(dropout)
        # adapters are initialised from their own generator: same seed + same model = same start, always
        self._gen = torch.Generator().manual_seed(int(seed))
        self.loras = nn.ModuleDict()
        self._handles: list = []

    # -- building -------------------------------------------------------------------------------------------
    def add(self, name: str, in_features: int, out_features: int) -> Adapter:
        if name in self.loras:
            raise ValueError(f"duplicate LoRA module {name}")
        if self.kind == "lokr":
            mod = LoKrModule(in_features, out_features, self.rank, self.alpha, self.dropout, self._gen,
                             factor=self.factor, decompose_both=self.decompose_both)  # fmt: skip
        else:
            mod = LoRAModule(in_features, out_features, self.rank, self.alpha, self.dropout, self._gen)
        self.loras[name] = mod
        return mod

    def adapter_info(self) -> dict:
        """What build_metadata needs to name the adapter: ``adapter`` (and LoKr's ``factor``)."""
        return {"adapter": self.kind, "factor": self.factor} if self.kind == "lokr" else {"adapter": "lora"}

    def _adapter_for(self, path: str, mod: nn.Module, prefix: str, name_map: Callable | None) -> Adapter:
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
        """Change the forward scale to alpha/rank and rescale the zero-initialised factor (LoRA's ``up``, LoKr's
        ``w2_b``) by old/new so ΔW is unchanged. A LoKr with only full factors has scale 1 whatever alpha is
        (as ComfyUI reads it), so there alpha changes nothing."""
        alpha = float(alpha)
        if alpha <= 0:
            raise ValueError("alpha must be > 0")
        if alpha == self.alpha:
            return
        for lora in self.loras.values():
            lora.rescale_for_alpha(alpha)
        self.alpha = alpha

    # -- state ----------------------------------------------------------------------------------------------
    def kohya_state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """kohya keys (LoRA) or LyCORIS keys (LoKr) plus ``alpha`` per module, as ComfyUI's LoraLoader reads them."""
        sd = {}
        for name, lora in self.loras.items():
            # copy=True: on CPU ``.to`` returns the live parameter, so a kept state (the best identity probe's)
            # would follow every later optimizer step and the "best" file would hold the last weights
            for suffix, t in lora.file_tensors().items():
                sd[f"{name}.{suffix}"] = t.detach().to("cpu", dtype, copy=True).contiguous()
            sd[f"{name}.alpha"] = torch.tensor(float(self.alpha), dtype=dtype)
        return sd

    def _check_kind(self, sd: dict, what: str) -> None:
        kind = file_kind(sd)
        if kind is not None and kind != self.kind and self.loras:
            raise TrainingStateError(
                f"{what} holds a {kind.upper()} adapter but this run trains a {self.kind.upper()}; "
                f"choose adapter type {kind} to continue it, or start over"
            )

    @torch.no_grad()
    def load_kohya_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self._check_kind(sd, "the LoRA file")
        alphas = {float(v) for k, v in sd.items() if k.endswith(".alpha")}
        if len(alphas) > 1:
            raise ValueError("LoRA file has different alphas per module; not supported for resuming")
        if alphas:
            self.alpha = alphas.pop()
        for name, lora in self.loras.items():
            for suffix, p in lora.file_tensors().items():
                p.copy_(sd[f"{name}.{suffix}"])
            lora.alpha = self.alpha

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        """torch's, after readable checks that a saved training state is of this run's adapter kind and shapes
        (torch would stop with a "size mismatch" traceback)."""
        self._check_kind(state_dict, "the saved training state")
        own = self.state_dict()
        bad = [k for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        odd = sorted(set(own) ^ set(state_dict)) if strict else []
        if bad or odd:
            what = (
                f"{bad[0]}: {tuple(state_dict[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}"
                if bad
                else f"{odd[0]} is only in {'this run' if odd[0] in own else 'the saved state'}"
            )
            raise TrainingStateError(
                f"the saved training state's adapters have other shapes than this run's ({what}): resume with "
                "the saved run's rank, LoKr factor and target modules, or start over"
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
