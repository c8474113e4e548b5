"""Inpainting with diffusers for the matched portrait outside ComfyUI (the CLI's ``portrait`` command).

Inside ComfyUI the node inpaints with the user's MODEL/VAE; this is the standalone equivalent, built on a
loaded diffusers pipeline (core.diffusion). Heavy imports stay inside the methods.
"""

from __future__ import annotations

import math


class DiffusersInpainter:
    """``inpaint(crop, mask, seed)`` over diffusers' StableDiffusionInpaintPipeline built from a loaded pipe.

    A regular (4-channel) SD UNet works too: diffusers then blends the known latents outside the mask at every
    step, which is the same noise-mask inpainting ComfyUI's sampler does.
    """

    def __init__(self, pipe, prompt: str, negative: str = "", *, steps: int = 25, cfg: float = 6.0,
                 denoise: float = 0.75, lora: str | None = None, lora_scale: float = 1.0):  # fmt: skip
        from diffusers import StableDiffusionInpaintPipeline

        from ..diffusion import DiffusersRenderer

        self.renderer = DiffusersRenderer(pipe, lora=lora)
        self.renderer.set_lora_scale(lora_scale)
        comps = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
        self.pipe = StableDiffusionInpaintPipeline(**comps, requires_safety_checker=False)
        self.pipe.set_progress_bar_config(disable=True)
        self.prompt, self.negative = prompt, negative
        self.steps, self.cfg, self.denoise = steps, cfg, denoise

    def __call__(self, crop, mask, seed: int):
        import numpy as np
        import torch
        from PIL import Image

        size = crop.shape[0]
        gen = torch.Generator(device="cpu").manual_seed(int(seed) % (2**63))
        with torch.inference_mode():
            out = self.pipe(
                prompt=self.prompt,
                negative_prompt=self.negative or None,
                image=Image.fromarray(crop),
                mask_image=Image.fromarray((np.clip(mask, 0, 1) * 255).astype(np.uint8)),
                height=size,
                width=size,
                strength=float(self.denoise),
                # diffusers runs steps * strength steps; keep at least one
                num_inference_steps=max(int(self.steps), math.ceil(1.0 / max(self.denoise, 1e-3))),
                guidance_scale=float(self.cfg),
                generator=gen,
                output_type="np",
            )
        return (np.clip(out.images[0], 0, 1) * 255 + 0.5).astype(np.uint8)
