"""Lock-threshold calibration from labelled photos: pair drifts, AUC, false accepts/rejects, equal-error point.

Used to choose each backend's default lock threshold (see docs/identity.md) and available to users who want to
calibrate on their own labelled photos.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .identity import drift


@dataclass
class PairDrift:
    drift: float
    a: str
    b: str
    same: bool


def pair_drifts(
    names: Sequence[str],
    identities: Sequence[str],
    vectors: Sequence[np.ndarray],
    source_photo: Sequence[str] | None = None,
) -> list[PairDrift]:
    """All independent pairs: pairs cut from the same photograph (equal ``source_photo``) are left out."""
    src = list(source_photo) if source_photo is not None else list(names)
    out = []
    for i, j in itertools.combinations(range(len(names)), 2):
        if src[i] == src[j]:
            continue
        out.append(
            PairDrift(drift(vectors[i], vectors[j]), names[i], names[j], identities[i] == identities[j])
        )
    return out


def ranking_auc(pairs: Sequence[PairDrift]) -> float:
    """Probability that a random same-person pair has lower drift than a random different-person pair."""
    same = np.array([p.drift for p in pairs if p.same])
    diff = np.array([p.drift for p in pairs if not p.same])
    if len(same) == 0 or len(diff) == 0:
        raise ValueError("need both same-person and different-person pairs")
    less = (same[:, None] < diff[None, :]).sum()
    ties = (same[:, None] == diff[None, :]).sum()
    return float((less + 0.5 * ties) / (len(same) * len(diff)))


def sweep(pairs: Sequence[PairDrift], thresholds: Sequence[float]) -> list[dict]:
    """False accepts (different people locked) and false rejects (same person not locked) per threshold."""
    same = np.array([p.drift for p in pairs if p.same])
    diff = np.array([p.drift for p in pairs if not p.same])
    return [
        {
            "threshold": float(t),
            "false_accepts": int((diff <= t).sum()),
            "false_rejects": int((same > t).sum()),
            "far": float((diff <= t).mean()),
            "frr": float((same > t).mean()),
        }
        for t in thresholds
    ]


def equal_error_threshold(pairs: Sequence[PairDrift]) -> float:
    """Threshold where the false-accept and false-reject rates are closest."""
    grid = np.unique([p.drift for p in pairs])
    rows = sweep(pairs, grid)
    best = min(rows, key=lambda r: (abs(r["far"] - r["frr"]), r["threshold"]))
    return best["threshold"]


# -- calibration anyone can run: `identitylock calibrate DIR` ------------------------------------------------
def identity_from_name(name: str) -> str:
    """The person a file name stands for: its stem without a trailing counter (``obama_3.jpg`` -> ``obama``,
    ``anna-02.png`` -> ``anna``, ``bob7.jpg`` -> ``bob``)."""
    import re

    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    base = re.sub(r"[\s_\-.]*\(?\d+\)?$", "", stem)
    return (base or stem).lower()


@dataclass
class Calibration:
    """What a labelled photo set says about one backend/model's lock threshold."""

    backend: str
    model: str
    photos: int
    identities: int
    same: np.ndarray  # drifts of same-person pairs
    different: np.ndarray  # drifts of different-person pairs
    auc: float
    eer: float  # equal error rate
    eer_threshold: float
    far_target: float
    threshold: float | None  # largest drift threshold whose false-accept rate is <= far_target
    far: float | None  # false-accept rate at that threshold, on these pairs
    frr: float | None  # false-reject rate at that threshold
    warnings: list[str]

    def to_dict(self) -> dict:
        def dist(a: np.ndarray) -> dict:
            q = np.quantile(a, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]) if len(a) else [None] * 7
            keys = ("min", "p5", "p25", "median", "p75", "p95", "max")
            return {
                "pairs": int(len(a)),
                **{k: None if v is None else round(float(v), 4) for k, v in zip(keys, q)},
            }

        return {
            "backend": self.backend,
            "model": self.model,
            "photos": self.photos,
            "identities": self.identities,
            "same_person_drift": dist(self.same),
            "different_person_drift": dist(self.different),
            "roc_auc": round(self.auc, 4),
            "eer": round(self.eer, 4),
            "eer_threshold": round(self.eer_threshold, 4),
            "far_target": self.far_target,
            "threshold_at_far": self.threshold,
            "far_at_threshold": None if self.far is None else round(self.far, 4),
            "frr_at_threshold": None if self.frr is None else round(self.frr, 4),
            "warnings": list(self.warnings),
        }


def threshold_at_far(different: np.ndarray, far: float) -> float | None:
    """The largest drift threshold (4 decimals) that accepts at most ``far`` of the different-person pairs;
    None when even the smallest different-person drift is 0."""
    diff = np.sort(np.asarray(different, dtype=np.float64))
    allowed = int(np.floor(far * len(diff) + 1e-9))  # false accepts allowed on this many pairs
    if allowed >= len(diff):
        return float(np.floor(diff[-1] * 1e4) / 1e4)
    limit = diff[allowed]  # this pair (and every larger drift) must stay rejected
    t = np.floor(limit * 1e4) / 1e4
    if t >= limit:
        t -= 1e-4
    return float(round(t, 4)) if t > 0 else None


def calibrate(
    identities: Sequence[str],
    vectors: Sequence[np.ndarray],
    *,
    backend: str,
    model: str,
    far: float = 0.001,
    names: Sequence[str] | None = None,
    source_photo: Sequence[str] | None = None,
) -> Calibration:
    """Pair drifts, ROC AUC, EER and the threshold at a false-accept rate, from labelled identity vectors."""
    from .errors import IdentityLockError

    if not 0.0 < far < 1.0:
        raise IdentityLockError(f"--far {far} is not a rate: use a number between 0 and 1, e.g. 0.001")
    names = list(names) if names is not None else [f"#{i}" for i in range(len(vectors))]
    pairs = pair_drifts(names, list(identities), list(vectors), source_photo)
    same = np.array([p.drift for p in pairs if p.same])
    diff = np.array([p.drift for p in pairs if not p.same])
    if len(same) == 0 or len(diff) == 0:
        raise IdentityLockError(
            "calibration needs at least two photos of one person and photos of at least two people "
            f"(found {len(set(identities))} identities, {len(same)} same-person pairs); add labelled photos"
        )
    eer_t = equal_error_threshold(pairs)
    row = sweep(pairs, [eer_t])[0]
    warnings = []
    if far < 1.0 / len(diff):
        warnings.append(
            f"{len(diff)} different-person pairs can only measure false-accept rates down to "
            f"1/{len(diff)} = {1.0 / len(diff):.4f}; the threshold at FAR {far:g} is the one with no false accept "
            "here, an optimistic estimate: add photos of more people"
        )
    if len(same) < 20:
        warnings.append(f"only {len(same)} same-person pairs: the false-reject rate is a rough estimate")
    t = threshold_at_far(diff, far)
    at = sweep(pairs, [t])[0] if t is not None else None
    return Calibration(
        backend=backend,
        model=model,
        photos=len(vectors),
        identities=len(set(identities)),
        same=same,
        different=diff,
        auc=ranking_auc(pairs),
        eer=(row["far"] + row["frr"]) / 2,
        eer_threshold=float(eer_t),
        far_target=far,
        threshold=t,
        far=None if at is None else at["far"],
        frr=None if at is None else at["frr"],
        warnings=warnings,
    )


def _histogram(same: np.ndarray, diff: np.ndarray, bins: int = 12, width: int = 28) -> list[str]:
    hi = float(max(same.max(), diff.max()))
    edges = np.linspace(0.0, hi if hi > 0 else 1.0, bins + 1)
    hs, _ = np.histogram(same, edges)
    hd, _ = np.histogram(diff, edges)
    ps, pd = hs / max(1, hs.sum()), hd / max(1, hd.sum())
    top = max(ps.max(), pd.max(), 1e-12)
    lines = [f"  {'drift':>13}  {'same person':<{width}}  different people"]
    for k in range(bins):
        bar_s = "#" * int(round(ps[k] / top * width))
        bar_d = "=" * int(round(pd[k] / top * width))
        lines.append(f"  {edges[k]:.3f}-{edges[k + 1]:.3f}  {bar_s:<{width}}  {bar_d}")
    return lines


def format_calibration(c: Calibration) -> str:
    """The printout of ``identitylock calibrate``."""
    d = c.to_dict()
    lines = [
        f"Calibration of {c.backend}/{c.model} on {c.photos} photos of {c.identities} people (drift = 1 - cosine)",
    ]
    for label, key in (("same-person", "same_person_drift"), ("different-person", "different_person_drift")):
        q = d[key]
        lines.append(
            f"  {label:17s} {q['pairs']:5d} pairs: min {q['min']:.4f}  p5 {q['p5']:.4f}  median {q['median']:.4f}"
            f"  p95 {q['p95']:.4f}  max {q['max']:.4f}"
        )
    lines += _histogram(c.same, c.different)
    lines.append(f"  ROC AUC {c.auc:.4f}   EER {c.eer:.4f} at drift {c.eer_threshold:.4f}")
    if c.threshold is None:
        lines.append(f"  no drift threshold keeps the false-accept rate at or below {c.far_target:g}")
    else:
        lines.append(
            f"  threshold at FAR <= {c.far_target:g}: drift {c.threshold:.4f} (cosine >= {1 - c.threshold:.4f}); "
            f"on these pairs FAR {c.far:.4f}, FRR {c.frr:.4f}"
        )
    lines.extend(f"  WARNING: {w}" for w in c.warnings)
    return "\n".join(lines)
