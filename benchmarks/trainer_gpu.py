"""Seconds per step and peak VRAM of every training preset on real-size SD1.5 and SDXL UNets, through the Trainer.

For a GPU owner: each UNet is built with random weights from its published config on the meta device, moved with
``to_empty`` to the GPU and initialised in place there (benchmarks/gpu_family_steps.py; nothing is downloaded,
the model never exists on the CPU). Then, for every preset in core/training/presets.py, the pack's own training
path runs: LoRANetwork (the preset's rank, alpha, dropout and targets, forward hooks), DiffusersBackend (DDPM,
epsilon) and Trainer.run() with one fixed phase of ``--steps`` optimizer steps at the preset's lr, optimizer,
batch size and gradient accumulation, on random cached latents at the family's resolution (SD1.5 512², SDXL
1024²). SDXL's extra conditioning (pooled text embedding, time ids) is added by a thin wrapper around the UNet,
since the pack's backend passes only the text embeddings.

Printed per (family, preset): LoRA parameters, LoRA + gradient + optimizer state (arithmetic), median seconds per
optimizer step (the first two steps dropped) and per forward/backward (= step / grad_accum), and peak memory
(torch.cuda.max_memory_allocated since the preset's run began, base weights included). ``--vram-table`` prints
the arithmetic VRAM table of docs/training.md instead (parameter counts on the meta device; no GPU needed).

    python benchmarks/trainer_gpu.py --device cuda [--family sd15 sdxl] [--presets A B] [--steps 6] [--grad-ckpt]
    python benchmarks/trainer_gpu.py --toy --device cpu --steps 1   # shrunk UNets, float32, accumulation <= 2:
                                                                   # a quick check of the script, no figures
    python benchmarks/trainer_gpu.py --vram-table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_families import configs, ensure_pack_importable  # noqa: E402
from gpu_family_steps import build, mem_reset, peak_gib  # noqa: E402

GIB = 2**30
# Train peaks measured on an H200 (docs/gpu_figures.md, run 2; bf16 base, batch 1, LoRA rank 16 on the attn_ff
# targets, float32 LoRA + AdamW): SD1.5 through the pack's Trainer with / without gradient checkpointing, SDXL
# through peft with checkpointing (not measured without). Activations = peak - weights - rank-16 LoRA state.
MEASURED_PEAK_GIB = {"SD1.5": (2.4, 3.0), "SDXL": (6.1, None)}


def _reset(device) -> None:
    """Free what the last run left and restart the peak counter (CUDA only: a full gc on the CPU costs seconds)."""
    if str(device).startswith("cuda"):
        mem_reset(device)


def families(toy: bool) -> list[dict]:
    """SD1.5 and SDXL specs (config, resolution, text shape) from gpu_family_configs; toy = shrunk widths."""
    specs = {f["name"]: f for f in configs().family_specs(toy)}
    return [specs["SD1.5"], specs["SDXL"]]


class _AddedCond:
    """Wraps an SDXL UNet so that unet(x, t, text) also gets the pooled text embedding and the time ids."""

    def __init__(self, unet, pooled: int):
        import torch

        self.unet, self.pooled = unet, pooled
        self._gen = torch.Generator().manual_seed(1)

    def __getattr__(self, name):  # requires_grad_, config, ... go to the UNet
        return getattr(self.unet, name)

    def __call__(self, x, t, ehs):
        import torch

        b = x.shape[0]
        extra = {
            "text_embeds": torch.randn(b, self.pooled, generator=self._gen).to(x.device, x.dtype),
            "time_ids": torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]])
            .repeat(b, 1)
            .to(x.device, x.dtype),
        }
        return self.unet(x, t, ehs, added_cond_kwargs=extra)


def lora_params(model, target_modules: str, rank: int) -> tuple[int, int]:
    """(adapted linears, LoRA parameters) for ``rank`` on ``model``'s targets: rank × (in + out) per linear."""
    from identitylock.core.training.network import target_linears
    from identitylock.core.training.presets import TARGETS

    found = target_linears(model, TARGETS[target_modules])
    return len(found), sum(rank * (m.weight.shape[0] + m.weight.shape[1]) for _, m in found)


def run_preset(fam: dict, unet, preset, device, dtype, steps: int, max_accum: int | None = None) -> dict:
    """One fixed phase of ``steps`` optimizer steps through Trainer.run(); timings from its on_step callback."""
    import torch
    from diffusers import DDPMScheduler
    from identitylock.core.training.diffusers_backend import DiffusersBackend
    from identitylock.core.training.network import LoRANetwork
    from identitylock.core.training.phases import Phase, Schedule
    from identitylock.core.training.presets import TARGETS, config_for
    from identitylock.core.training.trainer import TrainData, Trainer

    s, (L, D) = fam["res"] // 8, fam["text"]
    cfg = config_for(preset, num_images=8, adaptive=False, val_every=0)
    ph = cfg.schedule.phases[0]
    if max_accum:
        cfg.grad_accum = min(cfg.grad_accum, max_accum)
    cfg.schedule = Schedule([Phase("BENCH", lr=ph.lr, alpha=cfg.alpha, optimizer=ph.optimizer, min_steps=steps,
                                   max_steps=steps)], adaptive=False)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    n = max(2, cfg.batch_size)
    data = TrainData(
        torch.randn(n, 4, s, s, generator=g).to(dtype), torch.randn(n, L, D, generator=g).to(dtype),
        torch.randn(1, 4, s, s, generator=g).to(dtype), torch.randn(1, L, D, generator=g).to(dtype),
    )  # fmt: skip
    _reset(device)
    net = LoRANetwork(cfg.rank, cfg.alpha, dropout=cfg.dropout)
    adapted = net.attach_hooks(unet, TARGETS[cfg.target_modules])
    net.to(device)
    model = _AddedCond(unet, fam["pooled"]) if fam.get("pooled") else unet
    sched = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    stamps: list[float] = []

    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    def on_step(info):
        sync()
        stamps.append(time.perf_counter())

    sync()
    t0 = time.perf_counter()
    try:
        Trainer(net, DiffusersBackend(model, sched, device), data, cfg, on_step=on_step).run()
    finally:
        net.detach_hooks()
    diffs = [b - a for a, b in zip([t0, *stamps[:-1]], stamps)]
    step_s = statistics.median(diffs[2:] if len(diffs) > 2 else diffs)
    n_lora = sum(p.numel() for p in net.parameters())
    state_bytes = n_lora * (
        4 + 4 + (2 if ph.optimizer == "adamw8bit" and str(device).startswith("cuda") else 8)
    )
    del net, data
    row = {
        "family": fam["name"], "preset": cfg.preset, "rank": cfg.rank, "targets": cfg.target_modules,
        "adapted_linears": adapted, "lora_params": n_lora, "lora_state_gib": round(state_bytes / GIB, 3),
        "batch": cfg.batch_size, "grad_accum": cfg.grad_accum, "optimizer": ph.optimizer,
        "s_per_step": round(step_s, 4), "s_per_fwd_bwd": round(step_s / cfg.grad_accum, 4),
        "peak_gib": peak_gib(device), "steps_run": len(stamps),
    }  # fmt: skip
    _reset(device)
    return row


def vram_table(ranks=(16, 32, 512), target_modules: str = "attn_ff") -> list[dict]:
    """Arithmetic VRAM per family and rank: weights (fp16/bf16), LoRA fp32 + grads, AdamW moments, activations."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    rows = []
    for fam in families(toy=False):
        with init_empty_weights():
            unet = UNet2DConditionModel(**fam["config"])
        n_base = sum(p.numel() for p in unet.parameters())
        _, n16 = lora_params(unet, target_modules, 16)

        def act(peak, n_base=n_base, n16=n16):
            return None if peak is None else peak - n_base * 2 / GIB - n16 * 16 / GIB

        act_ckpt, act_none = (act(p) for p in MEASURED_PEAK_GIB[fam["name"]])
        for r in ranks:
            adapted, n_lora = lora_params(unet, target_modules, r)
            rows.append({
                "family": fam["name"], "res": fam["res"], "base_params": n_base, "base_gib_16bit": n_base * 2 / GIB,
                "rank": r, "adapted_linears": adapted, "lora_params": n_lora,
                "lora_fp32_gib": n_lora * 4 / GIB, "grads_fp32_gib": n_lora * 4 / GIB,
                "adamw_gib": n_lora * 8 / GIB, "adamw8bit_gib": n_lora * 2 / GIB,
                "act_ckpt_gib": act_ckpt, "act_no_ckpt_gib": act_none,
            })  # fmt: skip
        del unet
    return rows


def print_vram_table(rows: list[dict]) -> None:
    print("| family (res) | base params | base weights fp16/bf16 GiB | rank | LoRA params | LoRA fp32 GiB | grads "
          "fp32 GiB | AdamW state GiB (8-bit) | activations GiB, grad ckpt / none (from measured peaks) | total GiB, grad "
          "ckpt, AdamW |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        act_none = "n/m" if r["act_no_ckpt_gib"] is None else f"{r['act_no_ckpt_gib']:.2f}"
        total = (
            r["base_gib_16bit"]
            + r["lora_fp32_gib"]
            + r["grads_fp32_gib"]
            + r["adamw_gib"]
            + r["act_ckpt_gib"]
        )
        print(f"| {r['family']} ({r['res']}²) | {r['base_params'] / 1e9:.3f} B | {r['base_gib_16bit']:.2f} | "
              f"{r['rank']} | {r['lora_params'] / 1e6:.1f} M | {r['lora_fp32_gib']:.3f} | {r['grads_fp32_gib']:.3f} | "
              f"{r['adamw_gib']:.3f} ({r['adamw8bit_gib']:.3f}) | {r['act_ckpt_gib']:.2f} / {act_none} | "
              f"{total:.1f} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--toy", action="store_true", help="shrunk UNets (float32 on CPU): checks the script only"
    )
    ap.add_argument("--family", nargs="+", default=["sd15", "sdxl"], choices=["sd15", "sdxl"])
    ap.add_argument(
        "--presets", nargs="+", default=None, help="default: every preset in core/training/presets.py"
    )
    ap.add_argument(
        "--steps", type=int, default=6, help="optimizer steps per preset (the first two are dropped)"
    )
    ap.add_argument("--dtype", default=None, help="base weights: bfloat16 (CUDA default), float16, float32")
    ap.add_argument("--grad-ckpt", action="store_true", help="UNet gradient checkpointing (diffusers)")
    ap.add_argument("--vram-table", action="store_true", help="print the arithmetic VRAM table and exit")
    args = ap.parse_args(argv)
    ensure_pack_importable()
    if args.vram_table:
        print_vram_table(vram_table())
        return 0
    import torch
    from identitylock.core.training.presets import PRESETS

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    names = args.presets or list(PRESETS)
    wanted = {"sd15": "SD1.5", "sdxl": "SDXL"}
    rows = []
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), base "
          f"{str(dtype).replace('torch.', '')}, LoRA float32, grad checkpointing {'on' if args.grad_ckpt else 'off'}, "
          f"{args.steps} steps per preset{' (toy UNets, gradient accumulation capped at 2)' if args.toy else ''}", flush=True)  # fmt: skip
    for fam in families(args.toy):
        if fam["name"] not in {wanted[f] for f in args.family}:
            continue
        unet = build("UNet2DConditionModel", fam["config"], device, dtype)
        if args.grad_ckpt:
            unet.enable_gradient_checkpointing()
        unet.train()
        for name in names:
            try:
                row = run_preset(fam, unet, name, device, dtype, args.steps, 2 if args.toy else None)
            except torch.cuda.OutOfMemoryError:
                row = {"family": fam["name"], "preset": name, "error": "out of memory"}
                _reset(device)
            rows.append(row)
            print(json.dumps(row), flush=True)
        del unet
        _reset(device)
    print("\n| family | preset | rank | LoRA params | LoRA+grad+optimizer GiB | batch x accum | s/step | s/fwd+bwd | "
          "peak GiB |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"| {r['family']} | {r['preset']} | | | | | {r['error']} | | |")
            continue
        peak = "n/a (cpu)" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"| {r['family']} | {r['preset']} | {r['rank']} | {r['lora_params'] / 1e6:.2f} M | "
              f"{r['lora_state_gib']:.3f} | {r['batch']} x {r['grad_accum']} | {r['s_per_step']:.3f} | "
              f"{r['s_per_fwd_bwd']:.3f} | {peak} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
