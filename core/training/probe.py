"""Identity probe bookkeeping (pure Python): which checkpoint had the best median drift.

The trainer calls a probe every N steps; the probe renders K fixed-seed samples with the current LoRA and scores
each one's drift (1 - cosine similarity to the IDENTITY). This module only records and selects, so the selection
logic is testable with any ``score(image) -> drift`` callable.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProbeRecord:
    step: int
    phase: str
    drifts: list[float]
    median: float
    faces_found: int


@dataclass
class ProbeTracker:
    """Keeps every probe's drifts and the state of the best one (lowest median drift; ties -> earlier step).

    Images where no face was found score ``None`` (or NaN) and count as drift 1.0 (the worst possible on the
    cosine scale for non-negative similarity) so a LoRA that destroys faces never wins.
    """

    records: list[ProbeRecord] = field(default_factory=list)
    best_index: int | None = None
    best_state: Any = None

    def record(
        self, step: int, phase: str, drifts: Sequence[float | None], state_fn: Callable[[], Any] | None = None
    ) -> bool:
        """Add one probe; returns True when it is the new best (then ``state_fn()`` is stored)."""
        clean = [1.0 if d is None or (isinstance(d, float) and math.isnan(d)) else float(d) for d in drifts]
        if not clean:
            raise ValueError("probe returned no scores")
        found = sum(1 for d in drifts if d is not None and not (isinstance(d, float) and math.isnan(d)))
        rec = ProbeRecord(
            step=step, phase=phase, drifts=clean, median=float(statistics.median(clean)), faces_found=found
        )
        self.records.append(rec)
        if self.best_index is None or rec.median < self.records[self.best_index].median:
            self.best_index = len(self.records) - 1
            self.best_state = state_fn() if state_fn else None
            return True
        return False

    @property
    def best(self) -> ProbeRecord | None:
        return None if self.best_index is None else self.records[self.best_index]

    def curve(self) -> list[tuple[int, float]]:
        return [(r.step, r.median) for r in self.records]

    def state_dict(self) -> dict[str, Any]:
        return {
            "records": [r.__dict__ for r in self.records],
            "best_index": self.best_index,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = [ProbeRecord(**r) for r in state["records"]]
        self.best_index = state["best_index"]
        self.best_state = state["best_state"]


def make_probe(
    render: Callable[[], Sequence[Any]], score: Callable[[Any], float | None]
) -> Callable[[], list]:
    """Combine a renderer (K fixed-seed images with the current LoRA) and a drift scorer into a probe."""

    def probe() -> list:
        return [score(img) for img in render()]

    return probe


def drift_scorer(reference: Any, engine: Any | None = None) -> Callable[[Any], float | None]:
    """score(image) -> drift from an IdentityReference using the lead's face engine (None when no face)."""
    from ..seeds import score_image

    if engine is None:
        from ..faces import get_engine

        engine = get_engine(reference.backend)

    def score(image) -> float | None:
        rec = score_image(image, reference, engine)
        return rec.drift if rec.found else None

    return score
