"""Trainer speed and controller overhead per model family, through the ComfyUI backend the node uses.

Each family's tiny random-weight model is built with a real ComfyUI 0.8's own classes (scripts/comfy_toys.py:
supported_models config -> model_base -> ModelPatcher, a detected VAE, a labelled stand-in text encoder except
SD1.5's). The pack's path then runs as in LoRATrainAdaptive: latents through the VAE and the model's latent
format, conditioning per caption through ``extra_conds``, LoRA weight wrappers on the family's targets, the
native objective through ``model_sampling``, the family's timestep draw, gradient checkpointing, and the Trainer
with its convergence controller on a fixed-length phase (validation every 10 steps).

Printed per family: steps/s on the toy, the controller's milliseconds per step and its share of step time
(target: at most 1 %). Toy widths make a step take milliseconds, so the share here is an upper bound of what it
is on a real model, where a step takes 0.4-2.4 s (docs/gpu_figures.md) and the controller's cost does not grow.

    python benchmarks/trainer.py --family flux1 --comfyui /path/to/ComfyUI [--steps 60]
    python benchmarks/trainer.py --family all --comfyui /path/to/ComfyUI

Run it with ComfyUI's Python (its dependencies) and this checkout importable as ``identitylock`` (``pip install
--no-deps -e .`` there, or PYTHONPATH to a folder holding an ``identitylock`` link to the checkout), e.g.
``PYTHONPATH=/tmp/pp python benchmarks/trainer.py --family all --comfyui ~/ComfyUI`` with /tmp/pp/identitylock
-> this checkout.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def bench_family(family_key: str, comfyui: str, steps: int, faces_dir: Path) -> dict:
    sys.path.insert(0, str(REPO / "scripts"))
    import comfy_toys as toys  # type: ignore[import-not-found]

    toys.setup_comfy(comfyui, tempfile.mkdtemp(prefix="il_bench_"))
    import torch
    from identitylock.core.families import get_family
    from identitylock.core.images import load_image
    from identitylock.core.training import dataset as ds
    from identitylock.core.training.comfy_backend import (
        attach_lora,
        caption_conds,
        encode_images_with,
        release_inference_tensors,
        sigma_backend,
        training_mode,
    )
    from identitylock.core.training.convergence import ControllerConfig
    from identitylock.core.training.network import LoRANetwork
    from identitylock.core.training.phases import Phase, Schedule
    from identitylock.core.training.presets import TrainConfig
    from identitylock.core.training.trainer import Trainer

    family = get_family(family_key)
    toy = toys.build(family_key)
    files = sorted(f for f in faces_dir.glob("*.jpg") if f.name.startswith(("lisa_", "london")))[:6]
    images = [ds.resize_square(ds.centre_square(load_image(f)), 64) for f in files]
    captions = ds.make_captions(len(images), "lsaperson")
    mp = toy.model.clone()
    with training_mode():
        mp.model.requires_grad_(False)
        encode = encode_images_with(mp, toy.vae)
        conds = caption_conds(mp, toy.clip, encode(images[:1]).shape[1:], "cpu", family)
        data = ds.prepare_data(images, captions, encode, conds.index, seed=0, sources=[f.stem for f in files])
        net = LoRANetwork(8, 8, seed=0)
        attach_lora(mp, net, family.target_suffixes("attn_ff"), {})
        import comfy.model_management as mm  # type: ignore[import-not-found]

        mm.load_models_gpu([mp], memory_required=1e20, force_full_load=True)
        release_inference_tensors(mp.model.diffusion_model)
        cfg = TrainConfig(rank=8, alpha=8, val_every=10, controller=ControllerConfig(window=10),
                          schedule=Schedule([Phase("COARSE", lr=1e-3, alpha=8, optimizer="adamw",
                                                   min_steps=steps, max_steps=steps)]))  # fmt: skip
        from identitylock.nodes._training_glue import trainable  # what the node wraps its run in

        t0 = time.perf_counter()
        with trainable(mp.model.diffusion_model, gradient_checkpointing=True):
            res = Trainer(net, sigma_backend(mp, "cpu", conds, family), data, cfg).run()
        wall = time.perf_counter() - t0
    del torch
    return {
        "family": family.label,
        "steps": res.steps,
        "steps_per_s": res.steps / res.seconds,
        "controller_ms": 1000 * res.controller_seconds / res.steps,
        "controller_pct": 100 * res.controller_seconds / res.seconds,
        "wall": wall,
    }


def run(families: list[str], comfyui: str, steps: int, faces_dir: Path) -> None:
    import scipy.stats  # noqa: F401  (the controller's one-time import, not a per-step cost: paid before timing)

    print(f"{'family':18} {'steps':>5} {'steps/s':>8} {'controller ms/step':>19} {'share of step time':>19}")
    for key in families:
        r = bench_family(key, comfyui, steps, faces_dir)
        print(f"{r['family']:18} {r['steps']:>5} {r['steps_per_s']:>8.2f} {r['controller_ms']:>19.3f} "
              f"{r['controller_pct']:>18.3f}%", flush=True)  # fmt: skip
