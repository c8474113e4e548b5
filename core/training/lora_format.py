"""The LoRA file we write: kohya-style keys plus training metadata in the safetensors header.

Keys: ``lora_unet_<module path with . replaced by _>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``
(text encoder: ``lora_te_text_model_encoder_layers_<n>_self_attn_q_proj``). ComfyUI 0.8 loads every such key
(see shared/comfyui/LORA_KEYS.md) and diffusers ``load_lora_weights`` converts them; PEFT's own names are
mostly ignored by ComfyUI, so we never write those.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import IdentityLockError
from ..fileio import atomic_write_with

FORMAT_VERSION = "1"
_BAD_NAME = re.compile(r"[\\/:*?\"<>|\x00-\x1f]")


def kohya_name(module_path: str, prefix: str = "lora_unet") -> str:
    """'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q' -> 'lora_unet_down_blocks_0_..._attn1_to_q'."""
    return f"{prefix}_{module_path.replace('.', '_')}"


def check_lora_name(name: str) -> str:
    """Validate a user-given LoRA file name (no directories, no '..'); returns it with '.safetensors'."""
    if not name or not name.strip():
        raise IdentityLockError("LoRA name is empty: give a file name such as 'lisa_v1'")
    name = name.strip()
    if "/" in name or "\\" in name or ".." in name or _BAD_NAME.search(name) or name.startswith("."):
        raise IdentityLockError(
            f"LoRA name {name!r} must be a plain file name: no path separators, no '..', no leading dot "
            "or special characters (the file is written into the loras folder)"
        )
    return name if name.endswith(".safetensors") else name + ".safetensors"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def build_metadata(info: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata (str -> str): identitylock.* JSON fields plus kohya ``ss_*`` mirrors."""
    meta = {"identitylock.format": FORMAT_VERSION}
    for k, v in info.items():
        meta[f"identitylock.{k}"] = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    if "rank" in info:
        meta["ss_network_dim"] = str(info["rank"])
    if "alpha" in info:
        meta["ss_network_alpha"] = str(info["alpha"])
    meta["ss_network_module"] = "networks.lora"
    if "trigger_word" in info:
        meta["ss_tag_frequency"] = json.dumps({"identitylock": {str(info["trigger_word"]): 1}})
    if "base_model_hash" in info:
        meta["ss_sd_model_hash"] = str(info["base_model_hash"])[:16]
    if "steps" in info:
        meta["ss_steps"] = str(info["steps"])
    return meta


def save_lora(path: str | os.PathLike, state_dict: dict, info: dict[str, Any] | None = None) -> Path:
    """Write atomically: a temporary file in the same folder, then rename (the name appears only when complete)."""
    from safetensors.torch import save_file

    from .safety import check_finite_weights

    check_finite_weights(
        state_dict, f"the LoRA file {Path(path).name}"
    )  # a NaN LoRA would load and break images
    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    metadata = build_metadata(info or {})
    return atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The identitylock.* metadata of a saved LoRA, JSON-decoded where possible."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        raw = fh.metadata() or {}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k.startswith("identitylock."):
            try:
                out[k[len("identitylock.") :]] = json.loads(v)
            except (json.JSONDecodeError, TypeError):
                out[k[len("identitylock.") :]] = v
    return out
