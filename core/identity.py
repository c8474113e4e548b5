"""Identity references, drift and lock thresholds.

An :class:`IdentityReference` is the one value every consumer accepts (seed search, portrait, metrics,
trainer probe): per-image identity vectors, which backend/model made them, and their normalised centroid.
``drift(a, b) = 1 - cosine similarity``. Comparing vectors from different backends, models or dimensions raises
:class:`BackendMismatchError` instead of returning a meaningless number.

Lock thresholds are per backend (the scales differ a lot):
- insightface / ArcFace: 0.18 (from the identity-replication seed);
- dlib ResNet: 0.06, calibrated on the shared face set — see docs/identity.md and
  ``benchmarks/calibrate_dlib.py`` for the figures and how it was chosen.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendMismatchError, IdentityLockError
from .fileio import atomic_write_with

LOCK_THRESHOLDS: dict[str, float] = {"insightface": 0.18, "dlib": 0.06}
# A reference image whose leave-one-out drift exceeds this multiple of the lock threshold is flagged.
OUTLIER_FACTOR = 1.0
FORMAT_VERSION = "1"


def default_threshold(backend: str) -> float:
    """The lock threshold for a backend's vectors (drift at or below it counts as the same person)."""
    try:
        return LOCK_THRESHOLDS[backend]
    except KeyError as exc:
        raise IdentityLockError(f"no lock threshold known for backend {backend!r}") from exc


def normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(n <= 0) or not np.all(np.isfinite(v)):
        raise IdentityLockError("identity vector is zero or not finite")
    return v / n


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise BackendMismatchError(
            f"cannot compare identity vectors of dimension {a.shape[-1]} and {b.shape[-1]}: they come from "
            "different face backends; embed both with the same backend"
        )
    return float(np.dot(normalize(a), normalize(b)))


def drift(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity: 0 for identical directions, up to 2 for opposite ones."""
    return 1.0 - cosine(a, b)


@dataclass
class IdentityReference:
    """Identity vectors of one person plus where they came from. ``centroid`` is L2-normalised."""

    vectors: np.ndarray  # [N, D] float32, each row L2-normalised
    backend: str
    model: str
    sources: list[str] = field(default_factory=list)  # file names / batch indices, for reports
    threshold: float | None = None  # lock threshold; None = backend default

    def __post_init__(self) -> None:
        v = np.asarray(self.vectors, dtype=np.float32)
        if v.ndim == 1:
            v = v[None]
        if v.ndim != 2 or v.shape[0] == 0:
            raise IdentityLockError("an identity reference needs at least one identity vector")
        self.vectors = normalize(v).astype(np.float32)
        if not self.sources:
            self.sources = [f"#{i}" for i in range(len(self.vectors))]

    # -- basic properties ------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def centroid(self) -> np.ndarray:
        return normalize(self.vectors.mean(axis=0)).astype(np.float32)

    @property
    def lock_threshold(self) -> float:
        return self.threshold if self.threshold is not None else default_threshold(self.backend)

    def check_compatible(self, backend: str, model: str, dim: int) -> None:
        """Raise unless vectors from (backend, model, dim) can be compared with this reference."""
        if backend != self.backend or model != self.model or dim != self.dim:
            raise BackendMismatchError(
                f"identity reference was made with {self.backend}/{self.model} ({self.dim}-D) but the vector "
                f"comes from {backend}/{model} ({dim}-D). Use the same face backend for both (set backend="
                f"'{self.backend}') or re-embed the reference."
            )

    # -- measurements ----------------------------------------------------------------------------------
    def drift_of(self, vector: np.ndarray, backend: str | None = None, model: str | None = None) -> float:
        """Drift of one vector from the centroid (backend/model checked when given)."""
        vector = np.asarray(vector)
        self.check_compatible(backend or self.backend, model or self.model, int(vector.shape[-1]))
        return drift(self.centroid, vector)

    def leave_one_out(self) -> np.ndarray:
        """Each vector's similarity to the normalised centroid of the *others* (NaN with a single vector)."""
        n = len(self.vectors)
        if n < 2:
            return np.full(n, np.nan)
        total = self.vectors.astype(np.float64).sum(axis=0)
        sims = np.empty(n)
        for i in range(n):
            others = normalize(total - self.vectors[i])
            sims[i] = float(np.dot(others, self.vectors[i]))
        return sims

    def outliers(self) -> np.ndarray:
        """Boolean mask: images whose leave-one-out drift exceeds the lock threshold (likely someone else)."""
        loo = self.leave_one_out()
        with np.errstate(invalid="ignore"):
            return (1.0 - loo) > self.lock_threshold * OUTLIER_FACTOR

    def summary(self) -> str:
        loo = self.leave_one_out()
        lines = [
            f"Identity reference: {len(self.vectors)} image(s), {self.backend}/{self.model}, {self.dim}-D, "
            f"lock threshold {self.lock_threshold:.3f} (drift = 1 - cosine)",
        ]
        flags = self.outliers()
        for i, src in enumerate(self.sources):
            loo_txt = "n/a (single image)" if np.isnan(loo[i]) else f"{loo[i]:.4f} (drift {1 - loo[i]:.4f})"
            flag = "  <-- OUTLIER: probably not the same person, or a bad crop" if flags[i] else ""
            lines.append(f"  {src}: leave-one-out similarity {loo_txt}{flag}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        loo = self.leave_one_out()
        return {
            "backend": self.backend,
            "model": self.model,
            "dim": self.dim,
            "count": len(self.vectors),
            "lock_threshold": self.lock_threshold,
            "sources": list(self.sources),
            "leave_one_out_similarity": [None if np.isnan(x) else round(float(x), 5) for x in loo],
            "outliers": [bool(x) for x in self.outliers()],
        }

    # -- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.safetensors`` (vectors + centroid) with backend/model/sources in the header metadata."""
        from safetensors.numpy import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "format": "identitylock.identity",
            "format_version": FORMAT_VERSION,
            "backend": self.backend,
            "model": self.model,
            "dim": str(self.dim),
            "sources": json.dumps(self.sources),
            "threshold": "" if self.threshold is None else repr(float(self.threshold)),
        }
        tensors = {"vectors": self.vectors, "centroid": self.centroid}
        return atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> IdentityReference:
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise IdentityLockError(f"{path}: identity file not found")
        try:
            with safe_open(str(path), framework="numpy") as fh:
                meta = fh.metadata() or {}
                vectors = fh.get_tensor("vectors")
        except Exception as exc:
            raise IdentityLockError(f"{path}: not an IdentityLock identity file ({exc})") from exc
        if meta.get("format") != "identitylock.identity":
            raise IdentityLockError(f"{path}: not an IdentityLock identity file (missing format metadata)")
        threshold = float(meta["threshold"]) if meta.get("threshold") else None
        return cls(
            vectors=vectors,
            backend=meta["backend"],
            model=meta["model"],
            sources=json.loads(meta.get("sources", "[]")),
            threshold=threshold,
        )


def reference_from_analyses(analyses: list, sources: list[str] | None = None) -> IdentityReference:
    """Build a reference from FaceAnalysis results (primary face of each); misses are an error naming them."""
    vectors, names, backend, model = [], [], None, None
    missing = []
    for i, res in enumerate(analyses):
        name = sources[i] if sources else f"#{i}"
        if res is None or not res.found or res.primary.embedding is None:
            missing.append(name)
            continue
        if backend is None:
            backend, model = res.backend, res.model
        elif (res.backend, res.model) != (backend, model):
            raise BackendMismatchError(
                f"{name} was analysed with {res.backend}/{res.model}, others with {backend}/{model}"
            )
        vectors.append(res.primary.embedding)
        names.append(name)
    if missing:
        raise IdentityLockError(f"no face found in {', '.join(missing)}; remove or replace these images")
    if not vectors:
        raise IdentityLockError("no images to build an identity reference from")
    return IdentityReference(np.stack(vectors), backend, model, names)
