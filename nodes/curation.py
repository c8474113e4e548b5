"""QualityScore and ClusterSelect: thin ComfyUI adapters over core.quality / core.cluster / core.curate.

IMAGE batches share one size, so the outputs keep the input size. An empty output is an honest empty batch
``[0, H, W, 3]`` (H, W of the input), never a black placeholder image: SaveImage/PreviewImage then write
nothing, and a node that receives it counts zero images. ClusterSelect, given an empty batch, stops with a
sentence that says nothing reached it and why (usually: no image passed QualityScore's minimums).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ._comfy import CATEGORY, Progress, check_interrupted, image_to_numpy, numpy_to_image

_CAT = f"{CATEGORY}/curation"


def _batch(arrays: list[np.ndarray], like: Any):
    """IMAGE of ``arrays``; with none, an empty batch of the input's size (counted as zero downstream)."""
    if arrays:
        return numpy_to_image(arrays)
    import torch

    h, w = (int(like.shape[1]), int(like.shape[2])) if getattr(like, "ndim", 0) == 4 else (64, 64)
    return torch.zeros((0, h, w, 3), dtype=torch.float32)


def _input_arrays(images: Any, node: str) -> list[np.ndarray]:
    from ..core.errors import ImageInputError

    if images is not None and getattr(images, "ndim", 0) == 4 and images.shape[0] == 0:
        raise ImageInputError(
            f"{node}: the image batch is empty, so there is nothing to score; if it comes from QualityScore, no "
            "image passed its minimums (its summary says why): choose a looser strategy or generate more images"
        )
    return image_to_numpy(images)


def _config(strategy: str, w_sharp: float, w_contrast: float, w_conf: float, config_json: str = ""):
    from ..core.errors import IdentityLockError
    from ..core.quality import QualityConfig

    try:
        if config_json and config_json.strip():
            cfg = QualityConfig.from_dict(json.loads(config_json))
        else:
            cfg = QualityConfig.for_strategy(
                strategy.split()[0], {"sharpness": w_sharp, "contrast": w_contrast, "confidence": w_conf}
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise IdentityLockError(f"QualityScore settings: {exc}") from exc
    return cfg


def _records(images: list[np.ndarray], cfg, backend: str, seeds: list[int | None] | None = None):
    from ..core.faces import analyze, get_engine
    from ..core.records import record_from_array

    engine = get_engine(backend)
    bar = Progress(len(images))
    out = []
    for i, img in enumerate(images):
        check_interrupted()
        analysis = analyze(img, engine)
        meta = (
            {"seed": seeds[i], "seed_source": "input"}
            if seeds and i < len(seeds) and seeds[i] is not None
            else {}
        )
        out.append(record_from_array(img, analysis, cfg, path=f"image_{i:04d}", meta=meta))
        bar(i + 1, len(images))
    return out


def _parse_seeds(text: str, n: int) -> list[int | None]:
    from ..core.errors import IdentityLockError

    parts = [p.strip() for p in (text or "").replace("\n", ",").split(",") if p.strip()]
    if not parts:
        return [None] * n
    try:
        seeds = [int(p) for p in parts]
    except ValueError as exc:
        raise IdentityLockError(f"seeds must be comma-separated integers, one per image: {exc}") from exc
    if len(seeds) != n:
        raise IdentityLockError(f"got {len(seeds)} seeds for {n} images; give one seed per image (or none)")
    return seeds


def _preview(images: list[np.ndarray], records, cols: int = 4, cell: int = 256) -> np.ndarray:
    import cv2

    rows = max(1, (len(images) + cols - 1) // cols)
    grid = np.zeros((rows * cell, cols * cell, 3), np.uint8)
    for i, (img, r) in enumerate(zip(images, records)):
        h, w = img.shape[:2]
        s = cell / max(h, w)
        small = cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
        y, x = (i // cols) * cell, (i % cols) * cell
        grid[y : y + small.shape[0], x : x + small.shape[1]] = small
        ok = r.passed
        label = f"{r.quality.total:.0f}" + ("" if ok else f" {r.quality.reason}")
        color = (40, 200, 40) if ok else (220, 40, 40)
        cv2.rectangle(grid, (x, y), (x + cell - 1, y + 22), (0, 0, 0), -1)
        cv2.putText(grid, label, (x + 4, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    return grid


_STRATEGY_CHOICES = ["B balanced", "A conservative", "C aggressive"]


class QualityScore:
    DESCRIPTION = (
        "Scores each image 0-100 (sharpness, contrast, face confidence) and rejects images without exactly one "
        "whole face or below the strategy's minimums. Outputs the passing and rejected batches, per-image scores "
        "as JSON, a summary and an optional preview grid with the scores drawn on."
    )
    CATEGORY = _CAT
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING", "STRING", "IMAGE")
    RETURN_NAMES = ("passing", "rejected", "scores_json", "summary", "preview")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        w = {"min": 0.0, "max": 1.0, "step": 0.05}
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The batch of generated images to score."}),
                "strategy": (
                    _STRATEGY_CHOICES,
                    {
                        "default": "B balanced",
                        "tooltip": "Minimums: A strictest, B balanced, C most inclusive.",
                    },
                ),
                "weight_sharpness": (
                    "FLOAT",
                    {"default": 0.5, **w, "tooltip": "Weight of sharpness in the score."},
                ),
                "weight_contrast": (
                    "FLOAT",
                    {"default": 0.3, **w, "tooltip": "Weight of contrast in the score."},
                ),
                "weight_face": (
                    "FLOAT",
                    {"default": 0.2, **w, "tooltip": "Weight of face-detection confidence."},
                ),
                "face_backend": (
                    ["dlib", "auto", "insightface"],
                    {
                        "default": "dlib",
                        "tooltip": "Face engine; calibrate when you change it (scores differ).",
                    },
                ),
                "preview": ("BOOLEAN", {"default": True, "tooltip": "Draw a grid with each image's score."}),
            },
            "optional": {
                "config_json": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "A saved/calibrated quality config (identitylock quality --save-config); overrides the widgets.",
                    },
                ),
            },
        }

    def run(
        self,
        images,
        strategy,
        weight_sharpness,
        weight_contrast,
        weight_face,
        face_backend,
        preview,
        config_json="",
    ):
        from ..core.records import scores_document

        arrays = _input_arrays(images, "QualityScore")
        cfg = _config(strategy, weight_sharpness, weight_contrast, weight_face, config_json)
        recs = _records(arrays, cfg, face_backend)
        doc = scores_document(recs, cfg)
        passing = [a for a, r in zip(arrays, recs) if r.passed]
        rejected = [a for a, r in zip(arrays, recs) if not r.passed]
        c = doc["counts"]
        lines = [f"{c['total']} images: {c['passed']} passed ({cfg.thresholds.name})"]
        for reason, n in sorted(c["rejected"].items()):
            lines.append(f"  rejected {reason}: {n}")
        lines += [
            f"  #{i}: {r.quality.total:.1f} {'ok' if r.passed else r.quality.reason}"
            for i, r in enumerate(recs)
        ]
        grid = [_preview(arrays, recs)] if preview else []
        return (
            _batch(passing, images),
            _batch(rejected, images),
            json.dumps(doc),
            "\n".join(lines),
            _batch(grid, None),
        )


class ClusterSelect:
    DESCRIPTION = (
        "Picks a diverse, high-quality training set: removes near-duplicates, groups images with K-Means on CLIP "
        "embeddings (connect a CLIP_VISION model) or on built-in layout/pose features, then takes the best images "
        "per group with seed diversity. Outputs the selected batch, a catalog JSON and a summary."
    )
    CATEGORY = _CAT
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("selected", "catalog_json", "summary")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Candidate images (e.g. QualityScore's passing output)."}),
                "target": (
                    "INT",
                    {"default": 70, "min": 1, "max": 10000, "tooltip": "How many images to select."},
                ),
                "k": (
                    "INT",
                    {
                        "default": 8,
                        "min": 0,
                        "max": 64,
                        "tooltip": "Number of clusters; 0 = choose by silhouette.",
                    },
                ),
                "strategy": (
                    ["balanced", "quality-first", "diversity-first"],
                    {
                        "default": "balanced",
                        "tooltip": "How to trade quality against seed/cluster diversity.",
                    },
                ),
                "quality_strategy": (
                    _STRATEGY_CHOICES,
                    {
                        "default": "C aggressive",
                        "tooltip": "Minimums applied before selection (C keeps the most).",
                    },
                ),
                "remove_duplicates": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Drop near-identical images first."},
                ),
                "face_backend": (
                    ["dlib", "auto", "insightface"],
                    {"default": "dlib", "tooltip": "Face engine."},
                ),
            },
            "optional": {
                "clip_vision": (
                    "CLIP_VISION",
                    {"tooltip": "A CLIP vision model (e.g. the one you load for IPAdapter)."},
                ),
                "seeds": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": False,
                        "tooltip": "Comma-separated seed per image, for seed diversity.",
                    },
                ),
            },
        }

    def run(
        self,
        images,
        target,
        k,
        strategy,
        quality_strategy,
        remove_duplicates,
        face_backend,
        clip_vision=None,
        seeds="",
    ):
        from ..core.cluster import FALLBACK_NAME
        from ..core.portfolio_catalogs import build_catalogs, selection_log
        from ..core.selection import select_records

        arrays = _input_arrays(images, "ClusterSelect")
        cfg = _config(quality_strategy, 0.5, 0.3, 0.2)
        recs = _records(arrays, cfg, face_backend, _parse_seeds(seeds, len(arrays)))
        emb = idx = None
        name = FALLBACK_NAME
        if clip_vision is not None:
            idx = [i for i, r in enumerate(recs) if r.passed]
            if idx:
                emb = clip_vision_embeddings(clip_vision, images, idx)
            name = "comfyui:clip_vision"
        sel = select_records(
            recs,
            target=target,
            k="auto" if k == 0 else k,
            strategy=strategy,
            embeddings=emb,
            embedding_index=idx,
            dedup=remove_duplicates,
        )
        settings = {
            "target": target,
            "k": k,
            "strategy": strategy,
            "quality": cfg.to_dict(),
            "embedding": name,
        }
        _, curated, report = build_catalogs(recs, sel, "comfyui", ["IMAGE"], settings, None, "none")
        for entry, i in zip(curated["catalog"], sel.selected):
            entry["batch_index"] = i
        report["timings"] = {}
        picked = [arrays[i] for i in sel.selected]
        return (
            _batch(picked, images),
            json.dumps({"curated": curated, "report": report}),
            selection_log(report),
        )


def clip_vision_embeddings(clip_vision, images, indices: list[int], batch: int = 16) -> np.ndarray:
    """ComfyUI CLIP_VISION (``encode_image(IMAGE) -> .image_embeds``) on the chosen batch indices."""
    out = []
    for s in range(0, len(indices), batch):
        sub = images[indices[s : s + batch]]
        res = clip_vision.encode_image(sub)
        e = res["image_embeds"] if isinstance(res, dict) else res.image_embeds
        out.append(e.detach().float().cpu().numpy().reshape(len(sub), -1))
    return np.concatenate(out)


NODE_CLASS_MAPPINGS = {
    "QualityScore": QualityScore,
    "ClusterSelect": ClusterSelect,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "QualityScore": "Quality Score (IdentityLock)",
    "ClusterSelect": "Cluster Select (IdentityLock)",
}
