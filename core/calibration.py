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
