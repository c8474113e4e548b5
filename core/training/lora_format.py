"""The LoRA file we write: kohya-style keys plus training metadata in the safetensors header.

LoKr files use LyCORIS's keys under the same module names (``.lokr_w1``, ``.lokr_w2`` or ``.lokr_w2_a/_b``,
``.alpha``; see core/training/lokr.py), which ComfyUI's LoraLoader reads as well.

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
from ..families import get_family
from ..fileio import atomic_write_with

FORMAT_VERSION = "1"
ADAPTER_KINDS = (
    "lora",
    "lokr",
)  # LoRA (kohya keys) and LoKr (LyCORIS keys), both read by ComfyUI's LoraLoader
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


# modelspec.implementation per family (the sources kohya's sai_model_spec.py and the model cards name)
_IMPLEMENTATION = {
    "sd15": "diffusers",
    "sdxl": "https://github.com/Stability-AI/generative-models",
    "sd3": "https://github.com/Stability-AI/sd3.5",
    "flux1": "https://github.com/black-forest-labs/flux",
    "flux2": "https://github.com/black-forest-labs/flux2",
    "chroma": "https://huggingface.co/lodestones/Chroma",
    "lumina2": "https://github.com/Alpha-VLLM/Lumina-Image-2.0",
    "zimage": "https://github.com/Tongyi-MAI/Z-Image",
    "qwen_image": "https://github.com/QwenLM/Qwen-Image",
}
# kohya's ss_base_model_version, only where kohya's sd-scripts defines one for the family
_KOHYA_BASE_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0", "flux1": "flux1", "chroma": "chroma",
                       "lumina2": "lumina2"}  # fmt: skip


def _family_metadata(info: dict[str, Any]) -> dict[str, str]:
    """modelspec.* and the family's ss_* / target-module fields, for ``info["family"]`` (a key of FAMILIES)."""
    fam = get_family(info["family"])
    adapter = str(info.get("adapter", "lora"))
    arch = fam.modelspec
    if adapter == "lokr":
        arch = arch[: -len("/lora")] + "/lokr" if arch.endswith("/lora") else arch + "/lokr"
    title = info.get("title") or (f"{info['trigger_word']} ({fam.label})" if info.get("trigger_word") else "")
    meta = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": arch,
        "modelspec.implementation": _IMPLEMENTATION.get(fam.key, "https://github.com/comfyanonymous/ComfyUI"),
        "modelspec.title": str(title or f"IdentityLock {fam.label} {adapter.upper()}"),
    }
    if info.get("trigger_word"):
        meta["modelspec.trigger_phrase"] = str(info["trigger_word"])
    if fam.key in _KOHYA_BASE_VERSION:
        meta["ss_base_model_version"] = _KOHYA_BASE_VERSION[fam.key]
    targets = info.get("target_modules")
    if isinstance(targets, str):  # a scope name ("attn", "attn_ff"): the family's module suffixes for it
        meta["identitylock.target_scope"] = targets
        targets = fam.target_suffixes(targets)
    if targets is not None:
        meta["identitylock.target_modules"] = json.dumps(list(targets), separators=(",", ":"))
    return meta


def build_metadata(info: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata (str -> str): identitylock.* JSON fields plus kohya ``ss_*`` mirrors; with
    ``info["family"]`` also modelspec.* naming the family and adapter, and the adapted module suffixes.

    ``info["adapter"]`` "lokr" (with ``factor``) writes LyCORIS's ``ss_network_module``/``ss_network_args``."""
    adapter = str(info.get("adapter", "lora"))
    if adapter not in ADAPTER_KINDS:
        raise IdentityLockError(f"adapter type {adapter!r} is not one of {', '.join(ADAPTER_KINDS)}")
    meta = {"identitylock.format": FORMAT_VERSION}
    for k, v in info.items():
        meta[f"identitylock.{k}"] = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    if "rank" in info:
        meta["ss_network_dim"] = str(info["rank"])
    if "alpha" in info:
        meta["ss_network_alpha"] = str(info["alpha"])
    if adapter == "lokr":  # as kohya's train_network.py with --network_module lycoris.kohya (args as strings)
        meta["ss_network_module"] = "lycoris.kohya"
        meta["ss_network_args"] = json.dumps({"algo": "lokr", "factor": str(int(info.get("factor", -1)))})
    else:
        meta["ss_network_module"] = "networks.lora"
    if "trigger_word" in info:
        meta["ss_tag_frequency"] = json.dumps({"identitylock": {str(info["trigger_word"]): 1}})
    if "base_model_hash" in info:
        meta["ss_sd_model_hash"] = str(info["base_model_hash"])[:16]
    if "steps" in info:
        meta["ss_steps"] = str(info["steps"])
    if "family" in info:
        meta.update(_family_metadata(info))
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
