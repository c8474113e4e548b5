"""Building, inputs and timed steps for gpu_families.py: real-size random-weight denoisers on the GPU.

Models are built on the meta device, moved with ``to_empty`` and initialised in place (bf16), so a 32B model never
exists on the CPU. The pack is not imported here.
"""

from __future__ import annotations

import gc
import statistics
import time

# --------------------------------------------------------------------------------------------------------------
# building


def build(cls_name: str, config: dict, device, dtype):
    """Parameters on meta, then to_empty on ``device`` and in-place init there (buffers kept from __init__)."""
    import diffusers
    from accelerate import init_empty_weights

    cls = getattr(diffusers, cls_name)
    with init_empty_weights(include_buffers=False):
        model = cls(**config)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    model = model.to_empty(device=device)
    init_weights(model, dtype)
    for n, b in model.named_buffers():
        src = buffers[n]
        b.data = src.to(device, dtype if src.is_floating_point() else src.dtype)
    return model.eval()


def init_weights(model, dtype) -> None:
    """N(0, 0.02) for matrices/kernels, 1 for norm gains, 0 for biases; nothing exactly zero elsewhere."""
    import torch

    gen = None
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.data = p.data.to(dtype)
            if p.ndim >= 2:
                p.normal_(0.0, 0.02, generator=gen)
            elif name.endswith("bias"):
                p.zero_()
            elif name.endswith("weight") or name.endswith("scale"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def add_lora(model, pattern: str, rank: int = 16, lora_dtype=None) -> int:
    """peft LoRA on the linears matching ``pattern``; base frozen; LoRA params in ``lora_dtype`` (float32). Returns the LoRA parameter count."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=pattern, init_lora_weights="gaussian"), model
    )
    n = 0
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.to(lora_dtype or torch.float32)
            p.requires_grad_(True)
            n += p.numel()
    if n == 0:
        raise RuntimeError(f"no LoRA target matched {pattern}")
    return n


# --------------------------------------------------------------------------------------------------------------
# inputs and forward per family


def make_io(fam: dict, model, batch: int, device, dtype):
    """(forward() -> prediction tensor, latent shape) with random conditioning of the family's shapes."""
    import torch

    cfg, kind, res = fam["config"], fam["kind"], fam["res"]
    L, D = fam["text"]
    r = lambda *s: torch.randn(*s, device=device, dtype=dtype)  # noqa: E731
    if kind == "unet":
        lat = r(batch, cfg["in_channels"], res // 8, res // 8)
        ehs = r(batch, L, D)
        t = torch.full((batch,), 500, device=device, dtype=torch.long)
        extra = {}
        if cfg.get("addition_embed_type") == "text_time":
            extra["added_cond_kwargs"] = {"text_embeds": r(batch, fam["pooled"]), "time_ids": r(batch, 6)}
        return (lambda: model(lat, t, ehs, **extra).sample), lat
    h = w = res // 16  # packed latent grid (8x VAE, 2x2 patches)
    t = torch.full((batch,), 0.5, device=device, dtype=dtype)
    if kind == "flux1":
        hs = r(batch, h * w, cfg["in_channels"])
        ids = torch.zeros(h * w, 3, device=device)
        ids[:, 1] = torch.arange(h, device=device).repeat_interleave(w)
        ids[:, 2] = torch.arange(w, device=device).repeat(h)
        kw = dict(encoder_hidden_states=r(batch, L, D), pooled_projections=r(batch, fam["pooled"]), timestep=t,
                  img_ids=ids, txt_ids=torch.zeros(L, 3, device=device), guidance=torch.full_like(t, 3.5))  # fmt: skip
        return (lambda: model(hs, **kw).sample), hs
    if kind == "flux2":
        hs = r(batch, h * w, cfg["in_channels"])
        ids = torch.zeros(batch, h * w, 4, device=device, dtype=torch.long)
        ids[..., 1] = torch.arange(h, device=device).repeat_interleave(w)
        ids[..., 2] = torch.arange(w, device=device).repeat(h)
        txt_ids = torch.zeros(batch, L, 4, device=device, dtype=torch.long)
        txt_ids[..., 3] = torch.arange(L, device=device)
        kw = dict(encoder_hidden_states=r(batch, L, D), timestep=t, img_ids=ids, txt_ids=txt_ids,
                  guidance=torch.full_like(t, 4.0))  # fmt: skip
        return (lambda: model(hs, **kw).sample), hs
    if kind == "qwen":
        hs = r(batch, h * w, cfg["in_channels"])
        kw = dict(encoder_hidden_states=r(batch, L, D), encoder_hidden_states_mask=None, timestep=t,
                  img_shapes=[[(1, h, w)]] * batch)  # fmt: skip
        return (lambda: model(hs, **kw).sample), hs
    if kind == "zimage":
        xs = [r(cfg["in_channels"], 1, res // 8, res // 8) for _ in range(batch)]
        caps = [r(L, D) for _ in range(batch)]
        return (lambda: torch.stack(model(xs, t, caps).sample)), torch.stack(xs)
    raise ValueError(kind)


# --------------------------------------------------------------------------------------------------------------
# timing


class Clock:
    def __init__(self, device, budget_s: float):
        self.device, self.deadline = device, time.perf_counter() + budget_s

    def sync(self):
        import torch

        if str(self.device).startswith("cuda"):
            torch.cuda.synchronize()

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def time(self, fn, warmup=2, n=5) -> list[float]:
        """Warm up, then up to n timed calls (fewer when the budget would run out; at least 1)."""
        last = 0.0
        for _ in range(warmup):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            last = time.perf_counter() - t0
        n = max(1, min(n, int(self.left() / max(last, 1e-6))))
        times = []
        for _ in range(n):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        return times


def mem_reset(device):
    import torch

    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if str(device).startswith("cuda") else None


def summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 4), "times_s": [round(x, 4) for x in times]}


def sample_step(fam, model, device, dtype):
    """One denoising step: prediction(s), CFG combination, Euler update."""
    import torch

    kind = fam["kind"]
    batch = 2 if kind == "unet" else 1
    fwd, lat = make_io(fam, model, batch, device, dtype)
    fwd_neg = make_io(fam, model, 1, device, dtype)[0] if kind == "qwen" else None

    # no_grad, not inference_mode: diffusers' Qwen-Image RoPE caches its frequency tensors (lru_cache); made under
    # inference mode they cannot be saved for backward, and the training step after sampling fails (seen on GPU)
    @torch.no_grad()
    def step():
        pred = fwd()
        if kind == "unet":
            c, u = pred.chunk(2)
            pred = u + 7.0 * (c - u)
        elif fwd_neg is not None:
            pred = pred + 3.0 * (pred - fwd_neg())
        return lat[: pred.shape[0]].add_(pred.reshape(lat[: pred.shape[0]].shape), alpha=-0.01)

    return step, (2 if fwd_neg is not None else 1), batch


def train_step(fam, model, device, dtype):
    import torch

    fwd, _ = make_io(fam, model, 1, device, dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    target = None

    def step():
        nonlocal target
        pred = fwd()
        if target is None:
            target = torch.randn_like(pred)
        loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def vae_decode(fam, device, dtype, clock):
    import torch

    cls_name, cfg, ch = fam["vae"]
    vae = build(cls_name, cfg, device, dtype)
    n_up = len(vae.config.block_out_channels) - 1 if "block_out_channels" in vae.config else 3
    if cls_name == "AutoencoderKLQwenImage":
        n_up = len(vae.config.dim_mult) - 1
    s = fam["res"] // (2**n_up)
    z = (
        torch.randn(1, ch, 1, s, s, device=device, dtype=dtype)
        if cls_name == "AutoencoderKLQwenImage"
        else None
    )
    if z is None:
        z = torch.randn(1, ch, s, s, device=device, dtype=dtype)

    @torch.no_grad()
    def dec():
        return vae.decode(z).sample

    out = dec()
    shape = list(out.shape)
    times = clock.time(dec, warmup=1, n=3)
    dec = out = None  # free the VAE and its tensors before the next family
    return {**summary(times), "image_shape": shape, "class": cls_name}
