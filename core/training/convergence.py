"""Convergence rules for training loss streams (numpy/scipy only, no torch).

Why: fixed step counts keep training after likeness has peaked. What each rule is, exactly (docs/training.md,
"What is tested"):

1. Within a phase: is the loss still going down fast enough? By default the validation loss decides (fixed items,
   timesteps and noise; :meth:`ConvergenceController.update_validation`): a least-squares line is fitted to the
   phase's recent validation points and the phase ends when finishing its step budget at the fitted rate would
   lower the validation loss by less than ``min_val_gain``. This is phrased as a one-sided slope t-test, but at the
   default ``p_threshold`` 0.5 it is a point-estimate rule: p > 0.5 exactly when the fitted (budget-adjusted)
   slope is not negative, whatever its standard error; only other thresholds make the error bar matter. The
   validation points are not independent samples (same images, same noise; successive weights), so even then
   the p-value is a heuristic scale, not a calibrated error rate.
   Training-loss rule (secondary signal; decides with exit_on="train" or without validations): every ``window``
   steps a least-squares line is fitted to the phase's last ``patience × window`` losses and the one-sided
   p-value for "still decreasing" (H1: slope < 0, t with n-2 df) is computed; above ``p_threshold`` the phase
   ends (after its ``min_steps``). Per-step losses are close to independent (fresh noise and timesteps), so this
   one is a test; at p_threshold 0.5 it is again "the fitted slope is not negative".
2. Across phases: did the finished phase lower the validation loss by more than ``min_val_gain``? One-sided
   paired t-test over the held-out images of the relative gain from the phase's start to its end (each image's
   loss averaged over the fixed timesteps; df = images - 1; :func:`improvement_test`); if p > ``significance``
   the remaining phases with a lower learning rate are skipped.

Welford's running mean/variance is kept per phase for reports and for the divergence guard.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..config_fields import check_fields


class Welford:
    """Numerically stable running mean and variance (Welford 1962)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self._m2 = 0.0

    def update(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self._m2 += delta * (x - self.mean)

    @property
    def variance(self) -> float:
        """Unbiased sample variance (ddof=1); 0 until two values were seen."""
        return self._m2 / (self.n - 1) if self.n > 1 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    def state_dict(self) -> dict[str, float]:
        return {"n": self.n, "mean": self.mean, "m2": self._m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.n, self.mean, self._m2 = int(state["n"]), float(state["mean"]), float(state["m2"])


@dataclass
class SlopeTest:
    """Least-squares slope of y over x with its standard error and a one-sided p-value for slope < 0."""

    slope: float
    intercept: float
    stderr: float
    p_decreasing: float  # small = strong evidence the loss is still going down
    n: int


def slope_test(y: np.ndarray | list[float], x: np.ndarray | list[float] | None = None) -> SlopeTest:
    """Ordinary least squares y = a + b x; p = P(T_{n-2} <= b / se(b)) (small when clearly decreasing)."""
    from scipy import stats

    y = np.asarray(y, dtype=np.float64)
    n = y.size
    if n < 3:
        raise ValueError("slope_test needs at least 3 points")
    x = np.arange(n, dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64)
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx == 0:
        raise ValueError("slope_test needs at least two distinct x values")
    sxy = float(((x - xm) * (y - ym)).sum())
    slope = sxy / sxx
    intercept = ym - slope * xm
    resid = y - (intercept + slope * x)
    sse = float((resid**2).sum())
    stderr = math.sqrt(sse / (n - 2) / sxx)
    if stderr == 0.0:
        p = 0.0 if slope < 0 else 1.0
    else:
        p = float(stats.t.cdf(slope / stderr, df=n - 2))
    return SlopeTest(slope=float(slope), intercept=float(intercept), stderr=stderr, p_decreasing=p, n=int(n))


@dataclass
class ControllerConfig:
    """When a phase counts as converged.

    window: the test is re-evaluated every ``window`` steps; patience: the slope is fitted over the last
    ``patience × window`` losses of the phase (the first test comes once the phase has that many);
    p_threshold: plateau when the one-sided p-value for "still decreasing" exceeds it (0.5 = the fitted slope
    is not negative); min_steps/max_steps (per phase) bound each phase; divergence_sigma: exit early when the
    window mean rises this many standard deviations (of the phase's Welford std) above the best window mean
    (0 = off); significance: a finished phase must lower the held-out images' validation loss by more than
    ``min_val_gain`` at this one-sided level of a paired t-test over the images (:func:`improvement_test`),
    otherwise the remaining
    lower-learning-rate phases are skipped (1.0 = never skip).

    exit_on="validation" (default): the phase ends on the validation-loss trend, not on the training-loss slope
    (which is then computed and logged only): a line is fitted to the phase's last validation points (at least
    ``val_points``, covering at least one span), with the validation loss taken relative to its mean over those
    points. ``min_val_gain`` is the smallest relative improvement still worth the phase's remaining step budget
    (``max_steps`` minus the steps done): the tested hypothesis is "at the fitted rate, the remaining budget would
    lower the validation loss by more than ``min_val_gain``", i.e. the slope test on
    y + min_val_gain/remaining·x. When its p-value exceeds ``p_threshold`` at ``val_patience`` consecutive
    validations, the phase ends ("validation plateau"). At p_threshold 0.5 that is the point estimate "the fitted
    line's fall over the remaining budget is below min_val_gain" (p > 0.5 iff the adjusted slope is >= 0), not a
    significance test. Why a budget and not a fixed rate: the question a user
    asks is "would running this phase to its end still buy me 2 %?"; extrapolating the current (usually
    decelerating) rate linearly over-estimates what is left, so the rule errs towards training on. A larger
    budget therefore means a stricter (later) exit. Needs a validation every few steps (TrainConfig.val_every);
    without validations it falls back to the training-loss rule. exit_on="train": the training-loss slope rule
    alone.
    """

    window: int = 50
    p_threshold: float = 0.5
    patience: int = 3
    divergence_sigma: float = 0.0
    significance: float = 0.05
    exit_on: str = "validation"
    min_val_gain: float = 0.02
    val_points: int = 5
    val_patience: int = 2

    def __post_init__(self) -> None:
        problems = []
        if self.exit_on not in ("validation", "train"):
            problems.append(f"exit_on must be 'validation' or 'train' (got {self.exit_on!r})")
        if not (self.window >= 1 and self.patience >= 1 and self.val_points >= 2 and self.val_patience >= 1):
            problems.append("window, patience and val_patience must be >= 1 and val_points >= 2")
        if not 0 < self.p_threshold < 1:
            problems.append(f"p_threshold must be between 0 and 1 (got {self.p_threshold})")
        if not (
            0 <= self.significance <= 1 and 0 <= self.min_val_gain < math.inf and self.divergence_sigma >= 0
        ):
            problems.append("significance must be in [0, 1]; min_val_gain and divergence_sigma must be >= 0")
        if problems:
            raise ValueError("controller: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControllerConfig:
        return cls(**check_fields(cls, data, "controller"))

    @property
    def span(self) -> int:
        """Losses the slope is fitted over once the phase is old enough."""
        return max(3, self.window) * max(1, self.patience)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Decision:
    """Result of feeding one loss value to the controller."""

    exit_phase: bool = False
    reason: str = ""
    evaluated: bool = False
    test: SlopeTest | None = None
    plateau_windows: int = 0


@dataclass
class _PhaseStats:
    steps: int = 0
    windows: int = 0
    plateau_windows: int = 0
    best_window_mean: float = math.inf
    welford: Welford = field(default_factory=Welford)
    val_x: list[float] = field(default_factory=list)  # step in phase of each validation point
    val_y: list[float] = field(default_factory=list)
    val_plateaus: int = 0  # consecutive validation checks without the required fall


class ConvergenceController:
    """Feeds on per-step losses of one phase at a time; says when the phase should end.

    ``update(loss)`` returns a Decision. Exit reasons: "slope plateau" (p for "still decreasing" over the last
    ``patience × window`` losses above ``p_threshold``), "max steps", "divergence". Never exits before
    ``min_steps``; evaluations happen every ``window`` steps once a full span is there, so the earliest plateau
    exit is after ``patience × window`` steps.
    ``plateau_windows`` counts consecutive plateau evaluations (reported, not used for the decision).
    """

    def __init__(self, config: ControllerConfig | None = None) -> None:
        self.config = config or ControllerConfig()
        self.min_steps = 0
        self.max_steps = 0
        self._buf: deque[float] = deque(maxlen=self.config.span)
        self._stats = _PhaseStats()
        self.last_test: SlopeTest | None = None
        self.last_val_test: SlopeTest | None = None
        # the trainer sets this when it validates during phases (val_every > 0)
        self.validation_available = False

    @property
    def train_rule_decides(self) -> bool:
        return self.config.exit_on == "train" or not self.validation_available

    def start_phase(self, min_steps: int, max_steps: int) -> None:
        if max_steps < min_steps:
            raise ValueError(f"max_steps ({max_steps}) < min_steps ({min_steps})")
        self.min_steps, self.max_steps = int(min_steps), int(max_steps)
        self._buf = deque(maxlen=self.config.span)
        self._stats = _PhaseStats()
        self.last_test = None
        self.last_val_test = None

    @property
    def stats(self) -> _PhaseStats:
        return self._stats

    def update(self, loss: float) -> Decision:
        loss = float(loss)
        st = self._stats
        st.steps += 1
        st.welford.update(loss)
        self._buf.append(loss)
        decision = Decision(plateau_windows=st.plateau_windows)
        cfg = self.config
        if st.steps >= cfg.span and st.steps % max(3, cfg.window) == 0:
            test = slope_test(np.fromiter(self._buf, dtype=np.float64))
            self.last_test = test
            st.windows += 1
            st.plateau_windows = st.plateau_windows + 1 if test.p_decreasing > cfg.p_threshold else 0
            window_mean = float(np.mean(list(self._buf)[-max(3, cfg.window) :]))
            diverged = (
                cfg.divergence_sigma > 0
                and st.welford.n > 1
                and window_mean > st.best_window_mean + cfg.divergence_sigma * st.welford.std
            )
            st.best_window_mean = min(st.best_window_mean, window_mean)
            decision = Decision(evaluated=True, test=test, plateau_windows=st.plateau_windows)
            if st.steps >= self.min_steps:
                if st.plateau_windows >= 1 and self.train_rule_decides:
                    decision.exit_phase, decision.reason = True, "slope plateau"
                elif diverged:
                    decision.exit_phase, decision.reason = True, "divergence"
        if not decision.exit_phase and st.steps >= self.max_steps:
            decision.exit_phase, decision.reason = True, "max steps"
            decision.test = decision.test or self.last_test
        return decision

    def update_validation(self, val_loss: float, step_in_phase: int | None = None) -> Decision:
        """Feed one validation loss of the current phase (also the one at its start, step 0).

        Returns a Decision that exits with "validation plateau" when, at the fitted rate, the rest of the phase's
        step budget would lower the validation loss by less than ``min_val_gain`` (relative; one-sided slope test,
        p > p_threshold) at ``val_patience`` consecutive checks, once the phase has its ``min_steps``. Only decides
        when exit_on="validation".
        """
        cfg, st = self.config, self._stats
        st.val_x.append(float(st.steps if step_in_phase is None else step_in_phase))
        st.val_y.append(float(val_loss))
        if cfg.exit_on != "validation" or len(st.val_x) < max(3, cfg.val_points):
            return Decision()
        x = np.asarray(st.val_x, dtype=np.float64)
        y = np.asarray(st.val_y, dtype=np.float64)
        # The fit starts at the latest point at least one span back (so it always covers >= span steps, whatever
        # the spacing of the validations), or earlier when that leaves fewer than val_points points.
        older = np.flatnonzero(x <= x[-1] - cfg.span)
        if older.size == 0 or np.ptp(x) == 0:
            return Decision()
        start = min(int(older[-1]), x.size - max(3, cfg.val_points))
        x, y = x[start:], y[start:]
        mean = float(y.mean())
        rel = y / mean if mean > 0 else y
        rate = self.required_rate()  # relative fall per step that still pays for the remaining budget
        test = slope_test(rel + rate * x, x)  # H1: falls faster than that
        test.slope -= rate  # report the slope of the relative validation loss itself
        self.last_val_test = test
        st.val_plateaus = st.val_plateaus + 1 if test.p_decreasing > cfg.p_threshold else 0
        d = Decision(evaluated=True, test=test, plateau_windows=st.val_plateaus)
        if st.val_plateaus >= max(1, cfg.val_patience) and st.steps >= self.min_steps:
            d.exit_phase, d.reason = True, "validation plateau"
        return d

    def required_rate(self) -> float:
        """Relative validation fall per step below which the phase's remaining budget buys < min_val_gain."""
        remaining = max(1, self.max_steps - self._stats.steps)
        return self.config.min_val_gain / remaining

    def state_dict(self) -> dict[str, Any]:
        st = self._stats
        return {
            "min_steps": self.min_steps,
            "max_steps": self.max_steps,
            "buf": list(self._buf),
            "steps": st.steps,
            "windows": st.windows,
            "plateau_windows": st.plateau_windows,
            "best_window_mean": st.best_window_mean,
            "welford": st.welford.state_dict(),
            "last_test": asdict(self.last_test) if self.last_test else None,
            "val_x": list(st.val_x),
            "val_y": list(st.val_y),
            "val_plateaus": st.val_plateaus,
            "last_val_test": asdict(self.last_val_test) if self.last_val_test else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.min_steps, self.max_steps = int(state["min_steps"]), int(state["max_steps"])
        self._buf = deque((float(v) for v in state["buf"]), maxlen=self.config.span)
        st = _PhaseStats(
            steps=int(state["steps"]),
            windows=int(state["windows"]),
            plateau_windows=int(state["plateau_windows"]),
            best_window_mean=float(state["best_window_mean"]),
        )
        st.welford.load_state_dict(state["welford"])
        st.val_x = [float(v) for v in state.get("val_x", [])]
        st.val_y = [float(v) for v in state.get("val_y", [])]
        st.val_plateaus = int(state.get("val_plateaus", 0))
        self._stats = st
        self.last_test = SlopeTest(**state["last_test"]) if state.get("last_test") else None
        self.last_val_test = SlopeTest(**state["last_val_test"]) if state.get("last_val_test") else None


def exit_message(phase: str, windows: int, reason: str, test: SlopeTest | None, steps: int) -> str:
    """The log line printed when a phase ends, e.g. 'Exiting FINAL_FINE after 4 windows (slope plateau, p=0.41)'."""
    p = f", p={test.p_decreasing:.2f}" if test is not None else ""
    return f"Exiting {phase} after {windows} windows / {steps} steps ({reason}{p})"


@dataclass
class ImprovementTest:
    """One-sided paired t-test that a phase lowered the held-out images' validation loss by more than ``margin``."""

    improvement: float  # mean(before) - mean(after) over all items; > 0 = better
    stderr: float  # standard error of the mean relative gain per unit
    p_value: float  # one-sided: small = every held-out image gained, on average by more than the margin
    n: int  # validation items (images x timesteps)
    before: float
    after: float
    df: int = 0  # degrees of freedom of the t statistic (units - 1)
    unit: str = "images"  # what was paired: "images" (each averaged over its timesteps) or "timesteps"
    margin: float = 0.0  # H0: mean relative gain <= margin

    def describe(self) -> str:
        """E.g. 'val 1.09591 -> 1.00465 (-8.3 %; paired t over 3 images, gain > 2 %: df=2, p=0.01)'."""
        change = 100 * (self.after / self.before - 1) if self.before else float("nan")
        return (
            f"val {self.before:.5f} -> {self.after:.5f} ({change:+.1f} %; paired t over {self.df + 1} "
            f"{self.unit}, gain > {100 * self.margin:g} %: df={self.df}, p={self.p_value:.2f})"
        )


def improvement_test(
    before: np.ndarray | list[float],
    after: np.ndarray | list[float],
    strata: int = 1,
    margin: float = 0.0,
    groups: list[int] | None = None,
) -> ImprovementTest:
    """One-sided paired t-test on the per-image relative gains of the validation loss, against ``margin``.

    ``before``/``after`` are per-item validation losses ordered image-major with ``strata`` fixed timesteps per
    image (Trainer.validation_items), measured with the same noise before and after the phase. Items of one image
    are not independent (same picture, same noise), so the unit of the test is the image: each image's loss is
    averaged over its timesteps, g_j = (before_j - after_j) / before_j, t = (mean(g) - margin) / (sd(g) / sqrt(m)),
    df = m - 1, p = P(T_df >= t) (= scipy.stats.ttest_1samp(g, margin, alternative="greater")). H1: on average
    over held-out images the phase lowered the validation loss by more than ``margin`` (relative). With one
    held-out image (or strata=1) the units are its items (timesteps), df = items - 1: a statement about that image
    only. Why a margin: with fixed noise, a phase at lr 1e-6 lowers every image's loss by ~0.003 %, a perfectly
    consistent and worthless gain that a plain paired test (margin 0) calls significant at p < 0.01. Why paired:
    the old unpaired z-test compared the gain with the image-to-image spread of the losses, which is not the
    noise of a difference measured on the same images, and read it on a normal law at ~2 degrees of freedom.

    ``groups``: the held-out photo of each image (``TrainData.val_groups``). FaceCropPrep's
    rotations and crops of one photo are not independent either, so with groups the unit is the *photo*: its
    images are averaged first, df = photos - 1. With a single held-out photo there is nothing to pair across
    photos: its variants are the units and the result speaks for that one photo only (the unit says so).
    """
    from scipy import stats

    b = np.asarray(before, dtype=np.float64)
    a = np.asarray(after, dtype=np.float64)
    if b.shape != a.shape or b.size < 2:
        raise ValueError("improvement_test needs two equally long sequences of at least 2 values")
    unit = "timesteps" if strata > 1 else "items"
    if strata > 1 and b.size % strata == 0 and b.size // strata >= 2:
        b_u, a_u, unit = b.reshape(-1, strata).mean(axis=1), a.reshape(-1, strata).mean(axis=1), "images"
        if groups is not None and len(groups) == b_u.size:
            labels = sorted(set(groups))
            if len(labels) >= 2:
                g_idx = np.asarray(groups)
                b_u = np.array([b_u[g_idx == k].mean() for k in labels])
                a_u = np.array([a_u[g_idx == k].mean() for k in labels])
                unit = "photos"
            else:
                unit = "variants of one held-out photo"
    else:
        b_u, a_u = b, a
    g = (b_u - a_u) / np.where(b_u != 0, b_u, 1.0)
    m = g.size
    excess = float(g.mean()) - margin
    se = float(g.std(ddof=1) / math.sqrt(m))
    if se == 0.0:
        p = 0.0 if excess > 0 else 1.0
    else:
        p = float(stats.t.sf(excess / se, df=m - 1))
    return ImprovementTest(
        float(b.mean() - a.mean()), se, p, int(b.size), float(b.mean()), float(a.mean()), m - 1, unit, margin
    )


def skip_message(phase: str, skipped: list[str], test: ImprovementTest) -> str:
    """E.g. 'Skipping MID_FINE, FINAL_FINE: MID did not lower the validation loss significantly by more than 2 %
    (-0.1 %; paired t over 3 images, gain > 2 %: df=2, p=1.00)'.

    The relative change and the degrees of freedom are printed because "not significant" can hide a sizeable but
    uncertain gain when only a few images are held out (df=2 at 3 images).
    """
    change = 100 * (test.after / test.before - 1) if test.before else float("nan")
    return (
        f"Skipping {', '.join(skipped)}: {phase} did not lower the validation loss significantly by more than "
        f"{100 * test.margin:g} % ({change:+.1f} %; paired t over {test.df + 1} {test.unit}, "
        f"gain > {100 * test.margin:g} %: df={test.df}, p={test.p_value:.2f})"
    )
