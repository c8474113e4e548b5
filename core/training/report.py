"""What a training run tells the user: a loss-curve image with phase boundaries and exits, a text report and
the metadata written into the LoRA file."""

from __future__ import annotations

from typing import Any

import numpy as np


def _smooth(values: list[float], k: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if k <= 1 or v.size < k:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    head = c[1:k] / np.arange(1, k)
    return np.concatenate([head, (c[k:] - c[:-k]) / k])


def loss_curve_image(result: Any, width: int = 800, height: int = 400) -> np.ndarray:
    """uint8 RGB plot: train loss (raw + moving average), validation loss, phase starts and exit markers."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    ml, mr, mt, mb = 50, 10, 20, 30
    pw, ph = width - ml - mr, height - mt - mb
    losses = list(result.losses)
    vals = [v for _, v in result.val_losses]
    n = max(1, result.steps)
    allv = np.asarray(losses + vals, dtype=np.float64)
    if allv.size == 0:
        return np.asarray(img)
    lo, hi = float(np.percentile(allv, 1)), float(np.percentile(allv, 99))
    hi = hi if hi > lo else lo + 1e-9

    def xy(step: float, value: float) -> tuple[float, float]:
        y = (min(max(value, lo), hi) - lo) / (hi - lo)
        return ml + pw * step / n, mt + ph * (1 - y)

    d.rectangle([ml, mt, ml + pw, mt + ph], outline="black")
    d.text((4, mt), f"{hi:.3g}", fill="black")
    d.text((4, mt + ph - 10), f"{lo:.3g}", fill="black")
    d.text((ml + pw // 2 - 20, height - 18), f"step (of {n})", fill="black")
    for step, name in result.phase_starts:
        x, _ = xy(step, lo)
        d.line([x, mt, x, mt + ph], fill=(150, 150, 150))
        d.text((x + 3, mt + 2), name, fill=(90, 90, 90))
    if len(losses) > 1:
        d.line([xy(i + 1, v) for i, v in enumerate(losses)], fill=(190, 200, 235), width=1)
        sm = _smooth(losses, max(1, len(losses) // 50))
        d.line([xy(i + 1, v) for i, v in enumerate(sm)], fill=(30, 60, 200), width=2)
    if len(result.val_losses) > 1:
        d.line([xy(s, v) for s, v in result.val_losses], fill=(220, 120, 0), width=2)
    for ex in result.exits:
        x, y = xy(ex.step, ex.val_loss if ex.val_loss is not None else lo)
        d.ellipse([x - 4, y - 4, x + 4, y + 4], outline=(200, 0, 0), width=2)
    d.text((ml + pw - 190, mt + ph - 28), "train (blue)  val (orange)", fill="black")
    d.text((ml + pw - 190, mt + ph - 16), "exits (red)  phases (grey)", fill="black")
    return np.asarray(img)


def split_text(split: dict[str, Any] | None) -> str | None:
    """One line: which source photos trained and which validated (None when unknown)."""
    if not split:
        return None
    return (
        f"validation split by {split.get('by', '?')}: trained on {', '.join(split.get('train', []))}; "
        f"validated on {', '.join(split.get('validation', []))}"
    )


def probe_lines(result: Any, selected: str | None = None, note: str | None = None) -> list[str]:
    """Every probe's drifts and median, and which state the LoRA file holds."""
    if not result.probes.records:
        return []
    lines = ["identity probes (step phase: per-sample drifts -> median):"]
    for r in result.probes.records:
        lines.append(f"  {r.step} {r.phase}: {', '.join(f'{d:.3f}' for d in r.drifts)} -> {r.median:.3f}")
    best = result.probes.best
    lines.append(f"best probe: step {best.step} ({best.phase}), median drift {best.median:.3f}")
    lines.append(
        f"saved weights: {selected or f'final step {result.steps}'}" + (f" ({note})" if note else "")
    )
    return lines


def report_text(
    result: Any,
    config: Any,
    lora_path: str | None = None,
    split: dict[str, Any] | None = None,
    selected: str | None = None,
    probe_note: str | None = None,
) -> str:
    """The run report; ``split`` (TrainData.split), ``selected`` and ``probe_note`` (from job.lora_to_save's
    extra) when known."""
    lines = [
        f"LoRA: {lora_path or '(not saved)'}",
        f"preset {config.preset}, rank {config.rank}, schedule {'adaptive' if config.schedule.adaptive else 'fixed'}",
        f"steps {result.steps} in {result.seconds:.0f}s; final validation loss {result.final_val_loss:.5f}",
    ]
    if (line := split_text(split)) is not None:
        lines.append(line)
    lines += [
        ex.message()
        + (f"; val {ex.val_loss:.5f}" if ex.val_loss is not None else "")
        + (f" (from {ex.val_start:.5f}, p={ex.val_p_value:.2f})" if ex.val_p_value is not None else "")
        for ex in result.exits
    ]
    if getattr(result, "skip_reason", ""):
        lines.append(result.skip_reason)
    lines += probe_lines(result, selected, probe_note)
    return "\n".join(lines)


def lora_metadata(
    result: Any, config: Any, trigger: str, base_model_hash: str, **extra: Any
) -> dict[str, Any]:
    """safetensors metadata; ``extra`` adds e.g. ``split`` (TrainData.split) and ``selected`` (job.lora_to_save)."""
    step_stride = max(1, len(result.losses) // 500)
    return {
        "trigger_word": trigger,
        "base_model_hash": base_model_hash,
        "preset": config.preset,
        "rank": config.rank,
        "alpha": float(extra.pop("alpha", config.alpha)),
        "steps": result.steps,
        "phases": config.schedule.to_dict(),
        "controller": config.controller.to_dict(),
        "exits": [e.__dict__ for e in result.exits],
        "skipped": list(getattr(result, "skipped", [])),
        "skip_reason": getattr(result, "skip_reason", ""),
        "final_val_loss": result.final_val_loss,
        "val_losses": result.val_losses,
        "losses": [round(float(v), 6) for v in result.losses[::step_stride]],
        "loss_stride": step_stride,
        "probe_curve": result.probes.curve(),
        "probes": [r.__dict__ for r in result.probes.records],  # every probe's per-sample drifts
        # the step whose weights the file holds: the best probe's when job.lora_to_save kept it, else the last
        "saved_step": result.probes.best.step if "selected" in extra else result.steps,
        "seed": config.seed,
        **extra,
    }
