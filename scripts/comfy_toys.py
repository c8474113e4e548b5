"""Tiny random-weight models of every family in core/families.py, built with a real ComfyUI's OWN classes.

Proof harness only (scripts/, never run in CI: CI cannot fetch ComfyUI). Put a ComfyUI checkout on sys.path with
``setup_comfy(path, base_dir)`` first, then ``build(family)`` returns a :class:`Toy`:

- ``model``: toy ``unet_config`` -> the ``comfy.supported_models`` config class (``SD15``, ``SDXL``, ``Flux``,
  ``Flux2``, ``ZImage``, ``QwenImage``, ``SD3``, ``Chroma``, ``Lumina2``) -> ``config.get_model({})`` (the real
  ``model_base`` class and diffusion model) -> ``comfy.model_patcher.ModelPatcher``. So
  ``type(mp.model.model_config).__name__`` is the class name the family table matches, and ComfyUI's own loading,
  patching, conditioning (``extra_conds``), model_sampling and sampling code runs. Only widths and depths are
  toy-sized (hidden 32-128, 1-2 blocks, 1-2 heads); weights are random (matrices N(0, 1/fan_in), norm scales 1).
- ``vae``: ``comfy.sd.VAE(sd=random state dict)``: ComfyUI's own detection picks the class from the keys. SD/SDXL
  4-channel and FLUX.1 / SD3 / Z-Image / Lumina 2 / Chroma 16-channel KL VAEs only exist at full width in its
  detection (ch 128; fine on CPU at 64-256 px); Flux.2's is the 32-channel KL VAE with batch-norm 2x2 patchify
  (128 latent channels, /16); Qwen-Image's is the Wan 2.1 VAE, whose width ComfyUI reads from the state dict
  (toy dim 16).
- ``clip``: SD1.5 gets ComfyUI's real ``comfy.sd.CLIP`` (SD1Tokenizer + SD1ClipModel, full width 768, random
  weights). Every other family gets :class:`StandInClip`, a CLEARLY LABELLED STAND-IN (not ComfyUI code) with
  the CLIP methods the nodes call, returning ComfyUI's conditioning format with the toy model's context width
  and pooled width, deterministic values from the text, and the token count behaviour of the real encoder
  (T5 pads to 256 for FLUX.1, 77 for SD3; LLM encoders do not pad).
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

FAMILY_KEYS = ("sd15", "sdxl", "flux1", "flux2", "zimage", "qwen_image", "sd3", "chroma", "lumina2")

# the empty-latent node each family's official ComfyUI template wires into KSampler
EMPTY_LATENT_NODE = {
    "sd15": "EmptyLatentImage",
    "sdxl": "EmptyLatentImage",
    "flux1": "EmptySD3LatentImage",
    "flux2": "EmptyFlux2LatentImage",
    "zimage": "EmptySD3LatentImage",
    "qwen_image": "EmptySD3LatentImage",
    "sd3": "EmptySD3LatentImage",
    "chroma": "EmptySD3LatentImage",
    "lumina2": "EmptySD3LatentImage",
}

_COMFY_READY: dict[str, Any] = {}


def setup_comfy(comfy_path: str, base_dir: str) -> None:
    """Import ComfyUI from ``comfy_path`` on CPU with its folders (models, output, temp, input) under
    ``base_dir`` (the checkout itself stays untouched). Idempotent."""
    if _COMFY_READY:
        return
    comfy_path = os.path.abspath(comfy_path)
    if comfy_path not in sys.path:
        sys.path.insert(0, comfy_path)
    os.makedirs(base_dir, exist_ok=True)
    saved = sys.argv
    sys.argv = [saved[0], "--cpu", "--base-directory", os.path.abspath(base_dir), "--disable-api-nodes"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.model_management  # noqa: F401  (reads the arguments)
        import folder_paths  # noqa: F401
    finally:
        sys.argv = saved
    for sub in ("models/loras", "output", "input", "temp"):
        os.makedirs(os.path.join(base_dir, sub), exist_ok=True)
    _COMFY_READY["path"] = comfy_path


def comfy_node(name: str):
    """One of ComfyUI's built-in node classes, imported from its own module (nodes.py or comfy_extras)."""
    import importlib

    for module in ("nodes", "comfy_extras.nodes_sd3", "comfy_extras.nodes_flux", "comfy_extras.nodes_train"):
        mod = importlib.import_module(module)
        cls = getattr(mod, name, None)
        if cls is not None:
            return cls
    raise KeyError(name)


def random_init(module, seed: int = 0) -> None:
    """Deterministic random weights: matrices N(0, 1/fan_in), 1-D weights/scales 1, other vectors 0.

    ComfyUI builds its modules with ``disable_weight_init`` (uninitialised memory), so every parameter and
    floating buffer is set here; norm weights are never zero (a zero GroupNorm would make the VAE constant)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim >= 2:
                fan_in = max(1, p[0].numel())
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            elif leaf in ("weight", "scale", "gamma") or leaf.endswith("_scale"):
                p.fill_(1.0)
            else:
                p.zero_()
        for name, b in module.named_buffers():
            if not b.is_floating_point():
                continue
            if name.endswith("running_var"):
                b.fill_(1.0)
            elif name.endswith("running_mean"):
                b.zero_()


# -- the denoisers ---------------------------------------------------------------------------------------------
def _unet_configs() -> dict[str, tuple[str, dict]]:
    """family -> (supported_models class name, toy unet_config)."""
    unet_common = {
        "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1],
        "channel_mult": [1, 2], "use_spatial_transformer": True, "legacy": False, "use_temporal_attention": False,
        "use_temporal_resblock": False, "disable_self_attentions": None, "num_classes": None,
    }  # fmt: skip
    return {
        # SD15: extra config forces num_heads 8, num_head_channels -1 (as the real one); context 768 = real CLIP
        "sd15": ("SD15", {**unet_common, "model_channels": 32, "context_dim": 768, "adm_in_channels": None,
                          "use_linear_in_transformer": False, "transformer_depth": [1, 1],
                          "transformer_depth_middle": 1, "transformer_depth_output": [1, 1, 1, 1]}),
        # SDXL: num_head_channels 64 (BASE extra config); adm = pooled 64 + 6 size embeddings of 256
        "sdxl": ("SDXL", {**unet_common, "model_channels": 64, "context_dim": 64, "adm_in_channels": 64 + 1536,
                          "num_classes": "sequential", "use_linear_in_transformer": True,
                          "transformer_depth": [0, 1], "transformer_depth_middle": 1,
                          "transformer_depth_output": [0, 0, 1, 1]}),
        "flux1": ("Flux", {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32,
                           "context_in_dim": 64, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1,
                           "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2,
                           "qkv_bias": True, "guidance_embed": True, "txt_ids_dims": []}),
        "flux2": ("Flux2", {"image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None,
                            "context_in_dim": 96, "hidden_size": 64, "mlp_ratio": 3.0, "num_heads": 2, "depth": 1,
                            "depth_single_blocks": 1, "axes_dim": [8, 8, 8, 8], "theta": 2000, "patch_size": 1,
                            "qkv_bias": False, "guidance_embed": True, "txt_ids_dims": [3],
                            "global_modulation": True, "mlp_silu_act": True, "ops_bias": False,
                            "default_ref_method": "index", "ref_index_scale": 10.0}),
        # ZImage: the real one is only detected at dim 3840; here the class is chosen directly at dim 256 (its
        # modulation needs dim >= 256)
        "zimage": ("ZImage", {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256,
                              "cap_feat_dim": 80, "n_layers": 1, "n_refiner_layers": 1, "qk_norm": True,
                              "n_heads": 2, "n_kv_heads": 2, "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512],
                              "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0, "multiple_of": 16,
                              "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32}),
        "qwen_image": ("QwenImage", {"image_model": "qwen_image", "patch_size": 2, "in_channels": 64,
                                     "out_channels": 16, "num_layers": 1, "attention_head_dim": 32,
                                     "num_attention_heads": 2, "joint_attention_dim": 72,
                                     "axes_dims_rope": (8, 12, 12)}),
        # SD3 (MMDiT): hidden = 64 * depth, heads = depth
        "sd3": ("SD3", {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2, "input_size": None,
                        "adm_in_channels": 48, "pos_embed_scaling_factor": None, "pos_embed_max_size": 32,
                        "num_patches": 1024, "qk_norm": "rms", "x_block_self_attn_layers": [],
                        "context_embedder_config": {"target": "torch.nn.Linear",
                                                    "params": {"in_features": 56, "out_features": 128}}}),
        "chroma": ("Chroma", {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 40,
                              "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1,
                              "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2,
                              "qkv_bias": True, "in_dim": 64, "out_dim": 64, "hidden_dim": 64, "n_layers": 1,
                              "txt_ids_dims": [], "vec_in_dim": None}),
        "lumina2": ("Lumina2", {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 48,
                                "cap_feat_dim": 64, "n_layers": 1, "n_refiner_layers": 1, "qk_norm": True,
                                "n_heads": 2, "n_kv_heads": 1, "axes_dims": [8, 8, 8], "axes_lens": [300, 512, 512],
                                "rope_theta": 10000.0, "ffn_dim_multiplier": 4.0, "multiple_of": 16}),
        # NOT a family of the table: a video model a user may wire in by mistake (the nodes must refuse it)
        "wan21": ("WAN21_T2V", {"image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2),
                                "text_len": 512, "in_dim": 16, "dim": 64, "ffn_dim": 128, "freq_dim": 64,
                                "text_dim": 48, "out_dim": 16, "num_heads": 2, "num_layers": 1}),
    }  # fmt: skip


# families of the toys that IdentityLock must refuse with one sentence
UNSUPPORTED_KEYS = ("wan21",)


def build_model(family: str, seed: int = 0):
    """The toy MODEL of ``family``: config class -> model_base -> ModelPatcher (fp32, CPU)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    import torch

    class_name, unet_config = _unet_configs()[family]
    config = getattr(sm, class_name)(dict(unet_config))
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    random_init(base.diffusion_model, seed)
    dm = base.diffusion_model
    if getattr(dm, "pos_embed", None) is not None and class_name == "SD3":
        # a buffer made with torch.empty (checkpoints carry it): the 2-D sin-cos grid SD3 was trained with
        from comfy.ldm.modules.diffusionmodules.mmdit import get_2d_sincos_pos_embed

        grid = get_2d_sincos_pos_embed(dm.pos_embed.shape[-1], unet_config["pos_embed_max_size"])
        with torch.no_grad():
            dm.pos_embed.copy_(torch.from_numpy(grid).reshape(dm.pos_embed.shape))
    base = base.to(mm.unet_offload_device())
    return comfy.model_patcher.ModelPatcher(
        base, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


# -- the VAEs --------------------------------------------------------------------------------------------------
_KL_FULL = {"double_z": True, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4],
            "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}  # fmt: skip
VAE_KIND = {
    "sd15": "kl4", "sdxl": "kl4", "flux1": "kl16", "zimage": "kl16", "lumina2": "kl16", "chroma": "kl16",
    "sd3": "kl16", "flux2": "kl32bn", "qwen_image": "wan21", "wan21": "wan21",
}  # fmt: skip


def vae_state_dict(kind: str, seed: int = 1) -> dict:
    """A random state dict in the layout ComfyUI's ``comfy.sd.VAE`` detects as ``kind``."""
    from comfy.ldm.models.autoencoder import AutoencoderKL, AutoencodingEngine

    if kind == "kl4":  # SD1.x / SDXL: with quant convs
        m = AutoencoderKL(ddconfig={**_KL_FULL, "z_channels": 4}, embed_dim=4)
    elif kind == "kl32bn":  # Flux.2: 32 channels, batch-norm over the 2x2 patchified latent
        m = AutoencoderKL(ddconfig={**_KL_FULL, "z_channels": 32, "batch_norm_latent": True}, embed_dim=32)
    elif kind == "kl16":  # FLUX.1 ae / SD3: no quant convs
        dd = {**_KL_FULL, "z_channels": 16}
        m = AutoencodingEngine(
            regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
            encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": dd},
            decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": dd},
        )
    elif kind == "wan21":
        from comfy.ldm.wan.vae import WanVAE

        m = WanVAE(dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                   temperal_downsample=[False, True, True], dropout=0.0)  # fmt: skip
    else:
        raise ValueError(kind)
    random_init(m, seed)
    return {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}


def build_vae(family: str, seed: int = 1):
    import comfy.sd

    return comfy.sd.VAE(sd=vae_state_dict(VAE_KIND[family], seed))


# -- text encoders ---------------------------------------------------------------------------------------------
def _context_widths(mp) -> tuple[int, int | None]:
    """(context width, pooled width or None) read from the toy model itself."""
    dm = mp.model.diffusion_model
    cfg = mp.model.model_config.unet_config
    name = type(mp.model.model_config).__name__
    if name in ("SD15", "SDXL"):
        return cfg["context_dim"], (cfg["adm_in_channels"] - 1536 if cfg.get("adm_in_channels") else None)
    if name in ("Flux", "Flux2"):
        return cfg["context_in_dim"], cfg.get("vec_in_dim")
    if name == "Chroma":
        return cfg["context_in_dim"], None
    if name in ("ZImage", "Lumina2"):
        return cfg["cap_feat_dim"], None
    if name == "QwenImage":
        return cfg["joint_attention_dim"], None
    if name == "SD3":
        return dm.context_embedder.in_features, cfg["adm_in_channels"]
    if name == "WAN21_T2V":
        return cfg["text_dim"], None
    raise ValueError(name)


# min tokens of the real encoder (T5 pads to min_length; the LLM encoders and CLIP-77 as ComfyUI does)
_MIN_TOKENS = {"sdxl": 77, "flux1": 256, "sd3": 77, "chroma": 1, "flux2": 1, "zimage": 1, "lumina2": 1,
               "qwen_image": 1}  # fmt: skip


@dataclass
class StandInClip:
    """STAND-IN text encoder (not ComfyUI code): deterministic pseudo-embeddings of the text.

    It has the methods LoRATrainAdaptive / MatchedPortrait / CLIPTextEncode use and returns ComfyUI's
    conditioning format ``[[cond [1, T, context], {"pooled_output": [1, pooled]}]]`` with the toy model's
    widths. T follows the real encoder: padded to ``min_tokens`` (T5 in FLUX.1/SD3, CLIP 77), else one token
    per word plus two (LLM encoders do not pad)."""

    family: str
    context_dim: int
    pooled_dim: int | None
    min_tokens: int = 1
    stand_in: bool = field(default=True, init=False)

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs) -> dict:
        words = str(text).split()
        return {"stand_in": [(w, i) for i, w in enumerate(words)], "text": str(text)}

    def _values(self, text: str, n: int, width: int, salt: str):
        import torch

        digest = hashlib.sha256(f"{self.family}|{salt}|{text}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        return torch.randn((1, n, width), generator=g)

    def encode_from_tokens(self, tokens: dict, return_pooled: bool = False, return_dict: bool = False):
        text = tokens["text"]
        n = max(self.min_tokens, len(tokens["stand_in"]) + 2)
        cond = self._values(text, n, self.context_dim, "cond")
        pooled = self._values(text, 1, self.pooled_dim, "pooled")[0] if self.pooled_dim else None
        if return_dict:  # ComfyUI always sets pooled_output (None for encoders without one)
            return {"cond": cond, "pooled_output": pooled}
        if return_pooled:
            return cond, pooled
        return cond

    def encode_from_tokens_scheduled(
        self, tokens: dict, unprojected: bool = False, add_dict=None, show_pbar=True
    ):
        out = self.encode_from_tokens(tokens, return_dict=True)
        cond = out.pop("cond")
        out.update(add_dict or {})
        return [[cond, out]]

    def clone(self):
        return self

    def load_model(self):
        return None


def build_sd15_clip(seed: int = 2):
    """ComfyUI's real SD1.5 CLIP (SD1Tokenizer + SD1ClipModel, ViT-L/14 text tower) with random weights."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base as smb

    target = smb.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    clip = comfy.sd.CLIP(target, parameters=0)
    random_init(clip.cond_stage_model, seed)
    return clip


def build_clip(family: str, mp):
    if family == "sd15":
        return build_sd15_clip()
    ctx, pooled = _context_widths(mp)
    return StandInClip(family, ctx, pooled, _MIN_TOKENS.get(family, 1))


@dataclass
class Toy:
    family: str
    model: Any
    clip: Any
    vae: Any
    clip_is_comfy: bool

    @property
    def config_name(self) -> str:
        return type(self.model.model.model_config).__name__

    def describe(self) -> str:
        dm = self.model.model.diffusion_model
        n = sum(p.numel() for p in dm.parameters())
        vae = self.vae.first_stage_model
        nv = sum(p.numel() for p in vae.parameters())
        clip = (
            "ComfyUI CLIP (SD1ClipModel)"
            if self.clip_is_comfy
            else f"STAND-IN clip (ctx {self.clip.context_dim}, pooled {self.clip.pooled_dim})"
        )
        return (f"{self.family}: {self.config_name} / {type(self.model.model).__name__} / {type(dm).__name__} "
                f"{n / 1e6:.2f}M params; VAE {type(vae).__name__} {nv / 1e6:.1f}M, latent "
                f"{self.vae.latent_channels}ch /{self.vae.downscale_ratio if isinstance(self.vae.downscale_ratio, int) else 'f'}; {clip}")  # fmt: skip


def build(family: str, seed: int = 0) -> Toy:
    mp = build_model(family, seed)
    return Toy(family, mp, build_clip(family, mp), build_vae(family), family == "sd15")


def empty_latent(family: str, width: int, height: int, batch: int = 1) -> dict:
    """The LATENT the family's official template feeds KSampler (ComfyUI's own empty-latent node)."""
    cls = comfy_node(EMPTY_LATENT_NODE[family])
    out = _run_node(cls, width=width, height=height, batch_size=batch)
    return out[0]


def _run_node(cls, **kwargs):
    """Run a ComfyUI node class (V1 or V3 io.ComfyNode) outside the server."""
    if hasattr(cls, "execute") and hasattr(cls, "define_schema"):
        res = cls.execute(**kwargs)
        return tuple(res.result) if hasattr(res, "result") else tuple(res)
    obj = cls()
    return getattr(obj, cls.FUNCTION)(**kwargs)


def ksampler(toy: Toy, positive, negative, latent: dict, seed: int, steps: int = 2, cfg: float = 1.0,
             sampler: str = "euler", scheduler: str = "simple", denoise: float = 1.0) -> dict:  # fmt: skip
    """ComfyUI's own KSampler path (nodes.common_ksampler) on the toy."""
    import nodes

    return nodes.common_ksampler(toy.model, seed, steps, cfg, sampler, scheduler, positive, negative, latent,
                                 denoise=denoise)[0]  # fmt: skip


def encode(clip, text: str):
    """CLIPTextEncode's path (encode_from_tokens_scheduled)."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def with_guidance(cond, guidance: float | None):
    """FluxGuidance's effect (node_helpers.conditioning_set_values) when the family renders with guidance."""
    if guidance is None:
        return cond
    import node_helpers

    return node_helpers.conditioning_set_values(cond, {"guidance": guidance})
