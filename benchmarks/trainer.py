"""Trainer benchmark (CPU): the adaptive schedule against the schedule people actually run.

Baseline: AdamW, constant lr 1e-4, 1,600 steps at batch 1 — kohya sd-scripts' defaults (``--max_train_steps``
1600, ``--train_batch_size`` 1; lr 1e-4 is the usual LoRA setting there and ai-toolkit's default; ai-toolkit's
character examples run 2,000 steps). Adaptive: the pack's default four phases (COARSE 1e-4 / MID 3e-5 / MID_FINE
1e-6 / FINAL_FINE 5e-7, COARSE min 150 steps, every phase max 2,000) with the default controller and validation
every 50 steps (the node's and CLI's default). Same LoRA (rank 8, attention + feed-forward), batch, data and seed
for both; both run through the pack's Trainer.

Task: the tiny random-weight SD-shaped UNet (core/training/tiny.py) on real face crops: the lisa_* and london*
photos of tests/fixtures/faces (the only ones cleared for generative use), centre-cropped to 64 px and encoded by
the tiny VAE (8x8 latents). Validation is held out by source photo: per seed, 20 % of the photos (3 of 16) are
drawn and only the others (plus their flipped / color-jittered copies) train. The split, the LoRA init, the batches
and the noise all follow the seed. Scale: a 64 px toy UNet, not SD1.5 at 512 px, so the absolute losses and step
counts say nothing about a real run's quality; what is compared is the two schedules on the same problem.

Seeds: 100 and up. Seeds 0-29 were used to choose the exit rule (0-9 tuned, 10-29 checked, and the earlier tiny-UNet
comparison ran seed 0), so they are never reported here.

Printed per seed: baseline best and final validation loss; steps at which each run first gets within 2 % of the
baseline's best validation loss; the adaptive run's total steps and final validation loss / the baseline's final
one. Target (issue 12): adaptive ends at <= 1.02x the baseline's final validation loss in <= 60 % of its steps on
at least 80 % of the seeds. No identity probe is wired (the toy UNet renders no faces), so no drift is printed.
The controller's own cost is measured on a short tiny-UNet run first.

    python benchmarks/trainer.py [--seeds 100 101 ...] [--baseline-steps 1600] [--faces tests/fixtures/faces]

Per model family (steps/s on the tiny model and controller overhead, in a real ComfyUI; benchmarks/trainer_families.py):

    python benchmarks/trainer.py --family all --comfyui /path/to/ComfyUI [--steps 60]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from identitylock.core.training.convergence import ControllerConfig  # noqa: E402
from identitylock.core.training.diffusers_backend import DiffusersBackend  # noqa: E402
from identitylock.core.training.network import LoRANetwork  # noqa: E402
from identitylock.core.training.phases import Phase, Schedule, seed_phases  # noqa: E402
from identitylock.core.training.presets import TARGETS, TrainConfig  # noqa: E402
from identitylock.core.training.trainer import TrainData, Trainer, TrainResult  # noqa: E402

TUNING_SEEDS = range(30)  # used to choose the rule: never reported
DEFAULT_SEEDS = list(range(100, 108))
BASELINE_STEPS = 1600  # kohya sd-scripts' default --max_train_steps
RANK = 8
VAL_EVERY = 50  # node/CLI default
TOL = 0.02


def bench_controller(steps: int) -> None:
    """Steps/s and the controller's share of the step time on the tiny UNet (random latents, short run)."""
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
    try:
        res = Trainer(net, DiffusersBackend(c["unet"], c["scheduler"]), data, cfg).run()
    finally:
        net.detach_hooks()
    print(f"[controller] tiny UNet, {res.steps} steps, {res.steps / res.seconds:.1f} steps/s, controller "
          f"{1000 * res.controller_seconds / res.steps:.3f} ms/step = "
          f"{100 * res.controller_seconds / res.seconds:.3f} % of step time")  # fmt: skip


def face_files(faces_dir: Path) -> list[Path]:
    files = sorted(f for f in faces_dir.glob("*.jpg") if f.name.startswith(("lisa_", "london")))
    if len(files) < 5:
        raise SystemExit(f"needs the lisa_*/london* photos in {faces_dir} (found {len(files)})")
    return files


def split_by_source(files: list[Path], seed: int, val_fraction: float = 0.2) -> tuple[list[Path], list[Path]]:
    """Hold out whole source photos: no photo has a variant on both sides."""
    order = np.random.default_rng(seed).permutation(len(files))
    n_val = min(len(files) - 1, max(1, round(len(files) * val_fraction)))
    return sorted(files[i] for i in order[n_val:]), sorted(files[i] for i in order[:n_val])


def face_data(comps: dict, train_files: list[Path], val_files: list[Path], seed: int) -> TrainData:
    """Centre 64 px crops; the training photos get flipped and color-jittered copies, the held-out ones none."""
    from identitylock.core.images import load_image
    from identitylock.core.training import dataset as ds
    from identitylock.core.training import diffusers_backend as db

    def crops(files):
        return [ds.resize_square(ds.centre_square(load_image(f)), 64) for f in files]

    train, src = ds.augment(crops(train_files), flip=True, jitter=0.1, seed=seed)
    caps = ds.make_captions(len(train_files) + len(val_files), "lsaperson")
    with torch.no_grad():
        return TrainData(
            latents=db.encode_images(comps["vae"], train),
            cond=db.encode_text(comps["tokenizer"], comps["text_encoder"], [caps[i] for i in src]),
            val_latents=db.encode_images(comps["vae"], crops(val_files)),
            val_cond=db.encode_text(comps["tokenizer"], comps["text_encoder"], caps[len(train_files) :]),
        )


def train(comps: dict, data: TrainData, schedule: Schedule, seed: int) -> TrainResult:
    net = LoRANetwork(RANK, 8, seed=seed)
    net.attach_hooks(comps["unet"], TARGETS["attn_ff"])
    cfg = TrainConfig(rank=RANK, alpha=8, batch_size=1, schedule=schedule, seed=seed, val_every=VAL_EVERY,
                      controller=ControllerConfig())  # fmt: skip
    try:
        return Trainer(net, DiffusersBackend(comps["unet"], comps["scheduler"]), data, cfg).run()
    finally:
        net.detach_hooks()


def first_within(val_losses: list[tuple[int, float]], target: float, tol: float = TOL) -> int | None:
    return next((step for step, v in val_losses if v <= target * (1 + tol)), None)


@dataclass
class SeedResult:
    seed: int
    held_out: list[str]
    base_best: float
    base_final: float
    base_reach: int | None
    ada_reach: int | None
    ada_steps: int
    ada_final: float
    base_steps: int
    text: str = ""

    @property
    def ratio(self) -> float:
        return self.ada_final / self.base_final

    @property
    def met(self) -> bool:
        return self.ratio <= 1 + TOL and self.ada_steps <= 0.6 * self.base_steps


def compare(seed: int, files: list[Path], baseline_steps: int, phase_max: int = 2000) -> SeedResult:
    from identitylock.core.training.tiny import tiny_components

    comps = tiny_components(0)  # the same random "base model" for every seed; the seed drives the rest
    train_files, val_files = split_by_source(files, seed)
    data = face_data(comps, train_files, val_files, seed)
    t0 = time.time()
    base = train(comps, data, Schedule([Phase("BASELINE", lr=1e-4, alpha=8, loss="mse", optimizer="adamw",
                                              min_steps=baseline_steps, max_steps=baseline_steps)],
                                       adaptive=False), seed)  # fmt: skip
    ada = train(
        comps,
        data,
        Schedule(seed_phases(min_steps=min(150, phase_max), max_steps=phase_max), adaptive=True),
        seed,
    )
    best = min(v for _, v in base.val_losses)
    r = SeedResult(
        seed, [f.stem for f in val_files], best, base.final_val_loss, first_within(base.val_losses, best),
        first_within(ada.val_losses, best), ada.steps, ada.final_val_loss, base.steps,
    )  # fmt: skip

    def at(step):
        return "never" if step is None else f"{step} ({100 * step / base.steps:.0f} %)"

    r.text = (
        f"[seed {seed}] {data.latents.shape[0]} training rows from {len(train_files)} photos; held out "
        f"{', '.join(r.held_out)}; {time.time() - t0:.0f} s\n"
        f"  baseline {base.steps} steps: val {base.val_losses[0][1]:.4f} -> best {best:.4f}, final "
        f"{base.final_val_loss:.4f}; within 2 % of its best at step {at(r.base_reach)}\n"
        f"  adaptive: within 2 % of the baseline's best at step {at(r.ada_reach)}; total {ada.steps} steps "
        f"({100 * ada.steps / base.steps:.0f} % of the baseline's); final val {ada.final_val_loss:.4f} = "
        f"{r.ratio:.4f}x the baseline's final; target {'met' if r.met else 'NOT met'}\n  "
        + "\n  ".join(e.message() + (f"; {e.val_test}" if e.val_test else "") for e in ada.exits)
        + (f"\n  {ada.skip_reason}" if ada.skip_reason else "")
    )
    return r


def _compare_job(job: tuple[int, list[Path], int, int, int]) -> SeedResult:
    seed, files, baseline_steps, phase_max, threads = job
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    return compare(seed, files, baseline_steps, phase_max)


def summary(results: list[SeedResult]) -> None:
    n = len(results)
    print(f"\nSUMMARY over {n} seeds ({', '.join(str(r.seed) for r in results)}; seeds 0-29 were used for tuning "
          "and are not reported)")  # fmt: skip
    print("seed | baseline best / final | baseline within 2 % | adaptive within 2 % | adaptive steps | "
          "adaptive final | ratio | target")  # fmt: skip
    for r in results:
        print(f"{r.seed} | {r.base_best:.4f} / {r.base_final:.4f} | {r.base_reach} | {r.ada_reach} | "
              f"{r.ada_steps} ({100 * r.ada_steps / r.base_steps:.0f} %) | {r.ada_final:.4f} | {r.ratio:.4f} | "
              f"{'met' if r.met else 'not met'}")  # fmt: skip
    ratios = [r.ratio for r in results]
    steps = [r.ada_steps / r.base_steps for r in results]
    met = sum(r.met for r in results)
    print(f"final val ratio adaptive/baseline: mean {np.mean(ratios):.4f}, min {min(ratios):.4f}, max "
          f"{max(ratios):.4f}; adaptive steps: mean {100 * np.mean(steps):.0f} %, min {100 * min(steps):.0f} %, "
          f"max {100 * max(steps):.0f} % of the baseline's")  # fmt: skip
    print(f"TARGET (<= {1 + TOL:.2f}x the baseline's final val loss in <= 60 % of its steps on >= 80 % of seeds): "
          f"{met}/{n} seeds -> {'MET' if met >= 0.8 * n else 'NOT MET'}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS)
    ap.add_argument("--baseline-steps", type=int, default=BASELINE_STEPS)
    ap.add_argument(
        "--phase-max-steps", type=int, default=2000, help="each adaptive phase's max_steps (default 2000)"
    )
    ap.add_argument("--controller-steps", type=int, default=30)
    ap.add_argument(
        "--faces", type=Path, default=Path(__file__).resolve().parents[1] / "tests/fixtures/faces"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads per seed")
    ap.add_argument("--jobs", type=int, default=1, help="seeds run in parallel (separate processes)")
    ap.add_argument("--family", nargs="+", help="model families (core/families.py keys, or 'all'): per-family "
                    "steps/s and controller overhead on ComfyUI toys; needs --comfyui")  # fmt: skip
    ap.add_argument("--comfyui", help="a ComfyUI 0.8 checkout (for --family)")
    ap.add_argument("--steps", type=int, default=60, help="steps per family (for --family)")
    args = ap.parse_args()
    if args.family:
        if not args.comfyui:
            ap.error("--family needs --comfyui PATH (the toys are built with ComfyUI's own model classes)")
        from identitylock.core.families import FAMILIES
        from trainer_families import run  # type: ignore[import-not-found]

        run(list(FAMILIES) if args.family == ["all"] else args.family, args.comfyui, args.steps, args.faces)
        return
    tuned = sorted(set(args.seeds) & set(TUNING_SEEDS))
    if tuned:
        print(f"WARNING: seeds {tuned} were used to tune the exit rule; their results are not an honest test")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    bench_controller(args.controller_steps)
    files = face_files(args.faces)
    jobs = [(seed, files, args.baseline_steps, args.phase_max_steps, args.threads) for seed in args.seeds]
    results = []
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for r in pool.imap(_compare_job, jobs):
                print(r.text, flush=True)
                results.append(r)
    else:
        for job in jobs:
            results.append(_compare_job(job))
            print(results[-1].text, flush=True)
    summary(results)
    print(
        f"benchmark wall time {time.time() - t0:.0f} s ({args.jobs} process(es) x {args.threads} torch thread(s))"
    )


if __name__ == "__main__":
    main()
