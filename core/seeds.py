"""Seed discovery: render the face over many seeds, measure each render's drift, keep the ones that stay the person.

The search works over any ``render(seed) -> image`` callable (diffusers in the CLI, ComfyUI's own sampler in the
DriftSeedSearch node, stored photos in tests), so the scoring, ranking, early stop and saving are written once.

A render is locked only when exactly one face was found and its drift is at or below the threshold: a render
with the person *and* someone else is not the person alone. Ranking (deterministic): renders with exactly one
face first, by drift ascending, ties by seed; then renders with several faces, by the drift of the primary face;
renders without a face ("misses") last, by seed. A render that fails to produce an image is recorded with its error and ranked with the
misses; it never stops the search. Early stop counts locked renders in seed-list order and stops right after the
K-th, independently of the batch size used to render.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IdentityLockError
from .seed_inputs import check_threshold, parse_seeds
from .seed_results import HeldImages, describe_error, is_out_of_memory, rank_key

_log = logging.getLogger("IdentityLock.seeds")

REPORT_FORMAT = "identitylock.seed_search"
PNG_KEY = "identitylock"  # PNG text chunk holding the record as JSON
SAVE_MODES = ("none", "locked", "top", "all")


@dataclass
class SeedRecord:
    """What one seed produced, as measured. ``drift`` is None for a miss (no face, or the render failed)."""

    seed: int
    drift: float | None = None
    locked: bool = False
    found: bool = False
    faces: int = 0  # faces found in the render; only a render with exactly one can be locked
    rescue: str | None = None  # detection rung that found the face; None = miss
    det_score: float | None = None
    detector: str | None = None
    pose: dict[str, Any] | None = None  # yaw / pitch / roll / confidence / method
    bbox: list[float] | None = None
    error: str | None = None  # render or scoring failure (the search carries on)
    rank: int | None = None  # 1 = best, after ranking
    render_seconds: float = 0.0
    score_seconds: float = 0.0
    path: str | None = None  # saved verify image, when saving

    @property
    def miss(self) -> bool:
        return self.drift is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["miss"] = self.miss
        if self.drift is not None:
            d["drift"] = round(float(self.drift), 6)
        d["render_seconds"] = round(self.render_seconds, 4)
        d["score_seconds"] = round(self.score_seconds, 4)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeedRecord:
        """A record read back from a results file (unknown keys ignored)."""
        names = {f for f in cls.__dataclass_fields__ if f != "rank"}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SeedSearchResult:
    """Ranked records plus the images kept (``images[seed]``, uint8 RGB) and why the search ended."""

    records: list[SeedRecord]  # ranked, best first
    threshold: float
    backend: str
    model: str
    seeds_requested: int
    stopped_early: bool = False
    top_k: int | None = None
    images: dict[int, np.ndarray] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # caller's parameters (prompt, steps, cfg...)
    batch_size: int = 1  # seeds per batch at the end (halved on each out-of-memory)
    oom_retries: int = 0
    resumed: int = 0  # records read back from the results file, not rendered again

    @property
    def best(self) -> SeedRecord | None:
        return self.records[0] if self.records else None

    @property
    def locked(self) -> list[SeedRecord]:
        return [r for r in self.records if r.locked]

    @property
    def misses(self) -> list[SeedRecord]:
        return [r for r in self.records if r.miss]

    @property
    def top(self) -> list[SeedRecord]:
        return self.records[: self.top_k] if self.top_k else list(self.records)

    def no_lock_reason(self) -> str | None:
        """Why no render locked, and what to change (None when one did): for the node's blocked output and the CLI."""
        if self.locked:
            return None
        n = len(self.records)
        scored = [r for r in self.records if r.drift is not None]
        alone = [r for r in scored if r.faces <= 1]
        if not scored:
            errors = sum(r.error is not None for r in self.records)
            why = f"{errors} render(s) failed" if errors else "no render showed a face"
            return (
                f"no seed locked: {why} in {n} seed(s); check the model, VAE and prompt (a close-up portrait "
                "prompt helps the face detector)"
            )
        if not alone:
            return (
                f"no seed locked: every render with a face in {n} seed(s) showed several faces; ask for one person "
                "(e.g. add 'multiple people' to the negative prompt)"
            )
        best = min(alone, key=lambda r: (r.drift, r.seed))
        return (
            f"no seed locked: the best single-face render (seed {best.seed}) has drift {best.drift:.4f} > "
            f"threshold {self.threshold:g} ({self.backend}) over {n} seed(s); try more seeds, a stronger identity "
            "LoRA, or check that the IDENTITY is this person"
        )

    def to_dict(self) -> dict[str, Any]:
        render = [r.render_seconds for r in self.records if r.error is None]
        score = [r.score_seconds for r in self.records if r.error is None]
        return {
            "format": REPORT_FORMAT,
            "backend": self.backend,
            "model": self.model,
            "threshold": self.threshold,
            "drift": "1 - cosine similarity to the reference centroid",
            "seeds_requested": self.seeds_requested,
            "seeds_rendered": len(self.records),
            "stopped_early": self.stopped_early,
            "locked": len(self.locked),
            "misses": len(self.misses),
            "best_seed": self.best.seed if self.best else None,
            "top_k": self.top_k,
            "batch_size": self.batch_size,
            "oom_retries": self.oom_retries,
            "resumed": self.resumed,
            "errors": sum(r.error is not None for r in self.records),
            "mean_render_seconds": round(float(np.mean(render)), 4) if render else None,
            "mean_score_seconds": round(float(np.mean(score)), 4) if score else None,
            "parameters": self.extra,
            "records": [r.to_dict() for r in self.records],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """Plain-text table for terminals and logs."""
        lines = [
            f"{'rank':>4} {'seed':>20} {'drift':>8} {'locked':>6} {'faces':>5} {'face':>13} {'det':>5} {'yaw':>6}"
        ]
        for r in self.records:
            drift_txt = "   miss" if r.drift is None else f"{r.drift:8.4f}"
            face = r.error and "error" or (r.rescue or "none")
            det = f"{r.det_score:5.2f}" if r.det_score is not None else "    -"
            yaw = f"{r.pose['yaw']:6.1f}" if r.pose and r.pose.get("yaw") is not None else "     -"
            lines.append(
                f"{r.rank:>4} {r.seed:>20} {drift_txt:>8} {'yes' if r.locked else 'no':>6} {r.faces:>5} "
                f"{face:>13} {det} {yaw}"
            )
        multi = sum(r.faces > 1 for r in self.records)
        if multi:
            lines.append(f"{multi} render(s) with several faces: never locked (the person must be alone)")
        lines.append(
            f"{len(self.locked)} locked (drift <= {self.threshold:g}, {self.backend}), {len(self.misses)} miss(es), "
            f"{len(self.records)}/{self.seeds_requested} seeds rendered"
            + (" (stopped early)" if self.stopped_early else "")
        )
        return "\n".join(lines)


# -- scoring ---------------------------------------------------------------------------------------------------
def score_image(
    image: np.ndarray,
    reference: Any,
    engine: Any,
    *,
    threshold: float | None = None,
    rescue: bool = True,
    seed: int = 0,
) -> SeedRecord:
    """Analyze one render and measure its primary face's drift from the reference. No face -> a miss record."""
    from .faces import analyze

    threshold = reference.lock_threshold if threshold is None else float(threshold)
    rec = SeedRecord(seed=int(seed))
    t0 = time.perf_counter()
    try:
        res = analyze(image, engine, rescue=rescue, embed=True)
        count = getattr(res, "face_count", None)  # all faces found, also any beyond a max_faces cap
        rec.faces = int(count) if count is not None else len(res.faces)
        rec.rescue = res.rescue
        face = res.primary
        if face is not None and face.embedding is not None:
            rec.found = True
            rec.drift = float(reference.drift_of(face.embedding, res.backend, res.model))
            rec.locked = bool(rec.drift <= threshold + 1e-12) and rec.faces == 1
            rec.det_score = float(face.det_score)
            rec.detector = face.detector
            rec.bbox = [round(float(v), 1) for v in face.bbox]
            rec.pose = face.pose.to_dict() if face.pose is not None else None
    except IdentityLockError as exc:
        if type(exc).__name__ == "BackendMismatchError":
            raise
        rec.error = str(exc)
    rec.score_seconds = time.perf_counter() - t0
    return rec


def rank_records(records: Sequence[SeedRecord]) -> list[SeedRecord]:
    """One face by drift (ties by seed), then several faces by drift, then misses by seed. Assigns ``rank``."""

    ranked = sorted(records, key=rank_key)
    for i, r in enumerate(ranked, 1):
        r.rank = i
    return ranked


# -- saving ----------------------------------------------------------------------------------------------------
def verify_filename(seed: int, drift: float | None) -> str:
    """``verify_seed_<seed>_drift_<d>.png`` (4 decimals), ``..._drift_miss.png`` without a face."""
    return f"verify_seed_{int(seed)}_drift_{'miss' if drift is None else f'{drift:.4f}'}.png"


def save_verify_image(
    image: np.ndarray, record: SeedRecord, out_dir: str | os.PathLike, extra: dict[str, Any] | None = None
) -> Path:
    """Write the render with its record (and the search parameters) as JSON in the PNG's text chunk."""
    from .images import array_to_uint8_rgb, save_png

    payload = {"format": "identitylock.seed_record", **record.to_dict()}
    payload.pop("path", None)
    if extra:
        payload["parameters"] = extra
    path = Path(out_dir) / verify_filename(record.seed, record.drift)
    save_png(array_to_uint8_rgb(image, check=False), path, {PNG_KEY: json.dumps(payload)})
    record.path = str(path)
    return path


def read_png_json(path: str | os.PathLike, key: str, what: str) -> dict[str, Any]:
    """The JSON object in PNG text chunk ``key``; a missing, unreadable or hostile chunk (bad JSON, nesting deep
    enough for RecursionError, not an object) is one IdentityLockError, never a traceback."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            text = getattr(img, "text", {}) or img.info
            raw = text.get(key)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise IdentityLockError(f"{path}: cannot read this PNG ({exc})") from None
    if raw is None:
        raise IdentityLockError(f"{path}: no {what} in this PNG")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise IdentityLockError(f"{path}: the {what} in this PNG is not valid JSON") from None
    if not isinstance(data, dict):
        raise IdentityLockError(f"{path}: the {what} in this PNG is not a JSON object")
    return data


def read_verify_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The record stored in a verify PNG (raises when the file has none)."""
    return read_png_json(path, PNG_KEY, "IdentityLock record")


# -- the search ------------------------------------------------------------------------------------------------
RenderFn = Callable[[int], Any]
RenderBatchFn = Callable[[list[int]], Sequence[Any]]
ScoreFn = Callable[[np.ndarray, int], SeedRecord]


def search_seeds(
    render: RenderFn | None,
    seeds: str | Iterable[int],
    reference: Any,
    *,
    engine: Any = None,
    threshold: float | None = None,
    stop_after: int | None = None,
    top_k: int | None = None,
    rescue: bool = True,
    batch_size: int = 1,
    render_batch: RenderBatchFn | None = None,
    keep_images: str = "top",
    save: str = "none",
    out_dir: str | os.PathLike | None = None,
    extra: dict[str, Any] | None = None,
    on_result: Callable[[SeedRecord, np.ndarray | None, int, int], None] | None = None,
    check_cancel: Callable[[], None] | None = None,
    results: str | os.PathLike | None = None,
    resume: bool = False,
    fatal: tuple[type[BaseException], ...] = (),
    on_oom: Callable[[], None] | None = None,
    on_drop: Callable[[int], None] | None = None,
    score: ScoreFn | None = None,
) -> SeedSearchResult:
    """Render and score seeds in order; rank by drift; optionally stop after ``stop_after`` locked renders.

    ``render(seed)`` returns one image (uint8 or float 0..1 RGB, HxWx3); or give ``render_batch(seeds)`` returning
    one image per seed, used ``batch_size`` seeds at a time. ``keep_images``: "none", "top" (top-k / best, the
    only images ever held in memory), "all" (small searches only). ``save``: "none", "locked", "top", "all" ->
    ``verify_seed_<seed>_drift_<d>.png`` in ``out_dir``. Any exception of a render or its scoring is recorded in
    that seed's record and the search carries on, except ``fatal`` ones (a cancel) and a backend mismatch; an
    out-of-memory error halves the batch and retries it (``on_oom`` first, e.g. to empty a cache).
    ``results``: a JSON-lines file written one record at a time (see :mod:`core.seed_results`); with
    ``resume`` the seeds already in it are not rendered again. ``on_result(record, image, done, total)`` is
    called after each seed; ``check_cancel()`` between seeds may raise to cancel; ``score(image, seed)``
    replaces the face scoring (benchmarks).
    """
    from .images import array_to_uint8_rgb
    from .seed_results import ResultsFile

    if render is None and render_batch is None:
        raise IdentityLockError("search_seeds needs a render(seed) or render_batch(seeds) callable")
    if save not in SAVE_MODES:
        raise IdentityLockError(f"save must be one of {', '.join(SAVE_MODES)}, got {save!r}")
    if keep_images not in ("none", "top", "all"):
        raise IdentityLockError(f"keep_images must be none, top or all, got {keep_images!r}")
    if save != "none" and out_dir is None:
        raise IdentityLockError("saving verify images needs an output folder (out_dir)")
    if save != "none":
        from .fileio import check_output_dir

        check_output_dir(out_dir, "seed search output folder")  # type: ignore[arg-type]
    seed_list = parse_seeds(seeds) if isinstance(seeds, str) else parse_seeds(list(seeds))
    stop_after = int(stop_after) if stop_after else None
    top_k = int(top_k) if top_k else None
    threshold = check_threshold(threshold)
    threshold = reference.lock_threshold if threshold is None else threshold
    if score is None:
        if engine is None:
            from .faces import get_engine

            engine = get_engine(reference.backend)

        def score(image: np.ndarray, seed: int) -> SeedRecord:
            return score_image(image, reference, engine, threshold=threshold, rescue=rescue, seed=seed)

    batch_size = max(1, int(batch_size)) if render_batch is not None else 1
    limit = None if keep_images == "all" else (top_k or 1) if keep_images == "top" or save == "top" else 0
    held = HeldImages(limit, on_drop)
    log = None
    if results is not None:
        from .fileio import check_output_dir

        check_output_dir(Path(results).parent, "seed search results folder")
        log = ResultsFile(results)
    records: list[SeedRecord] = []
    if log is not None:
        wanted = set(seed_list)
        prior = log.start(reference.backend, reference.model, threshold, dict(extra or {}), resume)
        records = [SeedRecord.from_dict(d) for d in prior if d["seed"] in wanted]
    done = {r.seed for r in records}
    pending = [s for s in seed_list if s not in done]
    locked = sum(r.locked for r in records)
    total = len(seed_list)
    stopped = bool(stop_after and locked >= stop_after and pending)
    oom_retries = 0
    i = 0
    try:
        while i < len(pending) and not stopped:
            if check_cancel is not None:
                check_cancel()
            chunk = pending[i : i + batch_size]
            t0 = time.perf_counter()
            outs: list[Any] = [None] * len(chunk)
            errors: list[str | None] = [None] * len(chunk)
            try:
                if render_batch is not None:
                    outs = list(render_batch(chunk))
                    if len(outs) != len(chunk):
                        raise IdentityLockError(
                            f"render_batch returned {len(outs)} images for {len(chunk)} seeds"
                        )
                else:
                    outs = [render(chunk[0])]  # type: ignore[misc]
            except fatal:
                raise
            except Exception as exc:
                if is_out_of_memory(exc):
                    if on_oom is not None:
                        on_oom()
                    if len(chunk) > 1:  # the same seeds again, in smaller batches from now on
                        batch_size = max(1, len(chunk) // 2)
                        oom_retries += 1
                        _log.warning(
                            "out of memory with %d seeds per batch; retrying %d", len(chunk), batch_size
                        )
                        continue
                _log.warning("render of seed(s) %s failed", chunk, exc_info=True)
                outs, errors = [None] * len(chunk), [describe_error(exc)] * len(chunk)
            per_render = (time.perf_counter() - t0) / len(chunk)
            for seed, out, err in zip(chunk, outs, errors):
                rec, image = _measure(seed, out, err, score, array_to_uint8_rgb, fatal)
                rec.render_seconds = per_render
                records.append(rec)
                if image is not None and (save == "all" or (save == "locked" and rec.locked)):
                    save_verify_image(image, rec, out_dir, extra)  # type: ignore[arg-type]
                if log is not None:
                    log.append({**rec.to_dict(), "drift": rec.drift})  # exact: a resumed ranking is the same
                held.offer(rec, image)
                _log.info("seed %d: %s", seed, "miss" if rec.drift is None else
                          f"drift {rec.drift:.4f}{' (locked)' if rec.locked else ''}")  # fmt: skip
                if on_result is not None:
                    on_result(rec, image, len(records), total)
                if rec.locked:
                    locked += 1
                    if stop_after and locked >= stop_after:
                        stopped = len(records) < total
                        break
                if check_cancel is not None and len(chunk) > 1:
                    check_cancel()
            if log is not None:
                log.sync()
            i += len(chunk)
    finally:
        if log is not None:
            log.close()

    ranked = rank_records(records)
    result = SeedSearchResult(
        records=ranked, threshold=threshold, backend=reference.backend, model=reference.model,
        seeds_requested=total, stopped_early=stopped, top_k=top_k, extra=dict(extra or {}),
        batch_size=batch_size, oom_retries=oom_retries, resumed=len(done),
    )  # fmt: skip
    keep = result.top if top_k else ranked[:1]
    if limit != 0 and done:  # resumed: the best seeds may be from the earlier run, whose images are gone
        _render_again([r for r in keep if r.seed in done and r.error is None and r.seed not in held.images],
                      held.images, render, render_batch, batch_size, array_to_uint8_rgb)  # fmt: skip
    images = held.images
    if save == "top":
        for r in result.top:
            if r.seed in images:
                save_verify_image(images[r.seed], r, out_dir, extra)  # type: ignore[arg-type]
    if keep_images == "none":
        images = {}
    elif keep_images == "top":
        seeds_kept = {r.seed for r in keep}
        images = {s: im for s, im in images.items() if s in seeds_kept}
    result.images = images
    return result


def _measure(seed, out, err, score, to_rgb, fatal) -> tuple[SeedRecord, np.ndarray | None]:
    """One seed's record: its render converted and scored, or the reason it has none."""
    from .errors import BackendMismatchError

    image = None
    if err is None:
        try:
            image = to_rgb(np.asarray(out), name=f"render(seed={seed})", check=False)
            return score(image, seed), image
        except fatal:
            raise
        except BackendMismatchError:
            raise
        except Exception as exc:
            _log.warning("seed %d: scoring failed", seed, exc_info=not isinstance(exc, IdentityLockError))
            err = describe_error(exc)
    return SeedRecord(seed=seed, error=err), None


def _render_again(records, images, render, render_batch, batch_size, to_rgb) -> None:
    """Images of resumed seeds that rank at the top (rendering is deterministic per seed)."""
    seeds = [r.seed for r in records]
    for j in range(0, len(seeds), batch_size):
        chunk = seeds[j : j + batch_size]
        try:
            outs = list(render_batch(chunk)) if render_batch is not None else [render(s) for s in chunk]
            for s, out in zip(chunk, outs):
                images[s] = to_rgb(np.asarray(out), name=f"render(seed={s})", check=False)
        except Exception:  # the records stay; only their images are missing from the outputs
            _log.warning("could not render resumed seed(s) %s again", chunk, exc_info=True)


def write_report(
    result: SeedSearchResult, out_dir: str | os.PathLike, name: str = "seed_search.json"
) -> Path:
    from .fileio import check_output_dir, write_text_atomic

    path = check_output_dir(out_dir, "seed search output folder") / name
    write_text_atomic(path, result.to_json())
    return path
