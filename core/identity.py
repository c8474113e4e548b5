"""Identity references, drift and lock thresholds.

An :class:`IdentityReference` is the one value every consumer accepts (seed search, portrait, metrics,
trainer probe): per-image identity vectors, which backend/model made them, and their normalised centroid.
``drift(a, b) = 1 - cosine similarity``. Comparing vectors from different backends, models or dimensions raises
:class:`BackendMismatchError` instead of returning a meaningless number.

Lock thresholds are per backend (the scales differ a lot):
- insightface / ArcFace: 0.18 (from the identity-replication seed; never calibrated here, see docs/identity.md);
- dlib ResNet: 0.06, calibrated on the shared face set — see docs/identity.md and
  ``benchmarks/calibrate_dlib.py`` for the figures and how it was chosen.
``identitylock calibrate DIR --save`` replaces either with one measured on the user's own labelled photos, per
backend/model (:func:`save_threshold`, read back by :func:`default_threshold`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendMismatchError, IdentityLockError
from .fileio import atomic_write_with, printable

LOCK_THRESHOLDS: dict[str, float] = {"insightface": 0.18, "dlib": 0.06}
# Identity-vector length of each backend's models (dlib ResNet 128-D, ArcFace 512-D).
BACKEND_DIMS: dict[str, int] = {"insightface": 512, "dlib": 128}
# A reference image whose leave-one-out drift exceeds this multiple of the lock threshold is flagged.
OUTLIER_FACTOR = 1.0
FORMAT_VERSION = "1"


CONFIG_ENV = "IDENTITYLOCK_CONFIG_DIR"
_saved_cache: dict[str, Any] = {}


def user_thresholds_path() -> Path:
    """Where ``identitylock calibrate --save`` keeps the user's own thresholds (one JSON file per user):
    ``$IDENTITYLOCK_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/identitylock``, else ``~/.config/identitylock``."""
    base = os.environ.get(CONFIG_ENV) or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config"), "identitylock"
    )
    return Path(base) / "thresholds.json"


def saved_thresholds() -> dict[str, dict[str, Any]]:
    """The calibrated thresholds saved for this user, keyed ``backend/model``; {} when none were saved."""
    path = user_thresholds_path()
    try:
        stamp = (str(path), path.stat().st_mtime_ns)
    except OSError:
        return {}
    if _saved_cache.get("stamp") == stamp:
        return _saved_cache["data"]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ValueError("not an object of objects")
        for key, entry in data.items():
            check_threshold(entry.get("threshold"), f"saved threshold for {key}")
    except (ValueError, OSError, IdentityLockError) as exc:
        raise IdentityLockError(
            f"{path}: the saved lock thresholds are unreadable ({exc}); run `identitylock calibrate ... --save` "
            "again or delete the file"
        ) from None
    _saved_cache.update(stamp=stamp, data=data)
    return data


def save_threshold(backend: str, model: str, threshold: float, details: dict[str, Any] | None = None) -> Path:
    """Store a calibrated lock threshold for (backend, model): from now on the default for their vectors."""
    from .fileio import write_json_atomic

    threshold = check_threshold(threshold)
    path = user_thresholds_path()
    data = dict(saved_thresholds())
    data[f"{backend}/{model}"] = {"threshold": threshold, **(details or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, data)


def default_threshold(backend: str, model: str | None = None) -> float:
    """The lock threshold for a backend's vectors (drift at or below it counts as the same person): the
    user's calibrated one for this backend/model when saved, else the built-in per-backend default."""
    if model is not None:
        saved = saved_thresholds().get(f"{backend}/{model}")
        if saved is not None:
            return float(saved["threshold"])
    try:
        return LOCK_THRESHOLDS[backend]
    except KeyError as exc:
        raise IdentityLockError(f"no lock threshold known for backend {backend!r}") from exc


def check_threshold(value: Any, what: str = "lock threshold") -> float:
    """A lock threshold as a float, or an error: it must be finite and strictly between 0 and 1.

    Why that range: drift = 1 - cosine runs from 0 (same direction) to 2 (opposite). At 1 or above, faces whose
    vectors are unrelated (cosine <= 0) would count as locked; at 0 or below nothing ever locks.
    """
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if not (math.isfinite(t) and 0.0 < t < 1.0):
        raise IdentityLockError(
            f"{what} {value!r} is not usable: it must be a number between 0 and 1, exclusive (drift = "
            f"1 - cosine; at 1 or above unrelated faces would count as locked; defaults: dlib "
            f"{LOCK_THRESHOLDS['dlib']}, insightface {LOCK_THRESHOLDS['insightface']})"
        )
    return t


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
        if self.threshold is not None:
            self.threshold = check_threshold(self.threshold)
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
        return self.threshold if self.threshold is not None else default_threshold(self.backend, self.model)

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
            lines.append(f"  {printable(src)}: leave-one-out similarity {loo_txt}{flag}")
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
        """Read a file written by :meth:`save`; anything malformed is one IdentityLockError naming the file."""
        path = Path(path)
        if not path.is_file():
            what = "is a folder, not an identity file" if path.is_dir() else "identity file not found"
            raise IdentityLockError(f"{path}: {what}")
        try:
            meta, tensors = _read_identity_file(path)
            return cls(
                vectors=tensors["vectors"],
                backend=meta["backend"],
                model=meta["model"],
                sources=meta["sources"],
                threshold=meta["threshold"],
            )
        except IdentityLockError as exc:
            raise IdentityLockError(
                f"{path}: not a usable IdentityLock identity file ({exc}); make it again with "
                "`identitylock embed` or the IdentityEmbed node"
            ) from None


def _read_identity_file(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header metadata and tensors of an identity file, each checked (IdentityLockError says what is wrong)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            raw = dict(fh.metadata() or {})
            if raw.get("format") != "identitylock.identity":
                raise IdentityLockError("no identitylock format metadata: is it a LoRA or another model?")
            names = set(fh.keys())
            if "vectors" not in names:
                raise IdentityLockError("no 'vectors' tensor")
            tensors = {k: fh.get_tensor(k) for k in ("vectors", "centroid") if k in names}
    except IdentityLockError:
        raise
    except Exception as exc:  # safetensors raises several types for a file that is not safetensors
        raise IdentityLockError(f"not a safetensors file: {str(exc).splitlines()[0][:120]}") from None
    meta: dict[str, Any] = {}
    for key in ("backend", "model"):
        if not raw.get(key):
            raise IdentityLockError(f"no {key!r} in its metadata")
        meta[key] = raw[key]
    if meta["backend"] not in BACKEND_DIMS:
        raise IdentityLockError(f"unknown backend {meta['backend']!r}")
    meta["threshold"] = check_threshold(raw["threshold"]) if raw.get("threshold") else None
    try:
        sources = json.loads(raw.get("sources") or "[]")
    except (ValueError, RecursionError):
        raise IdentityLockError("'sources' is not valid JSON") from None
    if not isinstance(sources, list) or not all(isinstance(x, str) for x in sources):
        raise IdentityLockError("'sources' is not a list of names")
    vectors = tensors["vectors"]
    dim = BACKEND_DIMS[meta["backend"]]
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] != dim:
        raise IdentityLockError(
            f"'vectors' has shape {list(vectors.shape)}, expected [N, {dim}] for {meta['backend']}"
        )
    if not np.issubdtype(vectors.dtype, np.floating) or not np.all(np.isfinite(vectors)):
        raise IdentityLockError("'vectors' holds values that are not finite numbers")
    if raw.get("dim") not in (None, str(dim)):
        raise IdentityLockError(f"metadata dim {raw.get('dim')!r} does not match the vectors ({dim})")
    if "centroid" in tensors and tensors["centroid"].shape != (dim,):
        raise IdentityLockError(f"'centroid' has shape {list(tensors['centroid'].shape)}, expected [{dim}]")
    if sources and len(sources) != len(vectors):
        raise IdentityLockError(f"{len(sources)} sources for {len(vectors)} vectors")
    meta["sources"] = sources
    return meta, tensors


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
                f"{name} was analyzed with {res.backend}/{res.model}, others with {backend}/{model}"
            )
        vectors.append(res.primary.embedding)
        names.append(name)
    if missing:
        raise IdentityLockError(f"no face found in {', '.join(missing)}; remove or replace these images")
    if not vectors:
        raise IdentityLockError(
            "no image with a usable face to build an identity reference from: use clear photos of one person"
        )
    return IdentityReference(np.stack(vectors), backend, model, names)
