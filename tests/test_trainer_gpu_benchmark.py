"""benchmarks/trainer_gpu.py in its toy mode (CPU, shrunk UNets): every preset runs through the pack's Trainer on
both UNet families and gets a row, and the arithmetic VRAM table matches the published parameter counts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def trainer_gpu():
    sys.path.insert(0, str(BENCH))
    try:
        import trainer_gpu

        yield trainer_gpu
    finally:
        sys.path.remove(str(BENCH))


def test_toy_mode_runs_every_preset_on_both_families(trainer_gpu, capsys):
    import torch
    from identitylock.core.training.presets import PRESETS

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster and spares the shared cores
    try:
        assert trainer_gpu.main(["--toy", "--device", "cpu", "--steps", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {(r["family"], r["preset"]) for r in rows} == {(f, p) for f in ("SD1.5", "SDXL") for p in PRESETS}
    for r in rows:
        assert r["steps_run"] == 1 and r["s_per_step"] > 0 and r["lora_params"] > 0 and r["peak_gib"] is None
        assert r["rank"] == PRESETS[r["preset"]].rank and r["grad_accum"] <= 2
    assert "| SDXL | TINY_TEST | 4 |" in out


def test_vram_table_counts_match_the_released_models(trainer_gpu):
    rows = {(r["family"], r["rank"]): r for r in trainer_gpu.vram_table()}
    assert round(rows["SD1.5", 16]["base_params"] / 1e9, 3) == 0.860  # the published SD1.5 UNet
    assert round(rows["SDXL", 16]["base_params"] / 1e9, 3) == 2.567
    # rank 512 on SD1.5 attn+ff: the 191.5 M parameters issue 12 quotes; LoRA counts scale with the rank
    assert round(rows["SD1.5", 512]["lora_params"] / 1e6, 1) == 191.5
    assert rows["SDXL", 32]["lora_params"] == 2 * rows["SDXL", 16]["lora_params"]
    assert rows["SD1.5", 16]["adamw_gib"] == pytest.approx(2 * rows["SD1.5", 16]["lora_fp32_gib"])
