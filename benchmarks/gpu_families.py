"""GPU figures per model family: LoRA training s/step and seed-search rendering s/step on real-size denoisers.

Real-size random-weight denoisers of SD1.5, SDXL, FLUX.1-dev, FLUX.2-dev, Z-Image Turbo and Qwen-Image are built
on the meta device from their published configs (gpu_family_configs.py; nothing is downloaded), moved with
``to_empty`` to the GPU and initialised in place in bf16 (gpu_family_steps.py; a 32B model never exists on the
CPU). On CUDA each family runs in its own process, so a CUDA error that kills the context spares the others; a
training step that dies is retried (fresh process) with flash/efficient attention only, then with bf16 LoRA.

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
Figures and how they were taken: docs/gpu_figures.md.

    python benchmarks/gpu_families.py --device cuda --out results/      # real sizes, bf16
    python benchmarks/gpu_families.py --toy --device cpu                 # shrunk configs, float32 (CI-size)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_family_steps import (  # noqa: E402
    Clock,
    add_lora,
    build,
    mem_reset,
    n_params,
    peak_gib,
    sample_step,
    summary,
    train_step,
    vae_decode,
)  # fmt: skip

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


def configs():
    """The config module beside this script (it takes the SD1.5 UNet config from the pack)."""
    ensure_pack_importable()
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import gpu_family_configs

    return gpu_family_configs


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
            row["lora_params"] = add_lora(model, configs().LORA_TARGETS[fam["kind"]], lora_dtype=lora_dtype)
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
    specs = [s for s in configs().family_specs(args.toy) if not args.families or s["name"] in args.families]
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
