"""MatchedPortrait: re-render the scene's face as the IDENTITY, matched in pose and light, checked, composited.

Thin adapter: the loop, checks, color matching and compositing live in core/portrait. The only ComfyUI glue
is ``ComfyInpaint`` (the family's inpainting from nodes/_model.py -> sampler -> VAE decode), a class attribute
so tests can swap in a stand-in sampler.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..core.errors import IdentityLockError
from ._comfy import (
    CATEGORY,
    Progress,
    blocked,
    check_interrupted,
    image_to_numpy,
    model_folder_paths,
    numpy_to_image,
    numpy_to_mask,
    sampler_choices,
    send_status,
)
from ._model import inpaint_inputs, model_family


class ComfyInpaint:
    """Inpaint one crop with ComfyUI's sampler, with what the MODEL's family offers (``nodes/_model.py``): an
    inpaint model gets InpaintModelConditioning's concat conditioning, any other model Differential Diffusion +
    SetLatentNoiseMask; then KSampler's noise for the seed, the sampler, VAEDecode."""

    def __call__(self, model, positive, negative, vae, pixels, mask, seed: int, steps: int, cfg: float,
                 sampler_name: str, scheduler: str, denoise: float, callback=None):  # fmt: skip
        import comfy.sample  # type: ignore[import-not-found]

        model, positive, negative, latent = inpaint_inputs(model, positive, negative, vae, pixels, mask,
                                                           "MatchedPortrait")  # fmt: skip
        image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        noise = comfy.sample.prepare_noise(image, int(seed))
        samples = comfy.sample.sample(
            model, noise, steps, cfg, sampler_name, scheduler, positive, negative, image, denoise=denoise,
            noise_mask=latent.get("noise_mask"), callback=callback, disable_pbar=True, seed=int(seed),
        )  # fmt: skip
        images = vae.decode(samples)
        if images.ndim == 5:
            images = images.reshape(-1, *images.shape[-3:])
        return images


def _with_text(positive, extra):
    """The scene's pose/light text added to every entry of the user's conditioning, as ConditioningConcat does:
    each entry keeps its own options (FluxGuidance's guidance, reference latents, pooled output, areas), so the
    added words never render without them (a separate appended entry would)."""
    import torch

    add = extra[0][0]
    out = []
    for cond, opts in positive:
        if cond.shape[-1] != add.shape[-1]:
            raise IdentityLockError(
                "MatchedPortrait: the clip input is not the text encoder of the positive conditioning; connect "
                "the same CLIP (or leave clip unconnected)"
            )
        out.append([torch.cat((cond, add.to(cond)), 1), dict(opts)])
    return out


def _encode_text(clip, text: str):
    tokens = clip.tokenize(text)
    if hasattr(clip, "encode_from_tokens_scheduled"):
        return clip.encode_from_tokens_scheduled(tokens)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def _engine_for(reference):
    from ..core.faces import get_engine

    kw: dict[str, Any] = {"model_dirs": model_folder_paths("insightface")}
    if reference.backend == "insightface":
        kw["insightface_pack"] = reference.model
    return get_engine(reference.backend, **kw)


class MatchedPortrait:
    DESCRIPTION = (
        "Put the IDENTITY into a scene: finds the scene's face, crops head and shoulders, inpaints the face with "
        "your MODEL/conditioning (LoRA / IPAdapter applied upstream), checks each render (mirror: the nose must "
        "point to the same frame edge; pose tolerance; identity drift) and retries with the next seed, then "
        "color-matches and composites it back. Pixels outside the feathered mask are left untouched."
    )
    CATEGORY = f"{CATEGORY}/portrait"
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK", "STRING", "IMAGE")
    RETURN_NAMES = ("image", "portrait", "mask", "report", "passed_image")
    OUTPUT_TOOLTIPS = (
        "The scene with the re-rendered face composited in (the best attempt, passed or not: see the report).",
        "The chosen render at working size (color-matched, blended into the crop).",
        "The full-scene feathered face mask used for compositing.",
        "JSON report: scene pose, portrait pose, mirrored?, drift, attempts, face fraction, light direction.",
        "The composited scene only when an attempt passed every check (drift, pose, not mirrored). When none "
        "passed, the nodes connected here do not run (nothing is saved) and ComfyUI shows why.",
    )
    inpaint: Any = ComfyInpaint()

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = sampler_choices()
        return {
            "required": {
                "scene": (
                    "IMAGE",
                    {"tooltip": "The scene with a face to replace (first image of the batch)."},
                ),
                "model": (
                    "MODEL",
                    {"tooltip": "Your model, with the identity LoRA and/or IPAdapter applied upstream."},
                ),
                "positive": (
                    "CONDITIONING",
                    {"tooltip": "Positive prompt conditioning (describe the person)."},
                ),
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt conditioning."}),
                "vae": ("VAE", {"tooltip": "VAE used to encode the crop and decode the render."}),
                "identity": (
                    "IDENTITY",
                    {
                        "tooltip": "Identity reference from IdentityEmbed / IdentityLoad; each render's drift is checked against it."
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "tooltip": "First seed; retries use seed+1, seed+2...",
                    },
                ),
                "attempts": (
                    "INT",
                    {
                        "default": 4,
                        "min": 1,
                        "max": 64,
                        "tooltip": "Renders to try before returning the best with the failure stated.",
                    },
                ),
                "denoise": (
                    "FLOAT",
                    {
                        "default": 0.75,
                        "min": 0.05,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "How much of the masked face is re-rendered (1.0 = from noise).",
                    },
                ),
                "steps": ("INT", {"default": 25, "min": 1, "max": 200, "tooltip": "Sampler steps."}),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 6.0,
                        "min": 0.0,
                        "max": 30.0,
                        "step": 0.1,
                        "tooltip": "Classifier-free guidance scale.",
                    },
                ),
                "sampler_name": (samplers, {"tooltip": "ComfyUI sampler."}),
                "scheduler": (schedulers, {"tooltip": "ComfyUI scheduler."}),
                "mask_feather": (
                    "FLOAT",
                    {
                        "default": 0.06,
                        "min": 0.0,
                        "max": 0.5,
                        "step": 0.01,
                        "tooltip": "Feather (Gaussian sigma) as a fraction of the face width.",
                    },
                ),
            },
            "optional": {
                "work_size": (
                    "INT",
                    {
                        "default": 512,
                        "min": 256,
                        "max": 2048,
                        "step": 64,
                        "tooltip": "Working resolution of the head-and-shoulders crop (512 for SD1.5, 1024 for SDXL).",
                    },
                ),
                "yaw_tolerance": (
                    "FLOAT",
                    {
                        "default": 15.0,
                        "min": 1.0,
                        "max": 90.0,
                        "tooltip": "Maximum yaw difference (deg) between scene and render.",
                    },
                ),
                "drift_threshold": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 0.99,
                        "step": 0.005,
                        "tooltip": "Maximum identity drift; 0 = the IDENTITY's lock threshold.",
                    },
                ),
                "color_match": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "LAB mean/std match of the new face to the scene inside the mask (0 = off).",
                    },
                ),
                "seamless": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Poisson (seamless) blending before the feathered composite.",
                    },
                ),
                "face_index": (
                    "INT",
                    {
                        "default": -1,
                        "min": -1,
                        "max": 64,
                        "tooltip": "-1 = the largest face; otherwise faces counted from the frame's left edge (0 = leftmost).",
                    },
                ),
                "clip": (
                    "CLIP",
                    {
                        "tooltip": "Optional: to add extra_prompt and the scene's measured pose/light phrases to the positive conditioning."
                    },
                ),
                "extra_prompt": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Extra positive text (needs clip); the scene's pose/light fragments are appended.",
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def run(self, scene, model, positive, negative, vae, identity, seed, attempts, denoise, steps, cfg,
            sampler_name, scheduler, mask_feather, work_size=512, yaw_tolerance=15.0, drift_threshold=0.0,
            color_match=1.0, seamless=False, face_index=-1, clip=None, extra_prompt="", unique_id=None):  # fmt: skip
        import torch

        from ..core.identity import IdentityReference
        from ..core.portrait.pipeline import PortraitSettings, matched_portrait
        from ..core.portrait.scene import analyze_scene

        if not isinstance(identity, IdentityReference):
            raise IdentityLockError(
                "MatchedPortrait needs an IDENTITY (connect IdentityEmbed or IdentityLoad)"
            )
        family = model_family(model, "MatchedPortrait")  # one sentence for a MODEL it cannot inpaint with
        image = image_to_numpy(scene, "scene")[0]
        engine = _engine_for(identity)
        settings = PortraitSettings(
            seed=int(seed),
            attempts=int(attempts),
            work_size=int(work_size) // family.latent_downscale * family.latent_downscale,
            mask_feather=float(mask_feather),
            yaw_tolerance=float(yaw_tolerance),
            drift_threshold=None if drift_threshold == 0 else float(drift_threshold),  # NaN is refused
            color_match=float(color_match),
            seamless=bool(seamless),
            face_index=None if face_index < 0 else int(face_index),
        )
        analysis = analyze_scene(image, engine, face_index=settings.face_index)
        if clip is not None:
            text = ", ".join([t for t in [extra_prompt.strip()] if t] + analysis.face.prompt_fragments())
            positive = _with_text(positive, _encode_text(clip, text))

        # One bar over every sampler step of every attempt (an attempt takes minutes on CPU); each finished
        # attempt shows its render as the preview.
        steps = int(steps)
        total = settings.attempts * steps
        progress = Progress(total)
        sampler = self.inpaint
        last: dict[str, Any] = {}

        def inpaint(crop: np.ndarray, mask: np.ndarray, s: int) -> np.ndarray:
            check_interrupted()
            base = (s - settings.seed) * steps

            def on_step(step: int, x0=None, x=None, total_steps: int = steps) -> None:
                done = base + min(steps, max(1, round((step + 1) * steps / max(1, int(total_steps)))))
                progress(done, total)

            pixels = numpy_to_image([crop])
            m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
            out = sampler(model, positive, negative, vae, pixels, m, s, steps, cfg, sampler_name, scheduler,
                          denoise, callback=on_step)  # fmt: skip
            last["render"] = image_to_numpy(out, "render")[0]
            return last["render"]

        def on_progress(done: int, attempts_total: int) -> None:
            progress(done * steps, attempts_total * steps, last.get("render"))

        res = matched_portrait(image, inpaint, identity, engine=engine, settings=settings, analysis=analysis,
                               progress=on_progress)  # fmt: skip
        rep = res.report
        send_status("portrait", _status(rep), unique_id)
        text = json.dumps(rep, indent=1, default=_json_default)
        final = numpy_to_image([res.image])
        passed = (
            final
            if res.passed
            else blocked(
                f"MatchedPortrait: no attempt passed ({rep['failure']}); the best attempt is on the 'image' "
                "output. Try more attempts, another seed, a higher yaw tolerance or a stronger identity LoRA"
            )
        )
        return {
            "ui": {"text": [_summary(rep)]},
            "result": (final, numpy_to_image([res.portrait]), numpy_to_mask([res.mask]), text, passed),
        }


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _status(rep: dict) -> dict:
    """The message for the web readout (web/lib/logic.js portraitLines)."""
    scene = rep["scene"]["face"]
    return {
        "view": f"{scene['view']} · key light {rep['light_direction']}",
        "reference": {"yaw": rep["scene_pose"]["yaw"], "pitch": rep["scene_pose"]["pitch"]},
        "result": {
            "yaw": rep["portrait_pose"]["yaw"],
            "pitch": rep["portrait_pose"]["pitch"],
            "face_ratio": rep["face_fraction"],
        },
        "drift": rep["drift"],
        "locked": bool(rep["passed"]),
        "mirrored": bool(rep["mirrored"]),
        "warning": rep["failure"] or (rep["warnings"][0] if rep["warnings"] else None),
    }


def _summary(rep: dict) -> str:
    status = "passed" if rep["passed"] else f"NOT passed: {rep['failure']}"
    drift = "n/a" if rep["drift"] is None else f"{rep['drift']:.4f}"
    yaw = rep["portrait_pose"]["yaw"]
    render = "no face in the render" if yaw is None else f"render yaw {yaw:+.0f}"
    return (
        f"{status}\nseed {rep['chosen_seed']} ({rep['attempts_used']}/{rep['attempts_allowed']} attempts), "
        f"drift {drift}, scene yaw {rep['scene_pose']['yaw']:+.0f} -> {render}, light {rep['light_direction']}, "
        f"face {rep['face_fraction']:.0%} of width"
    )


NODE_CLASS_MAPPINGS = {"MatchedPortrait": MatchedPortrait}
NODE_DISPLAY_NAME_MAPPINGS = {"MatchedPortrait": "Matched Portrait (IdentityLock)"}
