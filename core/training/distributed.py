"""One decision for all processes: under torch.distributed (``accelerate launch``), rank 0 decides every phase
exit, phase skip, non-finite skip and stop, and broadcasts it.

Why: each rank used to decide phase exits from its own losses (different batches per rank); with
``exit_on=train`` one rank left a phase while another kept stepping, and the first all_reduce that only one of them
reached blocked both forever. The training loss fed to the convergence controller is the mean over ranks, so the
controllers' states stay the same too (rank 0's state is the one saved).
"""

from __future__ import annotations

from typing import Any

import torch


class Collective:
    """A single process: every decision is already the only one."""

    world_size = 1
    rank = 0

    def mean(self, value: float) -> float:
        return value

    def broadcast(self, obj: Any) -> Any:
        return obj

    def sync_grads(self, grads: list[torch.Tensor]) -> None:
        return None


class TorchCollective(Collective):
    """The default torch.distributed process group (gloo on CPU, nccl on GPUs)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()
        nccl = dist.get_backend() == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def mean(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM)
        return float(t.item()) / self.world_size

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def sync_grads(self, grads: list[torch.Tensor]) -> None:
        for g in grads:
            self.dist.all_reduce(g, op=self.dist.ReduceOp.SUM)
            g.div_(self.world_size)


def default_collective() -> Collective:
    """TorchCollective when a process group with several ranks is up, else the single-process one."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch built without distributed
        return Collective()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchCollective()
    return Collective()
