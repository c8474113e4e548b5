"""Statistics of identity consistency: bootstrap and Wilson intervals, Mann-Whitney U between groups with
Holm correction and Cliff's delta, so "LoRA A is better than LoRA B" is a claim with a p-value instead of a feeling.

Pure numpy/scipy on arrays of similarities; no faces, rows or reports here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

N_BOOT = 2000
ALPHA = 0.05
# Fewer faces than this in a group: the comparison is reported but flagged as unreliable.
MIN_RELIABLE = 5
# Bootstrap resamples are drawn in blocks of at most this many values (8 MB of indices): 2,000 resamples of a
# 10,000-image group would otherwise hold 20 million indices and their values at once.
BOOT_CELLS = 1_000_000


@dataclass
class Comparison:
    """Two-sided Mann-Whitney U on the similarity of two groups."""

    a: str
    b: str
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    median_diff: float  # a - b
    median_diff_ci: tuple[float, float] | None
    u: float
    p_value: float
    p_holm: float
    cliffs_delta: float  # P(a > b) - P(a < b), -1..1
    effect: str  # negligible / small / medium / large (Romano et al. thresholds)
    significant: bool
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in list(d.items()):
            if isinstance(v, float):
                d[k] = round(v, 6)
            elif isinstance(v, tuple):
                d[k] = [round(float(x), 5) for x in v]
        return d


def _boot_stats(
    v: np.ndarray, stat: Callable, n_boot: int, rng: np.random.Generator, cells: int = BOOT_CELLS
) -> np.ndarray:
    """``stat`` of ``n_boot`` resamples of ``v``, drawn in blocks of at most ``cells`` values.

    Drawing the index matrix block by block consumes the generator exactly as one ``(n_boot, n)`` draw does,
    so the resamples (and the intervals) are the same as before; memory is bounded instead of ``n_boot * n``.
    """
    rows = max(1, cells // max(len(v), 1))
    out = np.empty(n_boot, dtype=np.float64)
    for b0 in range(0, n_boot, rows):
        b1 = min(n_boot, b0 + rows)
        out[b0:b1] = stat(v[rng.integers(0, len(v), size=(b1 - b0, len(v)))], axis=1)
    return out


def bootstrap_ci(
    values: np.ndarray, stat: Callable = np.median, n_boot: int = N_BOOT, alpha: float = ALPHA, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``stat``; None for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return None
    boots = _boot_stats(v, stat, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_diff_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, alpha: float = ALPHA, seed: int = 0
) -> tuple[float, float] | None:
    """Bootstrap interval of median(a) - median(b), resampling each group independently."""
    if len(a) < 2 or len(b) < 2:
        return None
    rng = np.random.default_rng(seed)
    ma = _boot_stats(np.asarray(a, dtype=np.float64), np.median, n_boot, rng)
    mb = _boot_stats(np.asarray(b, dtype=np.float64), np.median, n_boot, rng)
    lo, hi = np.quantile(ma - mb, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def wilson_ci(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (well-behaved at 0 % and 100 %, unlike the bootstrap)."""
    if n == 0:
        return None
    from scipy.stats import norm

    z = float(norm.ppf(1 - alpha / 2))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def cliffs_delta_label(d: float) -> str:
    a = abs(d)
    return "negligible" if a < 0.147 else "small" if a < 0.33 else "medium" if a < 0.474 else "large"


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (monotone, capped at 1)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def compare_groups(
    named: dict[str, np.ndarray], alpha: float = ALPHA, n_boot: int = N_BOOT, seed: int = 0
) -> list[Comparison]:
    """Every pair of groups (with at least two faces each): Mann-Whitney U, Holm-corrected, Cliff's delta."""
    from scipy.stats import mannwhitneyu

    names = [k for k, v in named.items() if len(v) >= 2]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    raw = []
    for a, b in pairs:
        x, y = named[a], named[b]
        res = mannwhitneyu(x, y, alternative="two-sided")
        raw.append((float(res.statistic), float(res.pvalue)))
    adjusted = holm([p for _, p in raw])
    out = []
    for (a, b), (u, p), ph in zip(pairs, raw, adjusted):
        x, y = named[a], named[b]
        delta = 2.0 * u / (len(x) * len(y)) - 1.0
        ma, mb = float(np.median(x)), float(np.median(y))
        sig = ph < alpha
        better, worse = (a, b) if ma >= mb else (b, a)
        small = min(len(x), len(y)) < MIN_RELIABLE
        if sig:
            verdict = (
                f"{better} scores higher than {worse}: median {max(ma, mb):.3f} vs "
                f"{min(ma, mb):.3f}, p={p:.2g} (Holm {ph:.2g}), Cliff's delta {abs(delta):.2f} "
                f"({cliffs_delta_label(delta)})"
            )
        else:
            verdict = (
                f"{a} vs {b}: no significant difference (median {ma:.3f} vs {mb:.3f}, p={p:.2g}, "
                f"Holm {ph:.2g})"
            )
        if small:
            verdict += f" [fewer than {MIN_RELIABLE} faces in a group: weak evidence]"
        out.append(
            Comparison(
                a=a,
                b=b,
                n_a=len(x),
                n_b=len(y),
                median_a=ma,
                median_b=mb,
                median_diff=ma - mb,
                median_diff_ci=bootstrap_diff_ci(x, y, n_boot, alpha, seed),
                u=u,
                p_value=p,
                p_holm=ph,
                cliffs_delta=delta,
                effect=cliffs_delta_label(delta),
                significant=sig,
                verdict=verdict,
            )
        )
    return out
