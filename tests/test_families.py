"""The family table (core/families.py) and the one ComfyUI training mechanism on every family.

CI cannot run ComfyUI, so the model-sampling objects below are STAND-INS that reproduce the formulas of
ComfyUI 0.8's comfy/model_sampling.py (EPS + ModelSamplingDiscrete for SD1.x/SDXL; CONST + ModelSamplingFlux or
ModelSamplingDiscreteFlow with each family's shift for the flow models). The real classes are exercised by
``scripts/check_families.py --comfyui PATH`` in a real ComfyUI 0.8.

The objective test computes each family's loss by hand from the raw network output (epsilon vs noise for SD,
velocity vs noise - x0 for flow models, at the family's timestep draw) and compares it with the loss the
Trainer records for its first step.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from identitylock.core.errors import IdentityLockError
from identitylock.core.families import (
    FAMILIES,
    MAIN_FAMILIES,
    SCOPES,
    family_of_comfy_model,
    get_family,
    timestep_fraction,
)
from identitylock.core.training.comfy_backend import (
    CaptionConds,
    protect_from_inplace_residuals,
    sigma_backend,
)
from identitylock.core.training.network import LoRANetwork
from identitylock.core.training.phases import Phase, Schedule
from identitylock.core.training.presets import PRESETS, TrainConfig
from identitylock.core.training.records import TrainData
from identitylock.core.training.trainer import Trainer


def test_every_family_row_is_complete():
    assert set(MAIN_FAMILIES) <= set(FAMILIES)
    for fam in FAMILIES.values():
        assert set(fam.targets) == set(SCOPES) and all(fam.targets[s] for s in SCOPES)
        assert set(fam.targets["attn"]) < set(fam.targets["attn_ff"])
        assert fam.timesteps in ("uniform", "logit_normal") and fam.resolution % 64 == 0
        assert fam.default_preset in PRESETS and fam.modelspec.endswith("/lora") and fam.params_b > 0
        assert fam.comfy_configs and fam.diffusers_pipeline
    # SD trains on uniform timesteps, every flow model on logit-normal ones (as kohya / ai-toolkit / musubi)
    assert {k for k, f in FAMILIES.items() if f.timesteps == "uniform"} == {"sd15", "sdxl"}
    # the large models default to a preset and checkpointing that fit a 24 GB card
    for key in ("flux1", "flux2", "qwen_image", "zimage"):
        assert PRESETS[FAMILIES[key].default_preset].rank <= 16 and FAMILIES[key].gradient_checkpointing


def _comfy_model(config_name: str):
    """A ComfyUI-shaped MODEL whose model_config class has ComfyUI's supported_models class name."""
    config = type(config_name, (), {})()
    base = type("BaseModel", (), {})()
    base.model_config = config
    return type("ModelPatcher", (), {"model": base})()


@pytest.mark.parametrize(
    "config, key",
    [("SD15", "sd15"), ("SDXL", "sdxl"), ("Flux", "flux1"), ("FluxSchnell", "flux1"), ("Flux2", "flux2"),
     ("ZImage", "zimage"), ("QwenImage", "qwen_image"), ("SD3", "sd3"), ("Chroma", "chroma"),
     ("Lumina2", "lumina2")],
)  # fmt: skip
def test_a_comfy_model_is_matched_by_its_supported_models_class(config, key):
    assert family_of_comfy_model(_comfy_model(config)).key == key


def test_an_unsupported_model_gets_one_sentence_naming_the_families():
    with pytest.raises(IdentityLockError) as err:
        family_of_comfy_model(_comfy_model("WAN21_T2V"))
    msg = str(err.value)
    assert "WAN21_T2V" in msg and "\n" not in msg
    assert all(FAMILIES[k].label in msg for k in MAIN_FAMILIES)
    with pytest.raises(IdentityLockError, match="unknown model family"):
        get_family("sd2")
    assert get_family("Qwen-Image").key == "qwen_image" and get_family("FLUX1").key == "flux1"


def test_timestep_draws_uniform_for_sd_logit_normal_for_flow():
    u = torch.linspace(0.001, 0.999, 2001)
    sd = timestep_fraction(get_family("sd15"), u)
    assert torch.allclose(sd, u)
    flow = timestep_fraction(get_family("flux1"), u)
    # logit-normal: the median stays at 0.5, the middle is denser than uniform, the ends are thin
    assert abs(float(flow[1000]) - 0.5) < 1e-6
    assert float(flow[500]) > 0.25 and float(flow[1500]) < 0.75
    assert bool((flow[1:] >= flow[:-1]).all()) and float(flow.min()) > 0 and float(flow.max()) < 1


# -- ComfyUI model_sampling stand-ins (formulas of comfy/model_sampling.py) ----------------------------------
class EpsDiscrete:
    """EPS + ModelSamplingDiscrete (SD's scaled-linear betas, 1000 steps)."""

    def __init__(self):
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        alphas = torch.cumprod(1 - betas, 0)
        self.sigmas = (((1 - alphas) / alphas) ** 0.5).float()
        self.log_sigmas = self.sigmas.log()

    def sigma(self, t):
        t = torch.clamp(t.float(), 0, 999)
        lo, hi = t.floor().long(), t.ceil().long()
        w = t.frac()
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp()

    def timestep(self, sigma):
        return (sigma.log()[:, None] - self.log_sigmas[None]).abs().argmin(dim=1).float()

    def percent_to_sigma(self, percent):
        if percent <= 0:
            return 999999999.9
        if percent >= 1:
            return 0.0
        return self.sigma(torch.tensor(999.0 * (1.0 - percent))).item()

    def calculate_input(self, sigma, x):
        return x / (sigma.view(-1, 1, 1, 1) ** 2 + 1.0) ** 0.5

    def calculate_denoised(self, sigma, out, x):
        return x - out * sigma.view(-1, 1, 1, 1)

    def noise_scaling(self, sigma, noise, latent, max_denoise=False):
        return latent + noise * sigma.view(-1, 1, 1, 1)

    def hand_target(self, noise, x0):
        return noise


class ConstFlow:
    """CONST + ModelSamplingDiscreteFlow (shift) or ModelSamplingFlux (flux_time_shift(mu = shift))."""

    def __init__(self, shift, flux):
        self.shift, self.flux = shift, flux

    def percent_to_sigma(self, percent):
        if percent <= 0:
            return 1.0
        if percent >= 1:
            return 0.0
        t = 1.0 - percent
        if self.flux:
            return math.exp(self.shift) / (math.exp(self.shift) + (1 / t - 1))
        return self.shift * t / (1 + (self.shift - 1) * t)

    def timestep(self, sigma):
        return sigma if self.flux else sigma * 1000

    def calculate_input(self, sigma, x):
        return x

    def calculate_denoised(self, sigma, out, x):
        return x - out * sigma.view(-1, 1, 1, 1)

    def noise_scaling(self, sigma, noise, latent, max_denoise=False):
        s = sigma.view(-1, 1, 1, 1)
        return s * noise + (1.0 - s) * latent

    def hand_target(self, noise, x0):
        return noise - x0


SAMPLING = {  # what ComfyUI 0.8 builds for each family (model_base.model_sampling + sampling_settings)
    "sd15": lambda: EpsDiscrete(),
    "sdxl": lambda: EpsDiscrete(),
    "flux1": lambda: ConstFlow(1.15, flux=True),
    "flux2": lambda: ConstFlow(2.02, flux=True),
    "chroma": lambda: ConstFlow(1.15, flux=True),
    "qwen_image": lambda: ConstFlow(1.15, flux=True),
    "zimage": lambda: ConstFlow(3.0, flux=False),
    "sd3": lambda: ConstFlow(3.0, flux=False),
    "lumina2": lambda: ConstFlow(6.0, flux=False),
}


class TinyDenoiser(torch.nn.Module):
    """Raw network output from (input, timestep, context): one Linear over channels named like an attention
    projection, so the LoRA attaches to it."""

    def __init__(self, channels, ctx_dim):
        super().__init__()
        self.to_q = torch.nn.Linear(channels, channels)
        self.ctx = torch.nn.Linear(ctx_dim, channels)

    def forward(self, x, t, context):
        h = self.to_q(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        c = self.ctx(context.mean(dim=1))[:, :, None, None]
        return h + c * (1 + torch.tanh(t.float() / 1000)).view(-1, 1, 1, 1)


class Cond:  # stand-in for comfy.conds.CONDRegular
    def __init__(self, cond):
        self.cond = cond

    def process_cond(self, batch_size, **kwargs):
        return Cond(self.cond.repeat(batch_size, 1, 1))

    def concat(self, others):
        return torch.cat([self.cond] + [o.cond for o in others])


@pytest.mark.parametrize("key", list(FAMILIES))
def test_trainer_loss_is_the_family_objective_computed_by_hand(key):
    family = get_family(key)
    ms = SAMPLING[key]()
    torch.manual_seed(0)
    channels = 16 if key not in ("sd15", "sdxl") else 4
    net = TinyDenoiser(channels, 8)
    net.requires_grad_(False)

    class Model:  # BaseModel.apply_model: denoised x0 from the raw output, through model_sampling
        manual_cast_dtype = None

        def apply_model(self, x, sigma, c_crossattn):
            raw = net(ms.calculate_input(sigma, x), ms.timestep(sigma), c_crossattn)
            return ms.calculate_denoised(sigma, raw, x)

    mp = type("MP", (), {"model": Model(), "model_dtype": lambda self: torch.float32,
                         "get_model_object": lambda self, name: ms})()  # fmt: skip
    contexts = {c: torch.randn(1, 5 + i, 8) for i, c in enumerate(["a photo of sks", "sks smiling"])}
    conds = CaptionConds(lambda caption: {"c_crossattn": Cond(contexts[caption])})
    latents = torch.randn(6, channels, 4, 4)
    data = TrainData(latents=latents, cond=conds.index(["a photo of sks", "sks smiling"] * 3),
                     val_latents=latents[:2], val_cond=conds.index(["a photo of sks", "sks smiling"]))  # fmt: skip
    cfg = TrainConfig(rank=2, alpha=2, batch_size=3, seed=11,
                      schedule=Schedule([Phase("ONLY", lr=1e-3, alpha=2, loss="mse", optimizer="adamw",
                                                min_steps=1, max_steps=1)]))  # fmt: skip
    lora = LoRANetwork(2, 2, seed=0)
    lora.attach_hooks(net, ["to_q"])
    try:
        trainer = Trainer(lora, sigma_backend(mp, "cpu", conds, family), data, cfg)
        # the trainer's own draws for step 0 (same generator and order as Trainer._train_step)
        g = torch.Generator().manual_seed(trainer._step_seed(0))
        idx = torch.randint(0, latents.shape[0], (3,), generator=g)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=g)
        u = torch.rand(3, generator=g)
        frac = timestep_fraction(family, u)
        sigma = torch.tensor([ms.percent_to_sigma(1.0 - float(f)) for f in frac])
        with torch.no_grad():
            xt = ms.noise_scaling(sigma, noise, x0)
            ctx = [contexts[conds.captions[int(i)]] for i in data.cond[idx]]
            raw = torch.cat([net(ms.calculate_input(sigma[j : j + 1], xt[j : j + 1]),
                                 ms.timestep(sigma[j : j + 1]), ctx[j]) for j in range(3)])  # fmt: skip
            by_hand = float(F.mse_loss(raw, ms.hand_target(noise, x0)))
        result = trainer.run()
    finally:
        lora.detach_hooks()
    assert result.losses[0] == pytest.approx(by_hand, rel=1e-4, abs=1e-6)
    if family.timesteps == "logit_normal":
        assert not torch.allclose(frac, u)  # the draw really went through the family's distribution


def test_inplace_residual_blocks_train_with_protection_and_give_the_same_gradients():
    """ComfyUI's FLUX/SD3/Qwen blocks do ``x += f(norm(x))``: without protection autograd refuses the backward
    pass; with it the gradients equal those of the out-of-place block."""

    class Block(torch.nn.Module):
        def __init__(self, inplace):
            super().__init__()
            self.norm, self.proj, self.inplace = torch.nn.LayerNorm(8), torch.nn.Linear(8, 8), inplace

        def forward(self, x):
            if self.inplace:
                x += self.proj(self.norm(x))
                return x
            return x + self.proj(self.norm(x))

    torch.manual_seed(0)
    reference = Block(False)
    block = Block(True)
    block.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 8)

    def grads(model):
        model.zero_grad()
        model(x.clone()).pow(2).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    with pytest.raises(RuntimeError, match="inplace"):
        grads(block)
    undo = protect_from_inplace_residuals(block)
    try:
        got = grads(block)
    finally:
        undo()
    want = grads(reference)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want, strict=True))
    with pytest.raises(RuntimeError, match="inplace"):  # undone: the block is as ComfyUI made it
        grads(block)
