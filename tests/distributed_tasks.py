"""Test-only: one rank of a two-process gloo training run (a module of its own: spawned processes import it by name).

Each rank sees deliberately different training losses (rank 1's are noisy and flat, rank 0's fall), so with
``exit_on=train`` the ranks' own convergence tests would leave phases at different steps.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path


def train_rank(rank: int, world: int, folder: str) -> None:
    import torch
    import torch.distributed as dist
    from identitylock.core.training.convergence import ControllerConfig
    from identitylock.core.training.network import LoRANetwork
    from identitylock.core.training.phases import Phase, Schedule
    from identitylock.core.training.presets import TrainConfig
    from identitylock.core.training.trainer import Trainer
    from identitylock.tests.test_training_schedule import _Backend, _data, _Denoiser

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{folder}/store",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=30),
    )

    class Noisy(_Backend):
        """Rank 1: a large, random, gradient-free term in its loss (flat and noisy training curve)."""

        def predict(self, latents, cond, noise, u):
            pred, target = super().predict(latents, cond, noise, u)
            if rank == 1 and torch.is_grad_enabled():
                pred = pred + (3.0 * torch.randn(pred.shape)).detach()
            return pred, target

    def grad_sync(grads):  # what accelerate_grad_sync gives the trainer
        for g in grads:
            dist.all_reduce(g, op=dist.ReduceOp.SUM)
            g.div_(world)

    model = _Denoiser()
    net = LoRANetwork(4, 4, seed=0)
    net.attach_hooks(model, ["lin"])
    phases = [Phase(n, lr=lr, alpha=4, min_steps=0, max_steps=120, weight_decay=0)
              for n, lr in (("COARSE", 3e-2), ("MID", 1e-2), ("FINE", 3e-3))]  # fmt: skip
    cfg = TrainConfig(
        rank=4, alpha=4, batch_size=4, val_every=10, schedule=Schedule(phases, adaptive=True),
        controller=ControllerConfig(window=10, patience=2, p_threshold=0.5, exit_on="train"),
    )  # fmt: skip
    res = Trainer(net, Noisy(model), _data(), cfg, grad_sync=grad_sync, rank_offset=rank).run()
    out = {
        "steps": res.steps,
        "exits": [(e.phase, e.step, e.reason) for e in res.exits],
        "skipped": res.skipped,
        "losses": res.losses,
        "weights": [float(v.double().sum()) for v in net.state_dict().values()],
    }
    Path(folder, f"rank{rank}.json").write_text(json.dumps(out))
    dist.barrier()
    dist.destroy_process_group()
