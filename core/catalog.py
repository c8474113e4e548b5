"""Image metadata (seed, prompt) and the JSON catalogs of a portfolio, with their documented schemas.

Seeds matter for curation: images from one seed share lighting and face structure, so a diverse training set
spreads its picks over seeds. We read them, in order of trust, from:

1. PNG text chunk ``prompt`` written by ComfyUI's SaveImage (API-format graph: KSampler ``seed`` /
   SamplerCustom ``noise_seed``, following links to primitive nodes), with the positive prompt text;
2. PNG text chunk ``parameters`` written by A1111/Forge (``Seed: 123``);
3. the file name (``..._seed_966983_...``, ``seed-42``, ``seed42``).

The schemas below are JSON-schema dicts (draft-07 subset) and ``validate`` is a small validator for exactly that
subset (type, properties, required, items, enum, minimum, maximum, additionalProperties), so the catalogs can
be checked without an extra dependency; any JSON-schema library accepts the same dicts.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .fileio import write_json_atomic

_SEED_RE = re.compile(r"(?:^|[^a-z0-9])seed[_\-= ]?(\d{1,20})(?![0-9])", re.IGNORECASE)
_A1111_SEED_RE = re.compile(r"\bSeed:\s*(\d+)")
SAMPLER_SEED_KEYS = ("seed", "noise_seed")


def seed_from_filename(name: str | os.PathLike) -> int | None:
    """``char_x_seed_966983_original_05.png`` -> 966983; None when the name carries no seed."""
    m = _SEED_RE.search(Path(name).stem)
    return int(m.group(1)) if m else None


def _follow(graph: Mapping[str, Any], value: Any, keys: tuple[str, ...], depth: int = 0) -> Any:
    """Resolve a ComfyUI API-graph input: a literal, or a link ``[node_id, slot]`` to a primitive node."""
    if not isinstance(value, list) or len(value) != 2 or depth > 8:
        return value
    node = graph.get(str(value[0]))
    if not isinstance(node, Mapping):
        return None
    inputs = node.get("inputs", {})
    for k in keys:
        if k in inputs:
            return _follow(graph, inputs[k], keys, depth + 1)
    return None


def _seed(value: Any) -> int | None:
    """A usable seed: an integer below 2**64 in size, or a float equal to one (NaN, 1e400, 1.5, True: None)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**64:
        return value
    return None


def _setting(value: Any) -> Any:
    """A sampler setting worth keeping in a catalog (JSON-safe scalar), else None (NaN, inf, nested...)."""
    if isinstance(value, (bool, int, str)):
        return value if not isinstance(value, str) or len(value) <= 200 else None
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def parse_comfy_prompt(text: str) -> dict[str, Any]:
    """Seed, positive/negative prompt and sampler settings from ComfyUI's ``prompt`` PNG chunk.

    Metadata is untrusted input: anything unusable (invalid or absurdly nested JSON, NaN/inf seeds) is ignored,
    never allowed to make a good image "unreadable".
    """
    try:
        graph = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return {}
    if not isinstance(graph, dict):
        return {}
    out: dict[str, Any] = {}
    samplers = [
        (nid, n)
        for nid, n in sorted(graph.items(), key=lambda kv: str(kv[0]))
        if isinstance(n, Mapping) and "sampler" in str(n.get("class_type", "")).lower()
    ]
    for _nid, node in samplers:
        inputs = node.get("inputs", {})
        for key in SAMPLER_SEED_KEYS:
            if key in inputs:
                seed = _seed(_follow(graph, inputs[key], ("seed", "noise_seed", "value", "int", "number")))
                if seed is not None:
                    out.setdefault("seed", seed)
        for key, name in (("positive", "prompt"), ("negative", "negative_prompt")):
            link = inputs.get(key)
            if isinstance(link, list) and len(link) == 2:
                enc = graph.get(str(link[0]), {})
                text_in = enc.get("inputs", {}).get("text") if isinstance(enc, Mapping) else None
                text_val = _follow(graph, text_in, ("text", "value", "string"))
                if isinstance(text_val, str):
                    out.setdefault(name, text_val)
        for key in ("steps", "cfg", "sampler_name", "scheduler", "denoise"):
            if key in inputs and _setting(inputs[key]) is not None:
                out.setdefault("settings", {})[key] = inputs[key]
        if "seed" in out:
            break
    return out


def parse_a1111_parameters(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    m = _A1111_SEED_RE.search(text or "")
    if m and len(m.group(1)) <= 20:
        out["seed"] = _seed(int(m.group(1)))
    first = (text or "").split("\n", 1)[0].strip()
    if first and not first.startswith(("Steps:", "Negative prompt:")):
        out["prompt"] = first
    return out


def metadata_from_text(path: str | os.PathLike, text: Mapping[str, str] | None) -> dict[str, Any]:
    """Combine PNG text chunks and the file name into ``{seed, seed_source, prompt, ...}``."""
    meta: dict[str, Any] = {"seed": None, "seed_source": None}
    try:
        _from_chunks(meta, text or {})
    except Exception:  # hostile metadata: ignore what we cannot use, keep the image
        meta = {"seed": None, "seed_source": None}
    if meta["seed"] is None:
        seed = seed_from_filename(path)
        if seed is not None:
            meta["seed"], meta["seed_source"] = seed, "filename"
    return meta


def _from_chunks(meta: dict[str, Any], text: Mapping[str, str]) -> None:
    if "prompt" in text:
        parsed = parse_comfy_prompt(text["prompt"])
        if parsed:
            meta["comfyui"] = True
        if parsed.get("seed") is not None:
            meta["seed"], meta["seed_source"] = parsed.pop("seed"), "png:prompt"
        meta.update({k: v for k, v in parsed.items() if k not in meta})
    if meta["seed"] is None and "parameters" in text:
        parsed = parse_a1111_parameters(text["parameters"])
        if parsed.get("seed") is not None:
            meta["seed"], meta["seed_source"] = parsed.pop("seed"), "png:parameters"
        meta.update({k: v for k, v in parsed.items() if k not in meta})


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata of an image file without decoding its pixels (PNG text chunks are read at open)."""
    from PIL import Image

    text: dict[str, str] = {}
    try:
        with Image.open(path) as img:
            text = {k: v for k, v in getattr(img, "text", {}).items() if isinstance(v, str)} or {
                k: v for k, v in img.info.items() if isinstance(v, str)
            }
    except Exception:
        text = {}
    return metadata_from_text(path, text)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (temp file + rename) so a crash never leaves a half catalog."""
    return write_json_atomic(path, obj, indent=2, default=_json_default)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# -- schemas ------------------------------------------------------------------------------------------------
_NUM = {"type": "number"}
_NULLABLE_NUM = {"type": ["number", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_STR = {"type": ["string", "null"]}
_TIERS = {
    "type": "array",
    "items": {"type": "string", "enum": ["tier_20", "tier_70", "tier_100", "tier_200", "tier_300"]},
}

QUALITY_ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["score", "passed", "reason", "reasons", "scores", "metrics"],
    "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 100},
        "passed": {"type": "boolean"},
        "reason": _NULLABLE_STR,
        "reasons": {"type": "array", "items": {"type": "string"}},
        "scores": {
            "type": "object",
            "required": ["sharpness", "contrast", "confidence", "face_size"],
            "properties": {
                k: {"type": "number", "minimum": 0, "maximum": 100}
                for k in ("sharpness", "contrast", "confidence", "face_size")
            },
        },
        "metrics": {
            "type": "object",
            "required": ["width", "height", "faces", "sharpness", "contrast"],
            "properties": {
                "width": {"type": "integer", "minimum": 1},
                "height": {"type": "integer", "minimum": 1},
                "faces": {"type": "integer", "minimum": 0},
                "sharpness": _NUM,
                "sharpness_face": _NULLABLE_NUM,
                "contrast": _NUM,
                "confidence": _NULLABLE_NUM,
                "face_fraction": _NULLABLE_NUM,
            },
        },
    },
}

IMAGE_ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["filename", "path", "seed", "seed_source", "status", "quality"],
    "properties": {
        "filename": {"type": "string"},
        "path": {"type": "string"},
        "seed": _NULLABLE_INT,
        "seed_source": {
            "type": ["string", "null"],
            "enum": ["png:prompt", "png:parameters", "filename", "input", None],
        },
        "prompt": {"type": "string"},
        "status": {"type": "string", "enum": ["selected", "passed", "duplicate", "rejected", "unreadable"]},
        "error": {"type": "string"},
        "duplicate_of": {"type": "string"},
        "cluster": _NULLABLE_INT,
        "rank": _NULLABLE_INT,
        "quality_score": _NULLABLE_NUM,
        "training_tiers": _TIERS,
        "identity_drift": _NULLABLE_NUM,
        "pose": {"type": ["object", "null"]},
        "quality": {"anyOf": [QUALITY_ENTRY_SCHEMA, {"type": "null"}]},
    },
}

MASTER_CATALOG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "session_info", "settings", "counts", "catalog"],
    "properties": {
        "schema": {"type": "string", "enum": ["identitylock.master_image_catalog/1"]},
        "session_info": {
            "type": "object",
            "required": ["run_id", "timestamp", "input", "identitylock_version"],
            "properties": {
                "run_id": {"type": "string"},
                "timestamp": {"type": "string"},
                "input": {"type": "array"},
            },
        },
        "settings": {"type": "object"},
        "counts": {
            "type": "object",
            "required": ["total", "unreadable", "rejected", "passed", "duplicates", "selected"],
            "properties": {
                k: {"type": "integer", "minimum": 0}
                for k in ("total", "unreadable", "rejected", "passed", "duplicates", "selected")
            },
        },
        "catalog": {"type": "array", "items": IMAGE_ENTRY_SCHEMA},
    },
}

CURATED_ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["filename", "source", "image", "seed", "cluster", "rank", "quality_score", "training_tiers"],
    "properties": {
        "filename": {"type": "string"},
        "source": {"type": "string"},
        "image": {"type": "string"},
        "seed": _NULLABLE_INT,
        "cluster": {"type": "integer", "minimum": 0},
        "rank": {"type": "integer", "minimum": 0},
        "quality_score": {"type": "number", "minimum": 0, "maximum": 100},
        "training_tiers": _TIERS,
        "prompt": {"type": "string"},
    },
}

CURATED_CATALOG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "run_id", "strategy", "target", "k", "embedding", "link_mode", "tiers", "catalog"],
    "properties": {
        "schema": {"type": "string", "enum": ["identitylock.curated_catalog/1"]},
        "run_id": {"type": "string"},
        "strategy": {"type": "string", "enum": ["quality-first", "balanced", "diversity-first"]},
        "target": {"type": "integer", "minimum": 1},
        "k": {"type": "integer", "minimum": 0},
        "embedding": {"type": "string"},
        "link_mode": {"type": "string", "enum": ["symlink", "hardlink", "copy", "none"]},
        "tiers": {"type": "object"},
        "catalog": {"type": "array", "items": CURATED_ENTRY_SCHEMA},
    },
}

SELECTION_REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "schema",
        "run_id",
        "counts",
        "rejections",
        "unreadable",
        "clusters",
        "seeds",
        "warnings",
        "timings",
    ],
    "properties": {
        "schema": {"type": "string", "enum": ["identitylock.selection_report/1"]},
        "run_id": {"type": "string"},
        "counts": {"type": "object"},
        "rejections": {"type": "object"},
        "unreadable": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "error"],
                "properties": {"path": {"type": "string"}, "error": {"type": "string"}},
            },
        },
        "clusters": {
            "type": "array",
            "items": {"type": "object", "required": ["cluster", "size", "selected"]},
        },
        "seeds": {"type": "object"},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "timings": {"type": "object"},
    },
}

SCORES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "config", "counts", "images"],
    "properties": {
        "schema": {"type": "string", "enum": ["identitylock.quality_scores/1"]},
        "config": {"type": "object"},
        "counts": {"type": "object"},
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["filename", "quality"],
                "properties": {
                    "filename": {"type": "string"},
                    "quality": {"anyOf": [QUALITY_ENTRY_SCHEMA, {"type": "null"}]},
                },
            },
        },
    },
}

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def validate(obj: Any, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """Errors of ``obj`` against a schema of the subset used here (empty list = valid)."""
    errors: list[str] = []
    if "anyOf" in schema:
        if all(validate(obj, s, path) for s in schema["anyOf"]):
            errors.append(f"{path}: matches none of the allowed shapes")
        return errors
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(obj, t) for t in names):
            return [f"{path}: expected {'/'.join(names)}, got {type(obj).__name__}"]
    if "enum" in schema and obj not in schema["enum"]:
        errors.append(f"{path}: {obj!r} not one of {schema['enum']}")
    if _is_type(obj, "number"):
        if "minimum" in schema and obj < schema["minimum"]:
            errors.append(f"{path}: {obj} < minimum {schema['minimum']}")
        if "maximum" in schema and obj > schema["maximum"]:
            errors.append(f"{path}: {obj} > maximum {schema['maximum']}")
    if isinstance(obj, dict):
        for key in schema.get("required", []):
            if key not in obj:
                errors.append(f"{path}: missing required key {key!r}")
        props = schema.get("properties", {})
        for key, value in obj.items():
            if key in props:
                errors.extend(validate(value, props[key], f"{path}.{key}"))
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected key {key!r}")
    if isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            errors.extend(validate(item, schema["items"], f"{path}[{i}]"))
    return errors
