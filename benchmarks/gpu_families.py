"""GPU figures per model family: LoRA training s/step and seed-search rendering s/step on real-size denoisers.

Real-size random-weight denoisers of SD1.5, SDXL, FLUX.1-dev, FLUX.2-dev, Z-Image Turbo and Qwen-Image are built
on the meta device from their published configs (written below; nothing is downloaded), moved with
``to_empty`` to the GPU and initialised in place in bf16 (a 32B model never exists on the CPU).

Per family:
- sample: one denoising step, forward only (no grad), as each family's pipeline does it (CFG batch 2 for
  SD1.5/SDXL; batch 1 with a guidance embedding for FLUX.1-dev/FLUX.2-dev; batch 1 without CFG for Z-Image
  Turbo; two batch-1 forwards, conditional and negative, for Qwen-Image's true CFG), then s/render at the
  family's usual step count, plus one VAE decode of the latent (timed separately, random weights, published
  VAE config).
- train: one optimizer step (forward + backward + AdamW over the LoRA parameters only) with peft LoRA rank 16
  on the attention q/k/v/out and MLP linears of every block, gradient checkpointing on, batch 1, LoRA weights
  in float32 over the bf16 model (as diffusers' training scripts do).
- SD1.5 only: the pack's own training path (core.training: LoRANetwork forward hooks, DiffusersBackend,
  Trainer.run with one fixed AdamW phase), timed from the Trainer's on_step callbacks.

Warm-up 2, then up to 5 timed iterations (fewer if the family's time budget would run out); median reported.
Peak memory is torch.cuda.max_memory_allocated since the model was on the GPU (weights included).

    python benchmarks/gpu_families.py --device cuda --out results/      # real sizes, bf16
    python benchmarks/gpu_families.py --toy --device cpu                 # shrunk configs, float32 (CI-size)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_family_configs import LORA_TARGETS, family_specs  # noqa: E402

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


def add_lora(model, fam: dict, rank: int = 16, lora_dtype=None) -> int:
    """peft LoRA on the family's block linears; base frozen; LoRA params float32. Returns #trainable params."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    pattern = LORA_TARGETS[fam["kind"]]
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


# --------------------------------------------------------------------------------------------------------------
# the pack's own training path (SD1.5)


def pack_train(fam, device, dtype, clock, grad_ckpt: bool, steps: int = 7) -> dict:
    """core.training: LoRANetwork hooks (attn_ff, rank 16) + DiffusersBackend + Trainer.run, one AdamW phase."""
    import torch
    from diffusers import DDPMScheduler

    ensure_pack_importable()
    from identitylock.core.training.convergence import ControllerConfig
    from identitylock.core.training.diffusers_backend import DiffusersBackend
    from identitylock.core.training.network import LoRANetwork
    from identitylock.core.training.phases import Phase, Schedule
    from identitylock.core.training.presets import TARGETS, TrainConfig
    from identitylock.core.training.trainer import TrainData, Trainer

    unet = build(fam["cls"], fam["config"], device, dtype)
    if grad_ckpt:
        unet.enable_gradient_checkpointing()
    unet.train()
    s = fam["res"] // 8
    L, D = fam["text"]
    g = torch.Generator().manual_seed(0)
    data = TrainData(
        torch.randn(4, 4, s, s, generator=g).to(dtype), torch.randn(4, L, D, generator=g).to(dtype),
        torch.randn(1, 4, s, s, generator=g).to(dtype), torch.randn(1, L, D, generator=g).to(dtype),
    )  # fmt: skip
    net = LoRANetwork(16, 16)
    n_adapted = net.attach_hooks(unet, TARGETS["attn_ff"])
    net.to(device)
    sched = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    cfg = TrainConfig(
        rank=16, alpha=16, schedule=Schedule([Phase("BENCH", lr=1e-4, alpha=16, optimizer="adamw", min_steps=steps,
                                                    max_steps=steps)], adaptive=False),
        controller=ControllerConfig(window=10), val_every=0,
    )  # fmt: skip
    stamps: list[float] = []

    def on_step(info):
        clock.sync()
        stamps.append(time.perf_counter())

    mem_reset(device)
    clock.sync()
    t0 = time.perf_counter()
    Trainer(net, DiffusersBackend(unet, sched, device), data, cfg, on_step=on_step).run()
    diffs = [b - a for a, b in zip([t0] + stamps[:-1], stamps)]
    out = {**summary(diffs[2:]), "peak_gib": peak_gib(device), "adapted_linears": n_adapted,
           "lora_params": sum(p.numel() for p in net.parameters()), "grad_checkpointing": grad_ckpt,
           "dtype": str(dtype).replace("torch.", ""), "steps_run": len(stamps)}  # fmt: skip
    net.detach_hooks()
    del unet, net, data
    mem_reset(device)
    return out


def ensure_pack_importable() -> None:
    """Make ``identitylock`` importable from this repository (the script lives one folder below its root)."""
    try:
        import identitylock.core  # noqa: F401

        return
    except ImportError:
        pass
    import tempfile

    root = Path(__file__).resolve().parent.parent
    link_dir = Path(tempfile.mkdtemp(prefix="il_pp_"))
    (link_dir / "identitylock").symlink_to(root, target_is_directory=True)
    sys.path.insert(0, str(link_dir))


# --------------------------------------------------------------------------------------------------------------


def run_family(fam: dict, device, dtype, budget_s: float, opts, save=lambda row: None) -> dict:
    """Sample, LoRA-train (peft), pack Trainer (SD1.5), VAE decode; ``save(row)`` after each phase."""
    import torch

    clock = Clock(device, budget_s)
    row: dict = {"family": fam["name"], "class": fam["cls"], "config": fam["config"], "resolution": fam["res"],
                 "text_tokens": fam["text"], "steps_per_render": fam["steps"], "errors": {}}  # fmt: skip
    only_train = opts.only == "train"
    t0 = time.perf_counter()
    model = None
    try:
        model = build(fam["cls"], fam["config"], device, dtype)
        row["params_b"] = round(n_params(model) / 1e9, 3)
        row["build_s"] = round(time.perf_counter() - t0, 1)
        if str(device).startswith("cuda"):
            row["weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
        print(f"[{fam['name']}] built {row['params_b']} B params in {row['build_s']} s", flush=True)
        if not only_train:
            mem_reset(device)
            step, fwd_per_step, batch = sample_step(fam, model, device, dtype)
            times = clock.time(step)
            row["sample"] = {**summary(times), "peak_gib": peak_gib(device), "forwards_per_step": fwd_per_step,
                             "batch": batch, "how": fam["sample"]}  # fmt: skip
            row["sample"]["s_per_render"] = round(row["sample"]["median_s"] * fam["steps"], 3)
            row["sample"]["output_finite"] = bool(torch.isfinite(step()).all())
            print(f"[{fam['name']}] sample {row['sample']['median_s']} s/step", flush=True)
            save(row)
            del step
        if opts.skip_train:
            row["errors"]["train"] = "skipped (--skip-train)"
        elif clock.left() < 10:
            row["errors"]["train"] = "skipped: family time budget spent"
        else:
            lora_dtype = torch.bfloat16 if opts.lora_dtype == "bf16" else torch.float32
            row["lora_params"] = add_lora(model, fam, lora_dtype=lora_dtype)
            model.enable_gradient_checkpointing()
            model.train()
            mem_reset(device)
            step = train_step(fam, model, device, dtype)
            times = clock.time(step)
            row["train"] = {**summary(times), "peak_gib": peak_gib(device), "grad_checkpointing": True,
                            "optimizer": "torch AdamW over the LoRA params", "lora_dtype": opts.lora_dtype,
                            "sdpa": opts.sdpa, "loss_finite": bool(torch.isfinite(step()))}  # fmt: skip
            print(f"[{fam['name']}] train {row['train']['median_s']} s/step", flush=True)
            save(row)
            del step
    except Exception as e:  # OOM or anything else: record, continue with the next family
        row["errors"]["train" if "sample" in row or only_train else "model"] = (
            f"{type(e).__name__}: {str(e)[:400]}"
        )
        traceback.print_exc()
        save(row)
    del model
    mem_reset(device)
    if fam.get("pack") and not opts.skip_train and not only_train:
        for ck in (False, True):
            key = "pack_train_gc" if ck else "pack_train"
            if clock.left() < 10:
                row["errors"][key] = "skipped: family time budget spent"
                continue
            try:
                row[key] = pack_train(fam, device, dtype, clock, grad_ckpt=ck)
                print(f"[{fam['name']}] pack trainer (gc={ck}) {row[key]['median_s']} s/step", flush=True)
            except Exception as e:
                row["errors"][key] = f"{type(e).__name__}: {str(e)[:400]}"
                traceback.print_exc()
            save(row)
            mem_reset(device)
    if only_train:
        pass
    elif clock.left() > 3:
        try:
            mem_reset(device)
            row["vae_decode"] = vae_decode(fam, device, dtype, clock)
            row["vae_decode"]["peak_gib"] = peak_gib(device)
        except Exception as e:
            row["errors"]["vae_decode"] = f"{type(e).__name__}: {str(e)[:400]}"
            traceback.print_exc()
        mem_reset(device)
    else:
        row["errors"]["vae_decode"] = "skipped: family time budget spent"
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    save(row)
    return row


def run_child(fam: dict, args, budget_s: float, extra: list[str]) -> tuple[dict | None, int]:
    """The family in a fresh process, so a CUDA error that kills the context spares the other families."""
    import subprocess
    import tempfile

    rowfile = Path(tempfile.mkdtemp(prefix="gpu_fam_")) / "row.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--device", args.device, "--families", fam["name"],
           "--budget", str(budget_s), "--child", str(rowfile), *extra]  # fmt: skip
    if args.toy:
        cmd.append("--toy")
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    if args.skip_train:
        cmd.append("--skip-train")
    try:
        rc = subprocess.run(cmd, timeout=budget_s + 90).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    row = json.loads(rowfile.read_text()) if rowfile.exists() else None
    return row, rc


def run_isolated(fam: dict, args, budget_s: float) -> dict:
    """Run a family in a child; if its training died (CUDA error), retry training only with flash/efficient
    attention, then also with bf16 LoRA weights, each in a fresh process."""
    t0 = time.perf_counter()
    row, rc = run_child(fam, args, budget_s, [])
    if row is None:
        row = {
            "family": fam["name"],
            "errors": {"model": f"child process exited {rc} before writing a result"},
        }
    if rc != 0:
        row["errors"]["child_exit"] = rc
    retries = [["--sdpa", "flash"], ["--sdpa", "flash", "--lora-dtype", "bf16"]]
    for extra in retries:
        if "train" in row or args.skip_train or "sample" not in row:
            break
        left = budget_s - (time.perf_counter() - t0)
        if left < 20:
            row["errors"]["train_retry"] = "no time left to retry"
            break
        print(f"[{fam['name']}] retrying training in a fresh process with {' '.join(extra)}", flush=True)
        r2, rc2 = run_child(fam, args, left, [*extra, "--only", "train"])
        tries = row.setdefault("train_tries", [])
        tries.append(
            {"with": " ".join(extra), "exit": rc2, "error": (r2 or {}).get("errors", {}).get("train")}
        )
        if r2 and "train" in r2:
            row["train"] = r2["train"]
            row["lora_params"] = r2.get("lora_params")
    return row


def table(rows: list[dict]) -> str:
    def f(v, nd=3):
        return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    head = ("family", "params B", "train s/step", "train GiB", "sample s/step", "s/render", "+VAE s",
            "sample GiB", "errors")  # fmt: skip
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        tr, sa, va = r.get("train") or {}, r.get("sample") or {}, r.get("vae_decode") or {}
        lines.append(" | ".join([
            r["family"], f(r.get("params_b")), f(tr.get("median_s")), f(tr.get("peak_gib"), 1),
            f(sa.get("median_s")), f(sa.get("s_per_render"), 2), f(va.get("median_s")), f(sa.get("peak_gib"), 1),
            (f"[train: {tr['sdpa']} attention, {tr['lora_dtype']} LoRA] " if tr.get("sdpa", "default") != "default" else "")
            + "; ".join(f"{k}: {v}" for k, v in r["errors"].items())[:160],
        ]))  # fmt: skip
        for key in ("pack_train", "pack_train_gc"):
            if key in r:
                p = r[key]
                lines.append(f"  {r['family']} pack Trainer ({p['dtype']}, grad ckpt {p['grad_checkpointing']}): "
                             f"{p['median_s']} s/step, peak {p['peak_gib']} GiB")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--toy", action="store_true", help="shrunk configs, float32 (runs on a CPU in a minute)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None, help="folder for gpu_families.json")
    ap.add_argument("--families", nargs="*", default=None, help="subset by name")
    ap.add_argument("--budget", type=float, default=340.0, help="total seconds; split over the families")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default: bf16, fp32 with --toy")
    ap.add_argument("--lora-dtype", choices=["bf16", "fp32"], default="fp32")
    ap.add_argument(
        "--sdpa",
        choices=["default", "flash"],
        default="default",
        help="flash: only the flash / memory-efficient attention kernels (no cuDNN)",
    )
    ap.add_argument("--only", choices=["all", "train"], default="all")
    ap.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="each family in its own process (default: on for CUDA)",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    import diffusers
    import peft
    import torch

    dtype = torch.float32 if (args.dtype or ("fp32" if args.toy else "bf16")) == "fp32" else torch.bfloat16
    device = torch.device(args.device)
    specs = [s for s in family_specs(args.toy) if not args.families or s["name"] in args.families]
    # share of the budget per family ~ its expected cost (bigger models get more)
    weight = {
        "SD1.5": 1.0,
        "SDXL": 1.0,
        "Z-Image Turbo": 1.0,
        "FLUX.1-dev": 1.3,
        "Qwen-Image": 1.6,
        "FLUX.2-dev": 2.2,
    }
    start = time.perf_counter()
    meta = {
        "torch": torch.__version__, "diffusers": diffusers.__version__, "peft": peft.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "dtype": str(dtype),
        "toy": args.toy, "python": sys.version.split()[0],
    }  # fmt: skip
    if args.child:
        return child_main(specs[0], args, device, dtype)
    print(json.dumps(meta), flush=True)
    isolate = args.isolate if args.isolate is not None else device.type == "cuda"
    rows = []
    for i, fam in enumerate(specs):
        left = args.budget - (time.perf_counter() - start)
        share = left * weight.get(fam["name"], 1.0) / sum(weight.get(s["name"], 1.0) for s in specs[i:])
        if left < 15:
            rows.append({"family": fam["name"], "errors": {"all": "skipped: total time budget spent"}})
            continue
        if isolate:
            rows.append(run_isolated(fam, args, share))
        else:
            rows.append(run_family(fam, device, dtype, share, args))
        if args.out:
            write(args.out, meta, rows)
    print(table(rows), flush=True)
    if args.out:
        write(args.out, meta, rows)
    return 0


def child_main(fam: dict, args, device, dtype) -> int:
    import contextlib

    import torch

    ctx = contextlib.nullcontext()
    if args.sdpa == "flash":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        kernels = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
        ctx = sdpa_kernel(kernels if device.type == "cuda" else [*kernels, SDPBackend.MATH])

    def save(row):
        Path(args.child).write_text(json.dumps(row, default=str))

    with ctx:
        run_family(fam, device, dtype, args.budget, args, save)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 0


def write(out: str, meta: dict, rows: list[dict]) -> None:
    p = Path(out)
    p.mkdir(parents=True, exist_ok=True)
    tmp = p / "gpu_families.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "families": rows}, indent=1, default=str))
    tmp.replace(p / "gpu_families.json")


if __name__ == "__main__":
    sys.exit(main())
