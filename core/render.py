"""Stylized renders that keep the face: the 3-pass pipeline and the 2-pass export stylizer, with drift per pass.

3-pass (identity-replication design):
  1. identity lock  txt2img, LoRA 1.0, cfg 5.8 — the person, from a seed the seed search locked;
  2. scene          img2img from pass 1, LoRA 0.85, cfg 6.3 — the scene prompt recomposes around the face;
  3. realism        img2img from pass 2, LoRA 0.90, cfg 6.8 — photographic finish;
     then a 30 % rescue blend back toward the identity-locked render (pass 1).
2-pass export stylizer:
  1. anchor         txt2img with the LoRA (1.0, cfg 5.8);
  2. realism base   img2img on a high-fidelity realism checkpoint (a second model; the same one when none is
                    given), LoRA off by default, cfg 6.8.

The img2img strengths are not in the design; ours (scene 0.55, realism 0.35, export 0.4) are starting points and
are logged like every other parameter. Drift is measured after every pass (and after the rescue blend), so a
user sees which pass loses the face. Every pass's prompt and parameters go into the output PNG metadata.

The passes run on any object with ``txt2img(prompt, seeds, ...)`` / ``img2img(image, prompt, seed, ...)``
(``core.diffusion.DiffusersRenderer``); the ComfyUI templates build the same passes from KSampler nodes with
the parameters of :func:`three_pass_plan` / :func:`two_pass_plan`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import IdentityLockError

PNG_KEY = "identitylock.render"
RESCUE_MODES = ("always", "if-better", "off")


@dataclass
class PassSpec:
    """One sampling pass. ``strength`` None = txt2img; otherwise img2img from the previous pass's output."""

    name: str
    prompt: str
    lora_scale: float
    cfg: float
    steps: int = 25
    strength: float | None = None
    negative: str = ""
    seed: int = 0
    model: str = "base"  # "base" or "realism" (the 2-pass stylizer's second checkpoint)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PassResult:
    spec: PassSpec
    image: np.ndarray
    seconds: float
    face: dict[str, Any] | None = (
        None  # SeedRecord dict: drift, locked, found, rescue, pose... (None = not scored)
    )

    @property
    def drift(self) -> float | None:
        return None if self.face is None else self.face.get("drift")

    def to_dict(self) -> dict[str, Any]:
        return {**self.spec.to_dict(), "seconds": round(self.seconds, 3), "identity": self.face}


@dataclass
class RenderResult:
    mode: str  # "3-pass" | "2-pass"
    passes: list[PassResult]
    final: np.ndarray
    final_face: dict[str, Any] | None
    rescue: dict[str, Any] | None = None  # {"blend": 0.3, "mode": ..., "applied": bool, "drift_before": ...}
    width: int | None = None
    height: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "format": "identitylock.render",
            "mode": self.mode,
            "width": self.width,
            "height": self.height,
            "passes": [p.to_dict() for p in self.passes],
            "rescue": self.rescue,
            "final_identity": self.final_face,
            "lost_face_at": self.lost_face_at(),
            **self.extra,
        }

    def lost_face_at(self) -> str | None:
        """The first pass whose render is a miss or not locked (None: the face held, or drift not measured)."""
        for p in self.passes:
            if p.face is not None and not p.face.get("locked"):
                return p.spec.name
        return None

    def table(self) -> str:
        lines = [
            f"{'pass':<16} {'lora':>5} {'cfg':>5} {'strength':>8} {'drift':>8} {'locked':>6} {'time s':>7}"
        ]
        rows = [
            (p.spec.name, p.spec.lora_scale, p.spec.cfg, p.spec.strength, p.face, p.seconds)
            for p in self.passes
        ]
        if self.rescue and self.rescue.get("mode") != "off":
            rows.append((f"rescue {self.rescue['blend']:.0%}", None, None, None, self.final_face, 0.0))
        for name, lora, cfg, strength, face, secs in rows:
            if face is None:
                d, lk = "       -", "-"
            elif face.get("drift") is None:
                d, lk = "    miss", "no"
            else:
                d, lk = f"{face['drift']:8.4f}", "yes" if face.get("locked") else "no"
            lines.append(
                f"{name:<16} {'' if lora is None else f'{lora:.2f}':>5} {'' if cfg is None else f'{cfg:.1f}':>5} "
                f"{'txt2img' if strength is None and lora is not None else ('' if strength is None else f'{strength:.2f}'):>8} "
                f"{d:>8} {lk:>6} {secs:7.2f}"
            )
        lost = self.lost_face_at()
        if lost:
            lines.append(f"identity lost at pass: {lost}")
        return "\n".join(lines)

    def save(self, out_dir: str | os.PathLike, stem: str = "render", save_passes: bool = True) -> list[Path]:
        """Final PNG (+ one per pass) with the full metadata JSON in a text chunk, and ``<stem>.json``."""
        from .fileio import check_output_dir, confined_name, write_text_atomic
        from .images import save_png

        stem = confined_name(stem, "render name")  # '../../x' must not write outside out_dir
        out = check_output_dir(out_dir, "render output folder")
        meta = json.dumps(self.metadata())
        paths = [save_png(self.final, out / f"{stem}.png", {PNG_KEY: meta})]
        if save_passes:
            for i, p in enumerate(self.passes, 1):
                pmeta = json.dumps({"format": "identitylock.render_pass", "index": i, **p.to_dict()})
                paths.append(save_png(p.image, out / f"{stem}_pass{i}_{p.spec.name}.png", {PNG_KEY: pmeta}))
        js = out / f"{stem}.json"
        write_text_atomic(js, json.dumps(self.metadata(), indent=2))
        paths.append(js)
        return paths


class Renderer(Protocol):
    def txt2img(self, prompt: str, seeds: Any, **kw: Any) -> list[np.ndarray]: ...

    def img2img(self, image: np.ndarray, prompt: str, seed: int, **kw: Any) -> np.ndarray: ...


# -- plans -----------------------------------------------------------------------------------------------------
def _check_plan_numbers(steps: Any, **values: Any) -> None:
    """Refuse what would crash the sampler later (or silently do nothing): steps < 1, NaN/inf cfg or strength."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise IdentityLockError(f"steps must be a whole number of at least 1, got {steps!r}")
    for name, v in values.items():
        if not isinstance(v, (int, float, np.number)) or not math.isfinite(float(v)):
            raise IdentityLockError(f"{name} must be a finite number, got {v!r}")
        if "strength" in name and not 0.0 < float(v) <= 1.0:
            raise IdentityLockError(f"{name} must be in (0, 1] (the share of the image re-noised), got {v!r}")


def img2img_steps(steps: int, strength: float) -> int:
    """Steps to ask for so that img2img at ``strength`` denoises at least once.

    diffusers runs ``int(steps * strength)`` of the schedule's steps; 0 (e.g. ``--steps 2`` at strength 0.35)
    gives an empty schedule and a crash deep in the UNet. One denoising step is the least that means anything.
    """
    n = max(1, int(steps))
    while int(n * float(strength)) < 1:
        n += 1
    return n


def three_pass_plan(
    identity_prompt: str,
    scene_prompt: str,
    *,
    realism_prompt: str | None = None,
    negative: str = "",
    seed: int = 0,
    steps: int = 25,
    scene_strength: float = 0.55,
    realism_strength: float = 0.35,
    lora_scales: tuple[float, float, float] = (1.0, 0.85, 0.90),
    cfgs: tuple[float, float, float] = (5.8, 6.3, 6.8),
) -> list[PassSpec]:
    """Identity lock -> scene -> realism, with the design's LoRA scales and cfg values."""
    if not identity_prompt.strip() or not scene_prompt.strip():
        raise IdentityLockError(
            "3-pass render needs an identity prompt (with the trigger word) and a scene prompt"
        )
    _check_plan_numbers(steps, scene_strength=scene_strength, realism_strength=realism_strength,
                        **{f"cfg{i + 1}": c for i, c in enumerate(cfgs)},
                        **{f"lora_scale{i + 1}": x for i, x in enumerate(lora_scales)})  # fmt: skip
    realism = realism_prompt or f"{scene_prompt}, photorealistic, natural skin texture, 85mm photo"
    return [
        PassSpec("identity_lock", identity_prompt, lora_scales[0], cfgs[0], steps, None, negative, seed,
                 note="identity lock"),
        PassSpec("scene", f"{identity_prompt}, {scene_prompt}", lora_scales[1], cfgs[1], steps, scene_strength,
                 negative, seed + 1, note="scene-specific composition"),
        PassSpec("realism", f"{identity_prompt}, {realism}", lora_scales[2], cfgs[2], steps, realism_strength,
                 negative, seed + 2, note="final realism (rescue blend follows)"),
    ]  # fmt: skip


def two_pass_plan(
    prompt: str,
    *,
    realism_prompt: str | None = None,
    negative: str = "",
    seed: int = 0,
    steps: int = 25,
    anchor_lora: float = 1.0,
    anchor_cfg: float = 5.8,
    realism_lora: float = 0.0,
    realism_cfg: float = 6.8,
    realism_strength: float = 0.4,
) -> list[PassSpec]:
    """LoRA anchor, then the realism base (img2img on the realism checkpoint)."""
    if not prompt.strip():
        raise IdentityLockError("2-pass render needs a prompt")
    _check_plan_numbers(steps, anchor_lora=anchor_lora, anchor_cfg=anchor_cfg, realism_lora=realism_lora,
                        realism_cfg=realism_cfg, realism_strength=realism_strength)  # fmt: skip
    realism = realism_prompt or f"{prompt}, photorealistic, high detail, natural light"
    return [
        PassSpec("anchor", prompt, anchor_lora, anchor_cfg, steps, None, negative, seed, note="LoRA anchor"),
        PassSpec("realism_base", realism, realism_lora, realism_cfg, steps, realism_strength, negative, seed + 1,
                 model="realism", note="high-fidelity realism base"),
    ]  # fmt: skip


def rescue_blend(image: np.ndarray, anchor: np.ndarray, amount: float) -> np.ndarray:
    """``(1-amount)·image + amount·anchor`` in pixel space (anchor resized when sizes differ)."""
    if not 0.0 <= amount <= 1.0:
        raise IdentityLockError(f"rescue blend must be between 0 and 1, got {amount}")
    if anchor.shape != image.shape:
        from PIL import Image

        anchor = np.asarray(Image.fromarray(anchor).resize((image.shape[1], image.shape[0]), Image.LANCZOS))
    out = image.astype(np.float32) * (1.0 - amount) + anchor.astype(np.float32) * amount
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# -- running ---------------------------------------------------------------------------------------------------
def run_passes(
    renderer: Renderer,
    plan: list[PassSpec],
    *,
    reference: Any = None,
    engine: Any = None,
    realism_renderer: Renderer | None = None,
    width: int | None = None,
    height: int | None = None,
    rescue: float = 0.0,
    rescue_mode: str = "always",
    rescue_from: int = 0,
    threshold: float | None = None,
    mode: str | None = None,
    extra: dict[str, Any] | None = None,
    progress: Any = None,
) -> RenderResult:
    """Run the passes in order (pass 1 txt2img, the rest img2img), scoring drift after each when a reference is given.

    ``rescue``: blend the last pass back toward pass ``rescue_from`` (0 = the identity-locked render);
    ``rescue_mode``: "always", "if-better" (keep the blend only when it lowers drift), "off".
    """
    from .seeds import score_image

    if not plan:
        raise IdentityLockError("empty render plan")
    if plan[0].strength is not None:
        raise IdentityLockError("the first pass must be txt2img (strength None)")
    if rescue_mode not in RESCUE_MODES:
        raise IdentityLockError(f"rescue_mode must be one of {', '.join(RESCUE_MODES)}")
    if not isinstance(rescue, (int, float)) or not 0.0 <= float(rescue) <= 1.0:  # NaN fails too
        raise IdentityLockError(f"rescue blend must be between 0 and 1, got {rescue!r}")
    if reference is not None and engine is None:
        from .faces import get_engine

        engine = get_engine(reference.backend)

    def score(img: np.ndarray, seed: int) -> dict[str, Any] | None:
        if reference is None:
            return None
        d = score_image(img, reference, engine, threshold=threshold, seed=seed).to_dict()
        for k in ("rank", "path", "render_seconds"):
            d.pop(k, None)
        return d

    results: list[PassResult] = []
    prev: np.ndarray | None = None
    for i, spec in enumerate(plan):
        r = realism_renderer if (spec.model == "realism" and realism_renderer is not None) else renderer
        kw = {"negative": spec.negative, "steps": spec.steps, "cfg": spec.cfg, "lora_scale": spec.lora_scale}
        t0 = time.perf_counter()
        if spec.strength is None:
            img = r.txt2img(spec.prompt, [spec.seed], width=width, height=height, **kw)[0]
        else:
            need = img2img_steps(spec.steps, spec.strength)
            if need != spec.steps:  # say so in the table and metadata: the pass ran more steps than asked
                spec.note = (
                    f"{spec.note}; steps raised from {spec.steps} to {need} (strength {spec.strength:g})"
                )
                spec.steps = kw["steps"] = need
            img = r.img2img(prev, spec.prompt, spec.seed, strength=spec.strength, **kw)
        secs = time.perf_counter() - t0
        results.append(PassResult(spec, img, secs, score(img, spec.seed)))
        prev = img
        if progress is not None:
            progress(i + 1, len(plan))
    final, final_face, rescue_info = prev, results[-1].face, None
    if rescue > 0 and len(results) > 1:
        rescue_info = {"blend": rescue, "mode": rescue_mode, "toward": results[rescue_from].spec.name}
        if rescue_mode != "off":
            blended = rescue_blend(prev, results[rescue_from].image, rescue)
            bface = score(blended, plan[-1].seed)
            before = results[-1].drift
            after = None if bface is None else bface.get("drift")
            better = after is not None and (before is None or after <= before)
            apply = rescue_mode == "always" or better
            rescue_info.update({"drift_before": before, "drift_after": after, "applied": apply})
            if apply:
                final, final_face = blended, bface
    realism_name = getattr(realism_renderer, "name", None)
    meta = dict(extra or {})
    if realism_name:
        meta["realism_model"] = realism_name
    return RenderResult(
        mode=mode or f"{len(plan)}-pass",
        passes=results,
        final=final,
        final_face=final_face,
        rescue=rescue_info,
        width=int(final.shape[1]),
        height=int(final.shape[0]),
        extra=meta,
    )


def render_three_pass(renderer: Renderer, identity_prompt: str, scene_prompt: str, *, reference: Any = None,
                      rescue: float = 0.30, rescue_mode: str = "always", width: int | None = None,
                      height: int | None = None, engine: Any = None, extra: dict[str, Any] | None = None,
                      **plan_kw: Any) -> RenderResult:  # fmt: skip
    plan = three_pass_plan(identity_prompt, scene_prompt, **plan_kw)
    return run_passes(renderer, plan, reference=reference, engine=engine, width=width, height=height,
                      rescue=rescue, rescue_mode=rescue_mode, mode="3-pass", extra=extra)  # fmt: skip


def render_two_pass(renderer: Renderer, prompt: str, *, realism_renderer: Renderer | None = None,
                    reference: Any = None, width: int | None = None, height: int | None = None,
                    engine: Any = None, extra: dict[str, Any] | None = None, **plan_kw: Any) -> RenderResult:  # fmt: skip
    plan = two_pass_plan(prompt, **plan_kw)
    return run_passes(renderer, plan, reference=reference, engine=engine, realism_renderer=realism_renderer,
                      width=width, height=height, mode="2-pass", extra=extra)  # fmt: skip


def read_render_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The render metadata stored in a render PNG (one IdentityLockError when missing or unusable)."""
    from .seeds import read_png_json

    return read_png_json(path, PNG_KEY, "IdentityLock render metadata")
