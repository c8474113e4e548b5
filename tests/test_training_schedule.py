"""Schedule-level convergence: flat phases end after a short minimum, and a phase that did not improve the
validation loss (paired t-test over the held-out images) ends the schedule (remaining lower-lr phases skipped). Small linear denoiser,
CPU, a few seconds."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from identitylock.core.training.convergence import (
    ControllerConfig,
    ConvergenceController,
    improvement_test,
)
from identitylock.core.training.network import LoRANetwork  # noqa: E402
from identitylock.core.training.phases import Phase, Schedule, seed_phases
from identitylock.core.training.presets import TrainConfig  # noqa: E402
from identitylock.core.training.trainer import TrainData, Trainer  # noqa: E402
from scipy import stats


def _rel_gain(before, after, strata):
    b, a = before.reshape(-1, strata).mean(1), after.reshape(-1, strata).mean(1)
    return (b - a) / b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_improvement_test_is_a_paired_t_test_over_images(seed):
    rng = np.random.default_rng(seed)
    strata, m = 5, 4
    level = np.tile(
        np.linspace(0.5, 2.0, strata), m
    )  # timestep levels differ a lot; images spread around them
    before = level + rng.normal(0, 0.05, strata * m)
    after = before * (1 - rng.normal(0.03, 0.01, strata * m))
    for margin in (0.0, 0.02, 0.05):
        res = improvement_test(before, after, strata, margin)
        ref = stats.ttest_1samp(_rel_gain(before, after, strata), margin, alternative="greater")
        assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9) and res.df == m - 1 == ref.df
    assert res.unit == "images" and res.improvement == pytest.approx(before.mean() - after.mean(), rel=1e-9)
    assert improvement_test(before, before * 1.1, strata).p_value > 0.99  # worse on every image
    # a tiny but perfectly consistent gain (what lr 1e-6 does with fixed noise) passes margin 0, not a 2 % margin
    tiny = before * (1 - 3e-5 * (1 + 0.1 * rng.random(before.size)))
    assert improvement_test(before, tiny, strata).p_value < 0.01
    assert improvement_test(before, tiny, strata, 0.02).p_value > 0.99
    # one held-out image: the units are its timesteps (df = 4), a statement about that image only
    one = improvement_test(before[:strata], after[:strata], strata)
    ref1 = stats.ttest_1samp((before[:strata] - after[:strata]) / before[:strata], 0.0, alternative="greater")
    assert (
        one.unit == "timesteps"
        and one.df == strata - 1
        and one.p_value == pytest.approx(ref1.pvalue, rel=1e-9)
    )
    assert improvement_test([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    assert (
        "paired t over 4 images, gain > 2 %: df=3" in improvement_test(before, after, strata, 0.02).describe()
    )
    with pytest.raises(ValueError):
        improvement_test([1.0], [0.5])


def test_paired_test_disagrees_with_the_old_unpaired_z_test():
    """Regression (issue 12, item 6): the old skip test divided the gain by the images' spread, as if before and
    after were independent samples, and read it on a normal law at ~2 degrees of freedom. Three held-out images
    whose levels differ a lot and which all improve by about 3 %: the old z-test called that noise (p ~ 0.3), the
    paired test (scipy.stats.ttest_1samp of the per-image relative gains, df=2) finds it. And the other way: a gain
    carried by one image of three with tight levels was "significant" for the z-test but is not for the paired
    t-test at df=2."""
    strata = 5
    t = np.linspace(0.6, 1.4, strata)

    def items(per_image):
        return np.concatenate([lvl * t for lvl in per_image])

    def old_z_p(b, a):  # the previous improvement_test: stratified SEs of before and after, normal law
        def se(x):
            per = x.reshape(-1, strata)
            return np.sqrt(per.var(axis=0, ddof=1).sum() / per.shape[0]) / strata

        return stats.norm.sf((b.mean() - a.mean()) / np.sqrt(se(b) ** 2 + se(a) ** 2))

    for b_img, a_img, paired_significant in (
        ([0.5, 1.0, 1.6], [0.485, 0.968, 1.555], True),
        ([1.0, 1.01, 0.99], [0.80, 1.02, 0.985], False),
    ):
        before, after = items(b_img), items(a_img)
        b_img, a_img = np.array(b_img), np.array(a_img)
        ref = stats.ttest_1samp((b_img - a_img) / b_img, 0.0, alternative="greater")
        res = improvement_test(before, after, strata)
        assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9) and res.df == 2
        assert (ref.pvalue < 0.05) == paired_significant and (
            old_z_p(before, after) < 0.05
        ) != paired_significant


def _exit_step(ctrl: ConvergenceController, values) -> tuple[int | None, str]:
    for i, v in enumerate(values, start=1):
        d = ctrl.update(float(v))
        if d.exit_phase:
            return i, d.reason
    return None, ""


def test_flat_phase_exits_after_a_short_minimum():
    """No decrease -> the phase ends soon after its first full span (patience × window = 150 steps), not after a
    run of consecutive plateau windows."""
    steps = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        ctrl = ConvergenceController(ControllerConfig(window=50, patience=3, p_threshold=0.5))
        ctrl.start_phase(min_steps=0, max_steps=2000)
        step, reason = _exit_step(ctrl, 0.1 + rng.normal(0, 0.02, 2000))
        assert reason == "slope plateau", seed
        steps.append(step)
    assert min(steps) >= 150  # never before one full span of evidence
    assert np.median(steps) <= 250
    assert max(steps) <= 700


def test_falling_phase_does_not_exit_before_max_steps():
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        ctrl = ConvergenceController(ControllerConfig(window=50, patience=3, p_threshold=0.5))
        ctrl.start_phase(min_steps=0, max_steps=1500)
        t = np.arange(1500)
        step, reason = _exit_step(ctrl, 1.0 - 2e-4 * t + rng.normal(0, 0.02, 1500))
        assert (step, reason) == (1500, "max steps"), seed


def test_seed_phases_min_steps_only_on_coarse():
    ph = seed_phases(min_steps=150)
    assert [p.min_steps for p in ph] == [150, 0, 0, 0]


# -- trainer level ----------------------------------------------------------------------------------------------
class _Denoiser(torch.nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        self.lin = torch.nn.Linear(dim, dim)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            self.lin.weight.copy_(torch.randn(dim, dim, generator=g) * 0.05)
            self.lin.bias.zero_()
        self.requires_grad_(False)


class _Backend:
    """x0 objective on a linear denoiser: x_t = sqrt(1-u) x0 + sqrt(u) noise, predict x0."""

    device = torch.device("cpu")

    def __init__(self, model):
        self.model = model

    def predict(self, latents, cond, noise, u):
        a = (1 - u).sqrt().view(-1, 1)
        xt = a * latents + u.sqrt().view(-1, 1) * noise
        return self.model.lin(xt), latents


def _data(n_train=12, n_val=4, dim=32):
    g = torch.Generator().manual_seed(5)
    base = torch.randn(1, dim, generator=g)
    lat = base + 0.2 * torch.randn(n_train + n_val, dim, generator=g)
    cond = torch.zeros(n_train + n_val, 1)
    return TrainData(lat[:n_train], cond[:n_train], lat[n_train:], cond[n_train:])


def _run(lrs, adaptive=True, max_steps=40, window=10):
    model = _Denoiser()
    net = LoRANetwork(4, 4, seed=0)
    net.attach_hooks(model, ["lin"])
    phases = [
        Phase(
            name,
            lr=lr,
            alpha=4,
            loss="mse",
            optimizer="adamw",
            min_steps=0,
            max_steps=max_steps,
            weight_decay=0,
        )
        for name, lr in zip(["COARSE", "MID", "MID_FINE", "FINAL_FINE"], lrs, strict=False)
    ]
    cfg = TrainConfig(
        rank=4, alpha=4, batch_size=4, schedule=Schedule(phases, adaptive=adaptive), val_every=0,
        controller=ControllerConfig(window=window, patience=2, p_threshold=0.5, significance=0.05),
    )  # fmt: skip
    try:
        return Trainer(net, _Backend(model), _data(), cfg).run()
    finally:
        net.detach_hooks()


def test_phase_without_validation_improvement_skips_the_rest(caplog):
    caplog.set_level("INFO", logger="IdentityLock.training")
    res = _run([1e-12, 1e-13, 1e-14], max_steps=300)  # nothing can move: flat loss, unchanged validation loss
    assert [e.phase for e in res.exits] == ["COARSE"]
    assert res.exits[0].reason == "slope plateau" and res.exits[0].steps_in_phase <= 80
    assert res.exits[0].val_p_value is not None and res.exits[0].val_p_value > 0.05
    assert res.skipped == ["MID", "MID_FINE"]
    assert res.skip_reason.startswith(
        "Skipping MID, MID_FINE: COARSE did not lower the validation loss significantly by more than 2 % ("
    )
    pattern = r"\([+-]\d+\.\d %; paired t over 4 images, gain > 2 %: df=3, p=\d\.\d\d\)$"
    assert re.search(pattern, res.skip_reason), res.skip_reason
    assert "paired t over 4 images, gain > 2 %: df=3" in res.exits[0].val_test
    assert res.skip_reason in caplog.text
    assert res.steps == res.exits[0].step


def test_no_skip_while_validation_keeps_improving():
    res = _run([3e-2, 1e-2, 5e-3], max_steps=30)
    assert res.skipped == [] and res.skip_reason == ""
    assert [e.phase for e in res.exits] == ["COARSE", "MID", "MID_FINE"]
    coarse = res.exits[0]
    assert coarse.val_p_value < 0.05 and coarse.val_loss < coarse.val_start


def test_fixed_schedule_never_skips():
    res = _run([1e-12, 1e-13], adaptive=False, max_steps=12)
    assert [e.phase for e in res.exits] == ["COARSE", "MID"] and res.skipped == []
    assert res.steps == 24


def test_resume_continues_the_saved_seed_even_when_another_is_given(tmp_path, caplog):
    """ComfyUI randomises a "seed" widget after each queue; a resume must still finish the interrupted run."""
    caplog.set_level("WARNING", logger="IdentityLock.training")

    def trainer(seed, ckpt=None, cancel_at=None):
        model = _Denoiser()
        net = LoRANetwork(4, 4, seed=seed)
        net.attach_hooks(model, ["lin"])
        cfg = TrainConfig(
            rank=4, alpha=4, batch_size=4, seed=seed, val_every=5,
            schedule=Schedule([Phase("COARSE", lr=1e-2, alpha=4, min_steps=20, max_steps=20)], adaptive=False),
            controller=ControllerConfig(window=5),
        )  # fmt: skip
        state = {"n": 0}

        def cancel():
            state["n"] += 1
            if cancel_at is not None and state["n"] > cancel_at:
                raise KeyboardInterrupt

        return net, Trainer(net, _Backend(model), _data(), cfg, check_cancel=cancel, checkpoint_path=ckpt)

    net, full = trainer(7)
    ref = full.run()
    ref_state = {k: v.clone() for k, v in net.state_dict().items()}
    net.detach_hooks()
    ckpt = tmp_path / "run.pt"
    net, first = trainer(7, ckpt, cancel_at=9)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    net.detach_hooks()
    net, resumed = trainer(12345, ckpt)  # the widget moved on
    resumed.resume()
    res = resumed.run()
    assert "continuing the saved run's seed 7" in caplog.text
    assert res.losses == ref.losses and res.final_val_loss == ref.final_val_loss
    for k, v in net.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    net.detach_hooks()


def test_adopt_saved_seed_before_data_preparation(tmp_path, caplog):
    """The node and CLI call this before the seed-dependent split/augmentation/LoRA init (real ComfyUI showed a
    resumed LoRA 0.0026 off the uninterrupted one when only the Trainer took the saved seed)."""
    from identitylock.core.training.checkpoint import adopt_saved_seed, load_checkpoint, save_checkpoint

    caplog.set_level("WARNING", logger="IdentityLock.training")
    path = save_checkpoint(tmp_path / "s.pt", {"version": 1, "config": TrainConfig(seed=5).to_dict()})
    cfg = TrainConfig(seed=777)
    assert adopt_saved_seed(cfg, load_checkpoint(path)) and cfg.seed == 5
    assert "continuing the saved run's seed 5" in caplog.text
    same = TrainConfig(seed=5)
    caplog.clear()
    assert not adopt_saved_seed(same, load_checkpoint(path)) and same.seed == 5 and not caplog.text
    # numpy values (e.g. from scipy/numpy statistics) are stored as plain numbers/tensors: loadable weights-only
    mixed = save_checkpoint(
        tmp_path / "m.pt", {"a": np.float64(0.5), "b": [np.int64(3)], "c": np.arange(3.0)}
    )
    back = load_checkpoint(mixed)
    assert (
        back["a"] == 0.5 and type(back["a"]) is float and back["b"] == [3] and back["c"].tolist() == [0, 1, 2]
    )
    # checkpoints load with weights_only=True: an arbitrary pickled object is refused, not executed, with our
    # sentence (torch's own advises weights_only=False)
    from identitylock.core.training.checkpoint import TrainingStateError

    torch.save({"x": _Denoiser()}, tmp_path / "evil.pt")
    with pytest.raises(TrainingStateError, match="never loaded") as err:
        load_checkpoint(tmp_path / "evil.pt")
    assert "weights_only" not in str(err.value)


def test_resume_state_loaded_under_comfyui_inference_mode_needs_training_mode(tmp_path):
    """Regression seen in a real ComfyUI: nodes run under torch.inference_mode(), so a state loaded there holds
    inference tensors and the optimizer's in-place update fails; the node loads it inside training_mode()."""
    from identitylock.core.training.checkpoint import load_checkpoint
    from identitylock.core.training.comfy_backend import training_mode

    def trainer(ckpt=None, cancel_after=None):
        model = _Denoiser()
        net = LoRANetwork(4, 4, seed=3)
        net.attach_hooks(model, ["lin"])
        cfg = TrainConfig(
            rank=4, alpha=4, batch_size=4, seed=3, val_every=0,
            schedule=Schedule([Phase("COARSE", lr=1e-2, alpha=4, min_steps=8, max_steps=8)], adaptive=False),
            controller=ControllerConfig(window=4),
        )  # fmt: skip
        calls = {"n": 0}

        def cancel():
            calls["n"] += 1
            if cancel_after is not None and calls["n"] > cancel_after:
                raise KeyboardInterrupt

        return Trainer(net, _Backend(model), _data(), cfg, check_cancel=cancel, checkpoint_path=ckpt)

    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        trainer(ckpt, cancel_after=4).run()  # interrupted mid-phase: optimizer state saved
    with torch.inference_mode():  # what ComfyUI's executor does around every node
        outside = load_checkpoint(ckpt)
        with training_mode(), pytest.raises(RuntimeError, match="(?i)inference tensor"):
            wrong = trainer()
            wrong.resume(state=outside)
            wrong.run()
        with training_mode():
            right = trainer()
            right.resume(state=load_checkpoint(ckpt))
            res = right.run()
    assert res.steps == 8 and all(np.isfinite(res.losses))


def test_the_skip_test_pairs_held_out_photos_not_their_variants():
    """FaceCropPrep's rotations of one photo are not independent: with the split's groups, the unit is the photo.

    Seen in a real ComfyUI run: one held-out photo with 6 variants was reported as "paired t over 6 images, df=5".
    """
    rng = np.random.default_rng(3)
    strata, photos, variants = 5, 3, 6
    before = 1.0 + rng.random(strata * photos * variants)
    after = before * (1 - rng.normal(0.04, 0.02, before.size))
    groups = [g for g in range(photos) for _ in range(variants)]
    res = improvement_test(before, after, strata, 0.02, groups=groups)
    per_image_b = before.reshape(-1, strata).mean(axis=1)
    per_image_a = after.reshape(-1, strata).mean(axis=1)
    photo_b = per_image_b.reshape(photos, variants).mean(axis=1)
    photo_a = per_image_a.reshape(photos, variants).mean(axis=1)
    ref = stats.ttest_1samp((photo_b - photo_a) / photo_b, 0.02, alternative="greater")
    assert res.unit == "photos" and res.df == photos - 1 == ref.df
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert "paired t over 3 photos" in res.describe()
    one = improvement_test(
        before[: strata * variants], after[: strata * variants], strata, 0.02, groups=[0] * variants
    )
    assert one.unit == "variants of one held-out photo" and one.df == variants - 1


def test_prepare_data_records_which_held_out_photo_each_validation_image_is():
    from identitylock.core.training.dataset import prepare_data

    imgs = [np.full((16, 16, 3), i * 20, np.uint8) for i in range(12)]
    sources = [f"p{i // 3}" for i in range(12)]  # 4 photos x 3 variants
    data = prepare_data(imgs, ["x"] * 12, lambda a: np.stack(a), lambda c: list(c), sources=sources, seed=1)
    groups, val = data.val_groups, data.split["validation"]
    assert len(groups) == len(data.val_latents) and set(groups) == set(range(len(val)))
    assert all(int(data.val_latents[i][0, 0, 0]) // 20 // 3 == int(val[g][1:]) for i, g in enumerate(groups))
