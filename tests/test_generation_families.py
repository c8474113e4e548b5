"""nodes/_model.py: what the generation nodes read from a ComfyUI MODEL (family, latent, inpainting path).

ComfyUI cannot run in CI: the MODEL / VAE here are the LABELLED STAND-INS of tests/comfy_standins.py, and
ComfyUI's own InpaintModelConditioning / DifferentialDiffusion nodes are replaced by labelled stand-ins that
record how they were called. scripts/check_generation_families.py runs the real ones in a real ComfyUI 0.8.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfy_standins import StandInModel, StandInVAE, standin_family  # noqa: E402


def test_families_know_their_latent_downscale():
    from identitylock.core.families import FAMILIES

    assert {k for k, f in FAMILIES.items() if f.latent_downscale != 8} == {"flux2"}
    assert FAMILIES["flux2"].latent_downscale == 16


def test_inpaint_models_are_recognised():
    from identitylock.nodes._model import is_inpaint_model

    assert is_inpaint_model(StandInModel("SD15", 4, concat_keys=("mask", "masked_image")))  # SD1.5 inpainting
    assert is_inpaint_model(StandInModel("SDXL", 4, concat_keys=("mask", "masked_image")))
    assert is_inpaint_model(StandInModel("FluxInpaint", 16))  # FLUX.1 Fill
    for name, ch in (("SD15", 4), ("Flux", 16), ("Flux2", 128), ("QwenImage", 16), ("ZImage", 16)):
        assert not is_inpaint_model(StandInModel(name, ch))


class _StandInInpaintModelConditioning:
    """STAND-IN for ComfyUI's InpaintModelConditioning node (records its call)."""

    calls: list = []

    def encode(self, positive, negative, pixels, vae, mask, noise_mask=True):
        self.calls.append(noise_mask)
        pos = [[c, {**o, "concat_latent_image": "enc", "concat_mask": mask}] for c, o in positive]
        return pos, negative, {"samples": torch.zeros(1, 4, 8, 8), "noise_mask": mask}


class _StandInDifferentialDiffusion:
    """STAND-IN for ComfyUI's DifferentialDiffusion node (V3): returns a patched copy of the model."""

    @classmethod
    def execute(cls, model, strength=1.0):
        patched = StandInModel(
            model.config_name, model.channels, model_options={"denoise_mask_function": "dd"}
        )
        return type("NodeOutput", (), {"result": (patched,)})()


class _StandInVAEEncode(StandInVAE):
    def encode(self, pixels):
        return torch.zeros(1, self.latent_channels, pixels.shape[1] // 8, pixels.shape[2] // 8)


@pytest.fixture()
def comfy_nodes(monkeypatch):
    from identitylock.nodes import _model

    table = {"InpaintModelConditioning": _StandInInpaintModelConditioning,
             "DifferentialDiffusion": _StandInDifferentialDiffusion}  # fmt: skip
    monkeypatch.setattr(_model, "_comfy_node", lambda module, name: table[name])
    _StandInInpaintModelConditioning.calls = []
    return _model


def test_inpainting_uses_what_the_family_offers(comfy_nodes):
    """Issue 14: MatchedPortrait inpainted every model like SD1.5 (noise mask only, no concat conditioning)."""
    pixels, mask = torch.rand(1, 64, 64, 3), torch.ones(1, 64, 64)
    positive = [[torch.ones(1, 3, 8), {"guidance": 3.5}]]

    # an inpaint model (FLUX.1 Fill): InpaintModelConditioning's concat conditioning, the model untouched
    fill = StandInModel("FluxInpaint", 16)
    m, pos, _, latent = comfy_nodes.inpaint_inputs(fill, positive, [], StandInVAE(16, 8), pixels, mask, "X")
    assert m is fill and _StandInInpaintModelConditioning.calls == [True]
    assert pos[0][1]["guidance"] == 3.5 and "concat_latent_image" in pos[0][1] and "noise_mask" in latent

    # any other model (Qwen-Image here): differential diffusion + the noise mask, conditioning untouched
    qwen, _ = standin_family("qwen_image")
    m, pos, _, latent = comfy_nodes.inpaint_inputs(
        qwen, positive, [], _StandInVAEEncode(16, 8), pixels, mask, "X"
    )
    assert m is not qwen and m.model_options["denoise_mask_function"] == "dd" and pos is positive
    assert tuple(latent["noise_mask"].shape) == (1, 1, 64, 64) and latent["samples"].shape[1] == 16

    # a MODEL that already carries the user's DifferentialDiffusion patch keeps it
    own = StandInModel("Flux", 16, model_options={"denoise_mask_function": "user's"})
    m, *_ = comfy_nodes.inpaint_inputs(own, positive, [], _StandInVAEEncode(16, 8), pixels, mask, "X")
    assert m is own


def test_a_vae_of_another_family_is_refused(comfy_nodes):
    from identitylock.core.errors import IdentityLockError

    sdxl, _ = standin_family("sdxl")
    with pytest.raises(IdentityLockError, match=r"VAE works on 16 channels at 1/8 but this SDXL MODEL on 4"):
        comfy_nodes.inpaint_inputs(sdxl, [], [], _StandInVAEEncode(16, 8), torch.rand(1, 64, 64, 3),
                                   torch.ones(1, 64, 64), "MatchedPortrait")  # fmt: skip
