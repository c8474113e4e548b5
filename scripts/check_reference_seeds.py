"""DriftSeedSearch with reference-image conditioning in a real ComfyUI (issue 14), on the tiny random-weight
models of scripts/comfy_toys.py (ComfyUI's own model classes; proof harness, never run in CI).

For FLUX.1 (Kontext's ReferenceLatent), Flux.2 (multi-reference: two ReferenceLatent nodes) and Qwen-Image (the
reference_latents that TextEncodeQwenImageEdit sets, here through ReferenceLatent: its Qwen-VL text encoder cannot
exist here), the reference image is encoded with the toy's VAE, FluxGuidance is applied where the family renders
with guidance, and ModelSamplingFlux / ModelSamplingAuraFlow shift the MODEL. The seed search's sampled latent for a
seed must equal ComfyUI's own KSampler (nodes.common_ksampler) with the same MODEL and CONDITIONING, and the
conditioning the sampler received must be the one given. One row per family.

``--inpaint``: MatchedPortrait on an SD1.5 *inpainting* toy (9 input channels: ComfyUI makes it an inpaint model)
and on the plain SD1.5 toy: the first must reach the sampler with InpaintModelConditioning's concat conditioning,
the second with Differential Diffusion's denoise-mask function on the MODEL. One row each.

    PYTHONPATH=<folder holding identitylock> COMFY_PYTHON scripts/check_reference_seeds.py --comfyui COMFYUI_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--toys", default=str(HERE), help="folder of comfy_toys.py")
    ap.add_argument("--families", nargs="*", default=["flux1", "flux2", "qwen_image"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--inpaint", action="store_true", help="only the MatchedPortrait inpainting rows")
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.toys))
    import comfy_toys as toys

    toys.setup_comfy(args.comfyui, tempfile.mkdtemp(prefix="il_refseeds_"))
    import comfy.sample
    import torch
    from identitylock.core.faces import analyze_file, get_engine
    from identitylock.core.families import get_family
    from identitylock.core.identity import reference_from_analyses
    from identitylock.nodes.seeds import DriftSeedSearch

    faces = HERE.parent / "tests" / "fixtures" / "faces"
    identity = reference_from_analyses([analyze_file(faces / "lisa_1.jpg", get_engine("dlib"))])
    photo = torch.rand(1, args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
    import importlib

    ref_node = importlib.import_module("comfy_extras.nodes_edit_model").ReferenceLatent
    shift = importlib.import_module("comfy_extras.nodes_model_advanced")
    ok_all = True
    if args.inpaint:
        return check_inpaint(toys, identity, faces)
    for key in args.families:
        fam = get_family(key)
        toy = toys.build(key)
        t0 = time.time()
        ref = {"samples": toy.vae.encode(photo)}
        pos = toys.encode(toy.clip, "the same person, studio portrait")
        n_refs = 2 if key == "flux2" else 1
        for _ in range(n_refs):
            pos = toys._run_node(ref_node, conditioning=pos, latent=ref)[0]
        pos = toys.with_guidance(pos, fam.guidance)
        neg = toys.with_guidance(toys.encode(toy.clip, ""), fam.guidance)
        if key == "qwen_image":
            model = toys._run_node(shift.ModelSamplingAuraFlow, model=toy.model, shift=3.1)[0]
        else:
            model = toys._run_node(shift.ModelSamplingFlux, model=toy.model, max_shift=1.15, base_shift=0.5,
                                   width=args.size, height=args.size)[0]  # fmt: skip
        seen = {}
        original = comfy.sample.sample

        def spy(
            m,
            noise,
            steps,
            cfg,
            sampler,
            scheduler,
            positive,
            negative,
            *a,
            seen=seen,
            original=original,
            **kw,
        ):
            seen.update(positive=positive, model=m)
            return original(m, noise, steps, cfg, sampler, scheduler, positive, negative, *a, **kw)

        comfy.sample.sample = spy
        try:
            out = DriftSeedSearch().search(
                model, pos, neg, toy.vae, identity, seed_start=7, seed_count=1, steps=2, cfg=fam.cfg,
                sampler_name="euler", scheduler=fam.scheduler, denoise=1.0, width=args.size, height=args.size,
                threshold=0.0, stop_after=0, top_k=1, seeds_per_batch=1, save="none", results_name="",
            )["result"]  # fmt: skip
        finally:
            comfy.sample.sample = original
        empty = toys.empty_latent(key, args.size, args.size)
        import nodes  # ComfyUI's nodes.py (ComfyUI is first on sys.path)

        ks = nodes.common_ksampler(model, 7, 2, fam.cfg, "euler", fam.scheduler, pos, neg, empty)[0][
            "samples"
        ]
        diff = float((out[2]["samples"] - ks).abs().max())
        plain = toys.with_guidance(toys.encode(toy.clip, "the same person, studio portrait"), fam.guidance)
        no_ref = nodes.common_ksampler(model, 7, 2, fam.cfg, "euler", fam.scheduler, plain, neg, empty)[0][
            "samples"
        ]
        effect = float((ks - no_ref).abs().max())  # > 0: the reference latents do change what is sampled
        refs = seen["positive"][0][1].get("reference_latents", [])
        intact = seen["positive"] is pos and seen["model"] is model and len(refs) == n_refs
        ok = diff == 0.0 and intact and effect > 0
        ok_all &= ok
        print(json.dumps({"family": key, "ok": ok, "reference_latents": len(refs), "guidance":
                          seen["positive"][0][1].get("guidance"), "conditioning_intact": intact,
                          "latent": list(out[2]["samples"].shape[1:]), "ksampler_max_abs_diff": diff,
                          "reference_effect_max_abs": round(effect, 4),
                          "seconds": round(time.time() - t0, 1)}), flush=True)  # fmt: skip
    return 0 if ok_all else 1


def check_inpaint(toys, identity, faces) -> int:
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sample
    import comfy.supported_models as sm
    import numpy as np
    import torch
    from identitylock.nodes.portrait import MatchedPortrait
    from PIL import Image

    img = Image.open(faces / "lisa_2.jpg").convert("RGB")
    scene = torch.from_numpy(np.asarray(img.resize((384, 384 * img.height // img.width)), np.float32) / 255)[
        None
    ]
    name, unet = toys._unet_configs()["sd15"]
    ok_all = True
    for label, channels in (("sd15 inpainting", 9), ("sd15", 4)):
        t0 = time.time()
        config = getattr(sm, name)({**unet, "in_channels": channels})
        config.set_inference_dtype(torch.float32, None)
        base = config.get_model({})
        toys.random_init(base.diffusion_model, 0)
        model = comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                                 offload_device=mm.unet_offload_device())  # fmt: skip
        toy = toys.build("sd15")
        pos, neg = toys.encode(toy.clip, "a photo"), toys.encode(toy.clip, "")
        seen = {}
        original = comfy.sample.sample

        def spy(m, noise, steps, cfg, sampler, scheduler, positive, *a, seen=seen, original=original, **kw):
            seen.update(model=m, positive=positive, mask=kw.get("noise_mask"))
            return original(m, noise, steps, cfg, sampler, scheduler, positive, *a, **kw)

        comfy.sample.sample = spy
        try:
            res = MatchedPortrait().run(scene, model, pos, neg, toy.vae, identity, seed=3, attempts=1, denoise=0.75,
                                        steps=2, cfg=5.0, sampler_name="euler", scheduler="normal",
                                        mask_feather=0.06, work_size=256)["result"]  # fmt: skip
            error = None
        except Exception as exc:  # a failed row, never hidden
            res, error = None, f"{type(exc).__name__}: {exc}"
        finally:
            comfy.sample.sample = original
        opts = seen["positive"][0][1] if seen else {}
        concat = "concat_latent_image" in opts and "concat_mask" in opts
        dd = "denoise_mask_function" in getattr(seen.get("model"), "model_options", {})
        want = concat and not dd if channels == 9 else dd and not concat
        ok = res is not None and want and seen.get("mask") is not None
        ok_all &= ok
        print(json.dumps({"model": label, "ok": ok, "inpaint_model_concat": concat, "differential_diffusion": dd,
                          "noise_mask": seen.get("mask") is not None, "error": error,
                          "seconds": round(time.time() - t0, 1)}), flush=True)  # fmt: skip
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
