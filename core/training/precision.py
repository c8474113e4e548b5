"""Mixed precision and memory for the training step: fp32 LoRA weights, bf16 autocast or fp16 with a grad scaler,
gradient checkpointing of the frozen model's blocks, and what a run frees when it ends.

Why fp32 adapters: in fp16 an Adam update of lr 5e-7 (the late phases) is below half a unit in the last place of
most weights, so an fp16 adapter would not move at all; the fp32 "master" copy accumulates every update and is
cast to the compute dtype where it is used (network.py). The base model stays in whatever dtype it was loaded in
(fp16/bf16, or fp8 cast by ComfyUI's own layers): no full-precision copy is made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'auto' -> bf16 on a CUDA device that supports it, fp16 (with a grad scaler) on an older CUDA device, else
    fp32. An explicit 'bf16'/'fp16' is used as given (CPU autocast runs both)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    dev = torch.device(device)
    if precision != "auto":
        return precision
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The forward pass's autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def precision_for_dtype(dtype: torch.dtype) -> str:
    """The precision matching a half-precision model's compute dtype (fp16 needs the grad scaler), else 'auto'."""
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "auto")


def make_scaler(precision: str, device: torch.device | str) -> Any:
    """A GradScaler for fp16 (small gradients would flush to zero without it), else None."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def master_fp32(params: Iterable[torch.nn.Parameter]) -> int:
    """Make trainable parameters fp32 in place (the optimizer's master weights); returns how many changed."""
    n = 0
    for p in params:
        if p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()
            n += 1
    return n


#: Block classes worth recomputing: diffusers' and ComfyUI's transformer and resnet blocks.
# ComfyUI's block classes: SD1.x/SDXL UNet; FLUX.1/Flux.2/Chroma (double/single stream); Z-Image and Lumina 2;
# Qwen-Image; SD3's MMDiT
CHECKPOINT_BLOCKS = ("BasicTransformerBlock", "ResnetBlock2D", "ResBlock", "DoubleStreamBlock", "SingleStreamBlock",
                     "JointTransformerBlock", "QwenImageTransformerBlock", "JointBlock")  # fmt: skip


def _copy(value):
    return value.clone() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def _on_copies(fn, *args, **kwargs):
    """Run a checkpointed block on copies of its tensor inputs: ComfyUI's transformer blocks add their residuals
    in place (``x += ...``), which would change the inputs the checkpoint keeps for the recomputation."""
    return fn(*[_copy(a) for a in args], **{k: _copy(v) for k, v in kwargs.items()})


def checkpoint_blocks(
    root: torch.nn.Module, class_names: Iterable[str] = CHECKPOINT_BLOCKS
) -> Callable[[], None]:
    """Gradient checkpointing for any model: each block whose class name is in ``class_names`` recomputes its
    forward in the backward pass instead of keeping its activations (torch.utils.checkpoint, non-reentrant, so
    frozen inputs and keyword arguments work). Returns an undo function.

    Used for ComfyUI's UNet (its blocks have no switch of their own for training); diffusers models use their
    own ``enable_gradient_checkpointing``. Outside a grad-enabled forward (validation, sampling) the blocks run
    as before. LoRA weight wrappers and hooks are called again in the recomputation, so gradients are the same.
    """
    from torch.utils.checkpoint import checkpoint

    names = set(class_names)
    wrapped = []
    for mod in root.modules():
        if type(mod).__name__ not in names or "forward" in mod.__dict__:
            continue
        orig = mod.forward

        def forward(*args, _orig=orig, **kwargs):
            if not torch.is_grad_enabled():
                return _orig(*args, **kwargs)
            return checkpoint(_on_copies, _orig, *args, use_reentrant=False, **kwargs)

        mod.forward = forward
        wrapped.append(mod)

    def undo() -> None:
        for mod in wrapped:
            mod.__dict__.pop("forward", None)

    return undo


def enable_gradient_checkpointing(model: torch.nn.Module) -> Callable[[], None]:
    """The model's own switch when it has one (diffusers), else :func:`checkpoint_blocks`; returns an undo."""
    if hasattr(model, "enable_gradient_checkpointing") and hasattr(model, "disable_gradient_checkpointing"):
        model.enable_gradient_checkpointing()
        return model.disable_gradient_checkpointing
    return checkpoint_blocks(model)


def release_memory(device: torch.device | str) -> None:
    """Give cached blocks back to the device once training's tensors are dropped (CUDA only)."""
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
