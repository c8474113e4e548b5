"""Convergence statistics, phases, presets, losses and optimizers (no model needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from identitylock.core.training.convergence import (
    ControllerConfig,
    ConvergenceController,
    Welford,
    slope_test,
)
from identitylock.core.training.phases import Phase, Schedule, seed_phases
from identitylock.core.training.presets import (
    PRESETS,
    Preset,
    TrainConfig,
    config_for,
    get_preset,
    load_schedule,
)
from scipy import stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_welford_equals_numpy(seed):
    rng = np.random.default_rng(seed)
    xs = rng.normal(5.0, 3.0, size=1000) * rng.uniform(0.1, 10)
    w = Welford()
    for i, x in enumerate(xs):
        w.update(float(x))
        if i in (1, 10, 999):
            assert w.mean == pytest.approx(xs[: i + 1].mean(), rel=1e-12, abs=1e-12)
            assert w.variance == pytest.approx(xs[: i + 1].var(ddof=1), rel=1e-10)
    state = w.state_dict()
    w2 = Welford()
    w2.load_state_dict(state)
    assert w2.mean == w.mean and w2.variance == w.variance


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_slope_and_pvalue_equal_linregress(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    x = np.sort(rng.uniform(0, 100, n))
    y = rng.normal(0, 1, n) + rng.normal(0, 0.05) * x
    ours = slope_test(y, x)
    ref = stats.linregress(x, y)
    assert ours.slope == pytest.approx(ref.slope, rel=1e-9, abs=1e-12)
    assert ours.stderr == pytest.approx(ref.stderr, rel=1e-9)
    assert ours.intercept == pytest.approx(ref.intercept, rel=1e-9, abs=1e-12)
    # scipy's two-sided p -> one-sided for H1: slope < 0
    one_sided = ref.pvalue / 2 if ref.slope < 0 else 1 - ref.pvalue / 2
    assert ours.p_decreasing == pytest.approx(one_sided, rel=1e-7, abs=1e-12)
    assert ours.n == n


def _run(ctrl: ConvergenceController, values) -> tuple[int | None, str]:
    for i, v in enumerate(values, start=1):
        d = ctrl.update(v)
        if d.exit_phase:
            return i, d.reason
    return None, ""


def test_controller_exits_on_flat_noisy_curve():
    rng = np.random.default_rng(0)
    ctrl = ConvergenceController(ControllerConfig(window=50, p_threshold=0.2, patience=3))
    ctrl.start_phase(min_steps=100, max_steps=5000)
    step, reason = _run(ctrl, 0.1 + rng.normal(0, 0.02, 5000))
    assert reason == "slope plateau"
    assert 150 <= step <= 1500
    assert ctrl.stats.plateau_windows >= 1


def test_controller_keeps_going_on_falling_curve():
    rng = np.random.default_rng(1)
    ctrl = ConvergenceController(ControllerConfig(window=50, p_threshold=0.2, patience=3))
    ctrl.start_phase(min_steps=100, max_steps=2000)
    t = np.arange(2000)
    step, reason = _run(ctrl, 1.0 - 4e-4 * t + rng.normal(0, 0.02, 2000))
    assert (step, reason) == (2000, "max steps")


def test_controller_respects_min_steps_and_state_roundtrip():
    rng = np.random.default_rng(2)
    flat = 0.5 + rng.normal(0, 0.01, 3000)
    ctrl = ConvergenceController(ControllerConfig(window=20, patience=2))
    ctrl.start_phase(min_steps=1000, max_steps=3000)
    step, _ = _run(ctrl, flat)
    assert step >= 1000
    # state round trip mid-stream gives identical decisions
    a = ConvergenceController(ControllerConfig(window=20, patience=2))
    a.start_phase(10, 3000)
    for v in flat[:137]:
        a.update(v)
    b = ConvergenceController(ControllerConfig(window=20, patience=2))
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for v in flat[137:400]:
        da, db = a.update(v), b.update(v)
        assert (da.exit_phase, da.reason, da.plateau_windows) == (
            db.exit_phase,
            db.reason,
            db.plateau_windows,
        )


def test_seed_phases_as_data():
    ph = seed_phases()
    assert [(p.name, p.lr, p.alpha, p.loss, p.optimizer) for p in ph] == [
        ("COARSE", 1e-4, 8, "mse", "adamw"),
        ("MID", 3e-5, 4, "huber", "adamw"),
        ("MID_FINE", 1e-6, 2, "charbonnier", "adamp"),
        ("FINAL_FINE", 5e-7, 1, "charbonnier", "adamp"),
    ]
    s = Schedule.from_json(json.dumps(Schedule(ph).to_dict()))
    assert s.phases == ph


def test_phase_validation_and_lr_schedules():
    with pytest.raises(ValueError, match="loss"):
        Phase("X", lr=1e-4, alpha=1, loss="nope")
    with pytest.raises(ValueError, match="unknown field"):
        Phase.from_dict({"name": "X", "lr": 1e-4, "alpha": 1, "bogus": 1})
    p = Phase(
        "C", lr=1.0, alpha=1, scheduler="cosine_with_restarts", restarts=2, max_steps=100, warmup_steps=0
    )
    assert p.lr_at(0) == pytest.approx(1.0)
    assert p.lr_at(25) == pytest.approx(0.5, abs=1e-9)
    assert p.lr_at(50) == pytest.approx(1.0)  # restart
    w = Phase("W", lr=2.0, alpha=1, warmup_steps=4)
    assert [w.lr_at(i) for i in range(5)] == [0.5, 1.0, 1.5, 2.0, 2.0]


def test_presets_and_custom_json(tmp_path):
    assert {"EXP_FACIAL_UNET_FOCUS_LOW", "EXP_FACIAL_UNET_FOCUS_MID", "EXP_FACIAL_UNET_FOCUS_HIGH"} <= set(
        PRESETS
    )
    low = PRESETS["EXP_FACIAL_UNET_FOCUS_LOW"]
    assert (low.rank, low.alpha, low.grad_accum, low.scheduler, low.target_modules) == (
        512, 512, 8, "cosine_with_restarts", "attn_ff",
    )  # fmt: skip
    ipa = PRESETS["LORA_IPADAPTER_CHARACTER"]
    assert (ipa.rank, ipa.alpha, ipa.dropout, ipa.target_modules, ipa.warmup_steps) == (
        32,
        32,
        0.1,
        "attn",
        100,
    )
    cfg = config_for("EXP_FACIAL_UNET_FOCUS_MID", num_images=70, adaptive=False)
    assert cfg.schedule.phases[0].max_steps == 4 * 9 and not cfg.schedule.adaptive
    cfg2 = config_for("EXP_FACIAL_UNET_FOCUS_MID", num_images=70)
    assert [p.name for p in cfg2.schedule.phases][0] == "COARSE"
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg2.to_dict()))) == cfg2
    f = tmp_path / "p.json"
    f.write_text(json.dumps({**Preset("MINE", rank=8, alpha=4, lr=1e-4).to_dict()}))
    assert get_preset(str(f)).rank == 8
    ph = tmp_path / "phases.json"
    ph.write_text(json.dumps([{"name": "ONLY", "lr": 1e-4, "alpha": 2, "loss": "l1"}]))
    assert load_schedule(str(ph)).phases[0].loss == "l1"
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("NOPE")


def test_losses_and_optimizers():
    torch = pytest.importorskip("torch")
    from identitylock.core.training.losses import make_loss
    from identitylock.core.training.optimizers import make_optimizer
    from pytorch_optimizer import AdamP

    a, b = torch.tensor([0.0, 2.0]), torch.tensor([0.0, 0.0])
    assert float(make_loss("mse")(a, b)) == pytest.approx(2.0)
    assert float(make_loss("huber")(a, b)) == pytest.approx(0.75)
    assert float(make_loss("charbonnier", charbonnier_eps=1e-3)(a, b)) == pytest.approx(
        (np.sqrt(4 + 1e-6) - 1e-3) / 2, rel=1e-6
    )
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer("adamp", p, 1e-3), AdamP)
    assert isinstance(make_optimizer("adamw8bit", p, 1e-3, device="cpu"), torch.optim.AdamW)
