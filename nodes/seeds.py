"""DriftSeedSearch: sample many seeds through ComfyUI's own sampler and keep the ones that stay the person.

Sampling goes through ``comfy.sample.sample`` exactly as KSampler does (same noise per seed), so LoRA / IPAdapter
nodes upstream of MODEL simply apply. The empty latent is the MODEL family's (channels from its latent format,
downscale from ``core/families.py``: see ``nodes/_model.py``); the MODEL and the CONDITIONING (FluxGuidance,
ModelSampling shifts, ReferenceLatent / Qwen-Image-Edit reference latents) reach the sampler untouched. Seeds are sampled ``seeds_per_batch`` at a time, each with its own noise,
so a seed gives the same image as KSampler with that seed. The search itself (scoring, ranking, early stop,
misses, saving) is ``core.seeds.search_seeds``; this module only converts tensors and talks to ComfyUI.
``DriftSeedSearch.sampling`` is the one ComfyUI-bound object, replaceable in tests.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ._comfy import (
    CATEGORY,
    Progress,
    blocked,
    check_interrupted,
    image_to_numpy,
    model_folder_paths,
    numpy_to_image,
    output_directory,
    sampler_choices,
    send_status,
)
from ._model import start_latent


class ComfySampling:
    """KSampler-equivalent sampling of several seeds in one batch, and VAE decoding."""

    def sample(self, model, seeds: list[int], latent: dict, positive, negative, steps: int, cfg: float,
               sampler_name: str, scheduler: str, denoise: float, sigmas=None):  # fmt: skip
        import comfy.sample  # type: ignore[import-not-found]
        import torch

        base = comfy.sample.fix_empty_latent_channels(model, latent["samples"][:1])
        noise = torch.cat([comfy.sample.prepare_noise(base, int(s)) for s in seeds], dim=0)
        batch = base.repeat(len(seeds), *([1] * (base.ndim - 1)))
        mask = latent.get("noise_mask")
        return comfy.sample.sample(
            model, noise, steps, cfg, sampler_name, scheduler, positive, negative, batch, denoise=denoise,
            noise_mask=mask, disable_pbar=True, seed=int(seeds[0]), sigmas=sigmas,
        )  # fmt: skip

    def decode(self, vae, samples):
        images = vae.decode(samples)
        if images.ndim == 5:  # video VAEs: frames into the batch
            images = images.reshape(-1, *images.shape[-3:])
        return images


def _engine_for(reference):
    from ..core.faces import get_engine

    kw: dict[str, Any] = {"model_dirs": model_folder_paths("insightface")}
    if reference.backend == "insightface":
        kw["insightface_pack"] = reference.model
    return get_engine(reference.backend, **kw)


def _interrupt_types() -> tuple[type[BaseException], ...]:
    """ComfyUI's cancel exception: never recorded as one seed's failure (the flag it clears would be lost)."""
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return ()
    return (mm.InterruptProcessingException,)


def _free_memory() -> None:
    """After an out-of-memory error: give cached GPU memory back before the smaller batch."""
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return
    mm.soft_empty_cache()


def _fingerprint(*values: Any) -> str:
    """A short hash of the conditioning and start latent, so resume refuses a results file of another prompt."""
    import hashlib

    import torch

    h = hashlib.sha256()

    def walk(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            t = v.detach().to("cpu", torch.float32).contiguous()
            h.update(repr(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        elif isinstance(v, dict):
            for k in sorted(v, key=str):
                h.update(str(k).encode())
                walk(v[k])
        elif isinstance(v, (list, tuple)):
            h.update(b"[")
            for x in v:
                walk(x)
            h.update(b"]")
        elif v is None or isinstance(v, (bool, int, float, str)):
            h.update(repr(v).encode())
        else:
            h.update(type(v).__name__.encode())

    for v in values:
        walk(v)
    return h.hexdigest()[:16]


def _seed_json(seed: int) -> int | str:
    return seed if seed < 2**53 else str(seed)


class DriftSeedSearch:
    sampling: Any = ComfySampling()

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = sampler_choices()
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model to sample with (LoRA / IPAdapter nodes upstream apply)."}),
                "positive": ("CONDITIONING", {"tooltip": "Prompt conditioning (include the LoRA trigger word)."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt conditioning."}),
                "vae": ("VAE", {"tooltip": "VAE used to decode each candidate for face scoring."}),
                "identity": ("IDENTITY", {"tooltip": "Reference identity (from IdentityEmbed) to measure drift against."}),
                "seed_start": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                       "tooltip": "First seed of the range searched (ignored when seed_list is set)."}),
                "seed_count": ("INT", {"default": 16, "min": 1, "max": 4096,
                                       "tooltip": "How many consecutive seeds to try."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Sampling steps per seed."}),
                "cfg": ("FLOAT", {"default": 5.8, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance (5.8 = the identity-lock pass)."}),
                "sampler_name": (samplers, {"tooltip": "ComfyUI sampler."}),
                "scheduler": (schedulers, {"tooltip": "ComfyUI scheduler."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "Denoise; below 1 needs a LATENT input (img2img)."}),
                "width": ("INT", {"default": 512, "min": 64, "max": 8192, "step": 8,
                                  "tooltip": "Width of the empty latent when no LATENT is connected."}),
                "height": ("INT", {"default": 512, "min": 64, "max": 8192, "step": 8,
                                   "tooltip": "Height of the empty latent when no LATENT is connected."}),
                "threshold": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.99, "step": 0.005,
                                        "tooltip": "Lock threshold on drift; 0 = the backend default "
                                                   "(insightface 0.18, dlib 0.06)."}),
                "stop_after": ("INT", {"default": 0, "min": 0, "max": 4096,
                                       "tooltip": "Stop after this many locked seeds (0 = try every seed)."}),
                "top_k": ("INT", {"default": 8, "min": 1, "max": 4096,
                                  "tooltip": "How many best candidates the report and candidates output keep."}),
                "seeds_per_batch": ("INT", {"default": 1, "min": 1, "max": 64,
                                            "tooltip": "Seeds sampled together in one batch (faster when memory "
                                                       "allows; each seed keeps its own noise)."}),
                "save": (["none", "locked", "top", "all"], {"default": "none",
                         "tooltip": "Save verify_seed_<seed>_drift_<d>.png (record in PNG metadata) into "
                                    "output/identitylock/seeds/."}),
            },
            "optional": {
                "latent": ("LATENT", {"tooltip": "Start latent (first item used); overrides width/height. Without "
                                                 "it, the empty latent of the MODEL's family (SD 4 ch /8, FLUX.1 / "
                                                 "SD3 / Z-Image / Qwen-Image 16 ch /8, Flux.2 128 ch /16)."}),
                "seed_list": ("STRING", {"default": "", "multiline": False,
                                         "tooltip": "Explicit seeds: '5,17,42' or 'start:end'. Overrides the range."}),
                "resume": ("BOOLEAN", {"default": False,
                                       "tooltip": "Skip the seeds already in the results file (a search that was "
                                                  "cancelled or crashed goes on where it stopped; same settings "
                                                  "only)."}),
                "results_name": ("STRING", {"default": "seed_search",
                                            "tooltip": "Results file output/identitylock/seeds/<name>.jsonl, "
                                                       "written one seed at a time (empty = none)."}),
                "sigmas": ("SIGMAS", {"tooltip": "A scheduler's sigmas (Flux2Scheduler, BasicScheduler, ...): "
                                                 "they replace steps / scheduler / denoise, as in SamplerCustom. "
                                                 "Same noise per seed as KSampler."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }  # fmt: skip

    RETURN_TYPES = ("IMAGE", "INT", "LATENT", "IMAGE", "STRING", "IMAGE")
    RETURN_NAMES = ("best_image", "best_seed", "best_latent", "candidates", "report", "locked_images")
    OUTPUT_TOOLTIPS = (
        "The render with the lowest drift (locked or not: see the report).",
        "Its seed (use it in KSampler).",
        "Its sampled latent (for a second pass).",
        "The top-k renders sorted by drift (misses last).",
        "JSON report: every seed's drift, locked, face count, face found / rescued, pose, detector score.",
        "Only the locked renders (exactly one face, drift <= threshold), best first. When none locked, the "
        "nodes connected here do not run (nothing is saved) and ComfyUI shows why.",
    )
    FUNCTION = "search"
    CATEGORY = f"{CATEGORY}/seeds"
    OUTPUT_NODE = True
    DESCRIPTION = (
        "Samples many seeds with ComfyUI's sampler, measures each render's identity drift from the reference and "
        "keeps the seeds that stay the person (locked: drift <= threshold). Renders without a face rank last."
    )

    def search(self, model, positive, negative, vae, identity, seed_start, seed_count, steps, cfg, sampler_name,
               scheduler, denoise, width, height, threshold, stop_after, top_k, seeds_per_batch, save,
               latent=None, seed_list="", resume=False, results_name="seed_search", sigmas=None,
               unique_id=None):  # fmt: skip

        from ..core.errors import IdentityLockError
        from ..core.identity import IdentityReference
        from ..core.seed_inputs import parse_seeds, seed_range
        from ..core.seeds import search_seeds

        if not isinstance(identity, IdentityReference):
            raise IdentityLockError("identity: connect an IDENTITY output (IdentityEmbed) to DriftSeedSearch")
        seeds = (
            parse_seeds(seed_list) if seed_list and seed_list.strip() else seed_range(seed_start, seed_count)
        )
        if latent is None and denoise < 1.0:
            raise IdentityLockError("denoise below 1.0 needs a LATENT input (an encoded image to start from)")
        latent = start_latent(
            model, vae, width, height, latent, "DriftSeedSearch"
        )  # the model family's latent
        engine = _engine_for(identity)
        latents: dict[int, Any] = {}
        custom = {} if sigmas is None else {"sigmas": sigmas}  # a scheduler's sigmas, when connected

        def render_batch(chunk: list[int]) -> list[np.ndarray]:
            samples = self.sampling.sample(model, chunk, latent, positive, negative, steps, cfg, sampler_name,
                                           scheduler, denoise, **custom)  # fmt: skip
            images = self.sampling.decode(vae, samples)
            for i, s in enumerate(chunk):
                latents[s] = samples[i : i + 1].detach().cpu()
            return image_to_numpy(images, name="decoded candidates")

        progress = Progress(len(seeds))
        send_status("seed", {"event": "start", "total": len(seeds)}, unique_id)

        def on_result(rec, image, done, total):
            send_status(
                "seed",
                {"seed": _seed_json(rec.seed), "drift": None if rec.drift is None else round(rec.drift, 5),
                 "locked": rec.locked, "face": rec.found, "faces": rec.faces, "rank": None, "done": done,
                 "total": total,
                 "error": rec.error},
                unique_id,
            )  # fmt: skip
            progress.update(1, preview=image)

        seeds_dir = os.path.join(output_directory(), "identitylock", "seeds")
        out_dir = seeds_dir if save != "none" else None
        results = None
        if results_name and results_name.strip():  # the folder is checked by search_seeds, after the inputs
            from ..core.fileio import confined_path

            results = confined_path(seeds_dir, results_name.strip() + ".jsonl", "results_name")
        elif resume:
            raise IdentityLockError("resume needs a results_name (the results file of the search to resume)")
        params = {
            "steps": steps, "cfg": cfg, "sampler": sampler_name, "scheduler": scheduler, "denoise": denoise,
            "size": list(latent["samples"].shape[-2:]), "conditioning": _fingerprint(positive, negative, latent),
        }  # fmt: skip
        if sigmas is not None:  # part of the settings a resumed search must share
            params["sigmas"] = [round(float(v), 6) for v in sigmas.flatten().tolist()]
        result = search_seeds(
            None, seeds, identity, engine=engine, threshold=threshold or None, stop_after=stop_after or None,
            top_k=top_k, batch_size=seeds_per_batch, render_batch=render_batch, keep_images="top", save=save,
            out_dir=out_dir, extra=params, on_result=on_result, check_cancel=check_interrupted, results=results,
            resume=bool(resume), fatal=_interrupt_types(), on_oom=_free_memory, on_drop=lambda s: latents.pop(s, None),
        )  # fmt: skip
        for r in result.records:  # final ranks for the results table
            send_status(
                "seed",
                {"seed": _seed_json(r.seed), "drift": None if r.drift is None else round(r.drift, 5),
                 "locked": r.locked, "face": r.found, "rank": r.rank},
                unique_id,
            )  # fmt: skip
        top = [r for r in result.top if r.seed in result.images]
        # the best seed whose render is at hand (a resumed seed whose render could not be made again is skipped)
        best = next((r for r in result.records if r.seed in result.images and r.seed in latents), None)
        if best is None:
            raise IdentityLockError("no seed produced a decodable image; check the VAE and model")
        best_img = result.images[best.seed]
        best_latent = dict(latent)
        best_latent.pop("noise_mask", None)
        best_latent.pop("batch_index", None)
        best_latent["samples"] = latents[best.seed]
        candidates = numpy_to_image([result.images[r.seed] for r in top])
        report = result.to_json()
        summary = (
            f"best seed {best.seed}: "
            + (f"drift {best.drift:.4f}" if best.drift is not None else "no face")
            + f"; {len(result.locked)} locked of {len(result.records)}"
        )
        locked = [result.images[r.seed] for r in result.locked if r.seed in result.images]
        reason = result.no_lock_reason()
        if reason:
            summary += "\n" + reason
        locked_out = numpy_to_image(locked) if locked else blocked(reason or "no locked render was kept")
        return {
            "ui": {"text": [summary], "seeds": [json.loads(report)["records"]]},
            "result": (
                numpy_to_image([best_img]),
                int(best.seed),
                best_latent,
                candidates,
                report,
                locked_out,
            ),
        }


NODE_CLASS_MAPPINGS = {"DriftSeedSearch": DriftSeedSearch}
NODE_DISPLAY_NAME_MAPPINGS = {"DriftSeedSearch": "Drift Seed Search (IdentityLock)"}
