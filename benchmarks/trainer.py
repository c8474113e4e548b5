"""Trainer benchmark (CPU): controller overhead, steps/s, and adaptive vs fixed 2,000-step schedule.

Two models, both through the real Trainer loop (phases, controller, validation, optimizers, LoRA hooks):
- the tiny randomly initialised SD-shaped UNet from core/training/tiny.py (steps/s and controller overhead on a
  real UNet forward/backward; a short run),
- a surrogate denoiser (frozen random 3-layer MLP eps-predictor with LoRA on its Linear layers, DDPM noise,
  synthetic "identity" latents) for the adaptive-vs-fixed comparison, because 2,000+ tiny-UNet steps take too
  long on shared CPUs.

Adaptive-vs-fixed: the fixed schedule is the seed's COARSE setting (lr 1e-4, alpha 8, AdamW, MSE) for 2,000
steps; its final validation loss is V. We report the first step at which the adaptive 4-phase run's validation
loss is within 2 % of V (validation every 10 steps, fixed timesteps and noise), the steps the adaptive run
used in total, and how far its final validation loss ends above V. Seeds 0-9 by default; the exit rule
(min_val_gain 0.02 over the phase's remaining budget) was chosen on seeds 0-9 and checked on 10-29.

The controller overhead target (<= 1 % of step time) is judged on the tiny UNet's step; the surrogate's steps take
~3 ms, so the same ~0.05-0.09 ms of controller work is a larger share there (printed for completeness).

    python benchmarks/trainer.py [--unet-steps 30] [--seeds 0 1 2 ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from identitylock.core.training.convergence import ControllerConfig  # noqa: E402
from identitylock.core.training.diffusers_backend import DiffusersBackend  # noqa: E402
from identitylock.core.training.network import LoRANetwork  # noqa: E402
from identitylock.core.training.phases import Phase, Schedule, seed_phases  # noqa: E402
from identitylock.core.training.presets import TARGETS, TrainConfig  # noqa: E402
from identitylock.core.training.trainer import TrainData, Trainer  # noqa: E402
from torch import nn  # noqa: E402


class _Out:
    def __init__(self, sample):
        self.sample = sample


class SurrogateDenoiser(nn.Module):
    """eps(x_t, t, cond) with a frozen random MLP; LoRA goes on fc1/fc2/fc3."""

    def __init__(self, dim=256, cond_dim=16, hidden=384, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(dim + cond_dim + 1, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, dim)
        for m in (self.fc1, self.fc2, self.fc3):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight.shape[1] ** 0.5)
                m.bias.zero_()

    def forward(self, x, t, cond):
        b = x.shape[0]
        h = torch.cat([x.reshape(b, -1), cond.reshape(b, -1), (t.float() / 1000).view(b, 1)], dim=1)
        h = self.fc3(torch.nn.functional.silu(self.fc2(torch.nn.functional.silu(self.fc1(h)))))
        return _Out(h.view_as(x))


def surrogate_data(seed=0, n_train=12, n_val=3):
    g = torch.Generator().manual_seed(seed + 100)
    base = torch.randn(1, 4, 8, 8, generator=g)
    lat = base + 0.3 * torch.randn(n_train + n_val, 4, 8, 8, generator=g)
    cond = torch.randn(1, 16, generator=g).repeat(n_train + n_val, 1)
    return TrainData(lat[:n_train], cond[:n_train], lat[n_train:], cond[n_train:])


def run_surrogate(schedule: Schedule, seed: int, rank=8):
    from diffusers import DDPMScheduler

    model = SurrogateDenoiser(seed=seed)
    net = LoRANetwork(rank, 8, seed=seed)
    net.attach_hooks(model, ["fc1", "fc2", "fc3"])
    sched = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    cfg = TrainConfig(
        rank=rank, alpha=8, batch_size=4, schedule=schedule, seed=seed, val_every=10,
        controller=ControllerConfig(window=50, patience=3, p_threshold=0.5, significance=0.05),
    )  # fmt: skip
    tr = Trainer(net, DiffusersBackend(model, sched), surrogate_data(seed), cfg)
    return tr.run()


def first_within(val_losses, target, tol=0.02):
    for step, v in val_losses:
        if v <= target * (1 + tol):
            return step
    return None


def bench_unet(steps: int) -> None:
    from identitylock.core.training.tiny import tiny_components

    c = tiny_components(0)
    g = torch.Generator().manual_seed(0)
    data = TrainData(
        torch.randn(8, 4, 8, 8, generator=g), torch.randn(8, 77, 32, generator=g),
        torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g),
    )  # fmt: skip
    net = LoRANetwork(4, 4)
    net.attach_hooks(c["unet"], TARGETS["attn_ff"])
    cfg = TrainConfig(
        rank=4, alpha=4, schedule=Schedule([Phase("COARSE", lr=1e-3, alpha=4, min_steps=steps, max_steps=steps)]),
        controller=ControllerConfig(window=10), val_every=0,
    )  # fmt: skip
    res = Trainer(net, DiffusersBackend(c["unet"], c["scheduler"]), data, cfg).run()
    print(f"[tiny UNet] steps {res.steps}, {res.steps / res.seconds:.2f} steps/s, "
          f"controller {1000 * res.controller_seconds / res.steps:.3f} ms/step = "
          f"{100 * res.controller_seconds / res.seconds:.3f} % of step time")  # fmt: skip


def face_data(components, faces_dir: Path):
    """lisa_* and london* photos (consented for generative use), centre-cropped to 64 px, encoded by the tiny VAE."""
    from identitylock.core.images import load_image
    from identitylock.core.training import dataset as ds
    from identitylock.core.training import diffusers_backend as db

    files = sorted(f for f in faces_dir.glob("*.jpg") if f.name.startswith(("lisa_", "london")))
    if len(files) < 5:
        raise SystemExit(
            f"--unet-compare-seeds needs the lisa_*/london* photos in {faces_dir} (found {len(files)})"
        )
    crops = [ds.resize_square(ds.centre_square(load_image(f)), 64) for f in files]
    c = components
    return ds.prepare_data(
        crops, ds.make_captions(len(crops), "lsaperson"),
        lambda ims: db.encode_images(c["vae"], ims),
        lambda caps: db.encode_text(c["tokenizer"], c["text_encoder"], caps),
        flip=True, jitter=0.1,
    )  # fmt: skip


def unet_compare(seed: int, faces_dir: Path) -> None:
    """Adaptive vs fixed 2,000 steps on the tiny UNet itself, trained on real face crops (slow: ~4,000 steps)."""
    from identitylock.core.training.tiny import tiny_components

    comps = tiny_components(0)
    data = face_data(comps, faces_dir)
    results = {}
    for name, schedule in (
        ("fixed", Schedule([Phase("FIXED_COARSE", lr=1e-4, alpha=8, min_steps=2000, max_steps=2000)], adaptive=False)),
        ("adaptive", Schedule(seed_phases(min_steps=150, max_steps=2000), adaptive=True)),
    ):  # fmt: skip
        net = LoRANetwork(8, 8, seed=seed)
        net.attach_hooks(comps["unet"], TARGETS["attn_ff"])
        cfg = TrainConfig(rank=8, alpha=8, batch_size=4, schedule=schedule, seed=seed, val_every=10,
                          controller=ControllerConfig(window=50, patience=3, p_threshold=0.5))  # fmt: skip
        try:
            results[name] = Trainer(net, DiffusersBackend(comps["unet"], comps["scheduler"]), data, cfg).run()
        finally:
            net.detach_hooks()
    fixed, adaptive = results["fixed"], results["adaptive"]
    target = fixed.final_val_loss
    reach, fixed_reach = first_within(adaptive.val_losses, target), first_within(fixed.val_losses, target)
    print(
        f"[tiny UNet on {data.latents.shape[0]} augmented face crops, seed {seed}] fixed 2000: val "
        f"{fixed.val_losses[0][1]:.4f} -> {target:.4f} (itself within 2 % only at step {fixed_reach}); adaptive: "
        f"within 2 % at {reach}, total {adaptive.steps} steps, final val {adaptive.final_val_loss:.4f} "
        f"({100 * (adaptive.final_val_loss / target - 1):+.2f} %)\n  " + "\n  ".join(e.message() for e in adaptive.exits)
        + (f"\n  {adaptive.skip_reason}" if adaptive.skip_reason else "")
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--unet-steps", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--unet-compare-seeds", type=int, nargs="*", default=[],
                    help="also compare adaptive vs fixed on the tiny UNet with real face crops (slow)")  # fmt: skip
    ap.add_argument(
        "--faces", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    t0 = time.time()
    bench_unet(args.unet_steps)
    ratios, totals, gaps = [], [], []
    for seed in args.seeds:
        fixed = run_surrogate(
            Schedule([Phase("FIXED_COARSE", lr=1e-4, alpha=8, loss="mse", optimizer="adamw", min_steps=2000, max_steps=2000)], adaptive=False),
            seed,
        )  # fmt: skip
        adaptive = run_surrogate(Schedule(seed_phases(min_steps=150, max_steps=2000), adaptive=True), seed)
        target = fixed.final_val_loss
        reach = first_within(adaptive.val_losses, target)
        fixed_reach = first_within(fixed.val_losses, target)
        ratios.append(reach / 2000 if reach else float("nan"))
        totals.append(adaptive.steps)
        gap = 100 * (adaptive.final_val_loss / target - 1)
        gaps.append(gap)
        print(
            f"[surrogate seed {seed}] fixed 2000 steps: final val {target:.5f} ({2000 / fixed.seconds:.0f} steps/s, "
            f"controller {100 * fixed.controller_seconds / fixed.seconds:.2f} % of time; fixed itself within 2 % at step "
            f"{fixed_reach})\n"
            f"  adaptive: steps to within 2 % of that: {reach} "
            f"({'%.0f %%' % (100 * reach / 2000) if reach else 'not reached'} of 2000); "
            f"total steps the adaptive run took: {adaptive.steps} ({100 * adaptive.steps / 2000:.0f} % of 2000); "
            f"final val {adaptive.final_val_loss:.5f} ({gap:+.2f} % vs fixed); controller "
            f"{1000 * adaptive.controller_seconds / adaptive.steps:.3f} ms/step = "
            f"{100 * adaptive.controller_seconds / adaptive.seconds:.2f} % of time\n  "
            + "\n  ".join(
                e.message()
                + (
                    f"; val {e.val_start:.5f} -> {e.val_loss:.5f} (p={e.val_p_value:.2f})"
                    if e.val_p_value is not None
                    else ""
                )
                for e in adaptive.exits
            )  # fmt: skip
            + (f"\n  {adaptive.skip_reason}" if adaptive.skip_reason else "")
        )
    ok = [r for r in ratios if r == r]
    print(f"\nSUMMARY over {len(ratios)} seeds ({', '.join(map(str, args.seeds))})")
    if ok:
        print(f"adaptive steps to within 2 % of fixed-2000 val loss: {len(ok)}/{len(ratios)} seeds reached it; "
              f"mean {100 * sum(ok) / len(ok):.0f} %, max {100 * max(ok):.0f} % of 2000 (target <= 50 %)")  # fmt: skip
    else:
        print(f"adaptive never got within 2 % of the fixed-2000 val loss (0/{len(ratios)} seeds)")
    print(f"total steps the adaptive run took: mean {sum(totals) / len(totals):.0f} "
          f"({100 * sum(totals) / len(totals) / 2000:.0f} % of the fixed 2000), min {min(totals)}, max {max(totals)}; "
          f"final val vs fixed: mean {sum(gaps) / len(gaps):+.2f} %, worst {max(gaps):+.2f} %")  # fmt: skip
    for seed in args.unet_compare_seeds:
        unet_compare(seed, args.faces)
    print(f"benchmark wall time {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
