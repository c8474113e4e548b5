"""Issue 12 item 5: under torch.distributed every rank takes the same decisions (rank 0's) and none hangs.

Regression: each rank decided phase exits from its own losses, so with exit_on=train one rank left a phase (and
the run) while the other still stepped and waited forever in all_reduce. Two CPU processes on gloo, deliberately
different losses per rank (tests/distributed_tasks.py); bounded by a timeout (gloo's own is 30 s).
"""

from __future__ import annotations

import json
import time

import pytest
import torch.multiprocessing as mp
from identitylock.tests import distributed_tasks


@pytest.mark.slow
def test_two_gloo_ranks_take_the_same_decisions_and_finish(tmp_path):
    ctx = mp.start_processes(
        distributed_tasks.train_rank, args=(2, str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 240
    try:
        while not ctx.join(timeout=5):
            assert time.monotonic() < deadline, "the two ranks did not finish within 240 s (hung)"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["exits"] and r0["exits"] == r1["exits"] and r0["skipped"] == r1["skipped"]
    assert r0["steps"] == r1["steps"]
    assert r0["losses"] == r1["losses"]  # the controller is fed the mean over ranks on both
    assert r0["weights"] == r1["weights"]  # same synced gradients, same steps: same LoRA
