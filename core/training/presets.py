"""Training presets as data (from the portfolio-curation and LoRA+IPAdapter seeds), plus JSON loading.

A preset fixes the LoRA shape (rank, alpha, dropout, target modules, unet-only), batching (batch size, gradient
accumulation) and a fixed single-phase schedule (lr, optimizer, scheduler, epochs). ``config_for`` turns a preset
into a TrainConfig with either that fixed schedule or the seed's 4-phase adaptive schedule (phase alphas then
replace the preset alpha; see phases.py for what a phase alpha means).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .convergence import ControllerConfig
from ..config_fields import check_fields, parse_json
from .phases import Phase, Schedule, seed_phases

# Module-name suffixes inside the UNet's transformer blocks (diffusers naming).
TARGETS = {
    "attn": ("to_q", "to_k", "to_v", "to_out.0"),
    "attn_ff": ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"),
}


@dataclass
class Preset:
    name: str
    rank: int
    alpha: float
    lr: float
    target_modules: str = "attn_ff"
    dropout: float = 0.0
    unet_only: bool = True
    batch_size: int = 1
    grad_accum: int = 1
    optimizer: str = "adamw8bit"
    scheduler: str = "cosine_with_restarts"
    restarts: int = 3
    warmup_steps: int = 0
    epochs: int | None = None
    steps: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.target_modules not in TARGETS:
            raise ValueError(f"preset {self.name}: target_modules must be one of {sorted(TARGETS)}")
        if self.rank < 1 or self.alpha <= 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError(f"preset {self.name}: rank, alpha, batch_size and grad_accum must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"preset {self.name}: dropout must be in [0, 1)")

    def fixed_steps(self, num_images: int) -> int:
        """Optimizer steps of the fixed schedule: ``steps`` or epochs × images / (batch × accumulation)."""
        if self.steps:
            return int(self.steps)
        per_epoch = math.ceil(max(1, num_images) / self.batch_size / self.grad_accum)
        return max(1, (self.epochs or 1) * per_epoch)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        return cls(**check_fields(cls, data, "preset"))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "EXP_FACIAL_UNET_FOCUS_LOW",
            rank=512,
            alpha=512,
            lr=1.0e-4,
            batch_size=1,
            grad_accum=8,
            epochs=5,
            description="maximum precision, slowest (portfolio seed preset 1)",
        ),
        Preset(
            "EXP_FACIAL_UNET_FOCUS_MID",
            rank=512,
            alpha=512,
            lr=1.2e-4,
            grad_accum=8,
            epochs=4,
            description="balanced speed and precision (portfolio seed preset 2)",
        ),
        Preset(
            "EXP_FACIAL_UNET_FOCUS_HIGH",
            rank=512,
            alpha=512,
            lr=1.4e-4,
            grad_accum=8,
            epochs=3,
            scheduler="constant",
            description="fast experimentation (portfolio seed preset 3; no scheduler given there)",
        ),
        Preset(
            "LORA_IPADAPTER_CHARACTER",
            rank=32,
            alpha=32,
            lr=1e-4,
            target_modules="attn",
            dropout=0.1,
            optimizer="adamw8bit",
            scheduler="cosine",
            warmup_steps=100,
            steps=2000,
            description="LoRA + IPAdapter seed config: rank 32, alpha 32, dropout 0.1, to_q/k/v/out, warm-up 100",
        ),
        Preset(
            "TINY_TEST",
            rank=4,
            alpha=4,
            lr=1e-3,
            optimizer="adamw",
            scheduler="constant",
            steps=200,
            description="small rank for CPU smoke runs",
        ),
    ]
}


@dataclass
class TrainConfig:
    """Everything the trainer needs besides data and model."""

    rank: int = 16
    alpha: float = 16
    dropout: float = 0.0
    target_modules: str = "attn_ff"
    train_text_encoder: bool = False
    batch_size: int = 1
    grad_accum: int = 1
    schedule: Schedule = field(default_factory=Schedule)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    seed: int = 0
    val_every: int = 50
    checkpoint_every: int = 0
    probe_every: int = 0
    preset: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schedule"] = self.schedule.to_dict()
        d["controller"] = self.controller.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = check_fields(cls, data, "config")
        if "schedule" in data:
            data["schedule"] = Schedule.from_dict(data["schedule"])
        if "controller" in data:
            data["controller"] = ControllerConfig.from_dict(data["controller"])
        return cls(**data)


def config_for(
    preset: str | Preset,
    num_images: int,
    adaptive: bool = True,
    phases: list[Phase] | None = None,
    **overrides: Any,
) -> TrainConfig:
    """TrainConfig from a preset: its fixed schedule, or the adaptive seed phases (or ``phases``)."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    if phases is not None:
        schedule = Schedule(phases=phases, adaptive=adaptive)
    elif adaptive:
        schedule = Schedule(phases=seed_phases(), adaptive=True)
    else:
        n = p.fixed_steps(num_images)
        fixed = Phase(
            "FIXED",
            lr=p.lr,
            alpha=p.alpha,
            loss="mse",
            optimizer=p.optimizer,
            min_steps=n,
            max_steps=n,
            scheduler=p.scheduler,
            restarts=p.restarts,
            warmup_steps=p.warmup_steps,
        )
        schedule = Schedule(phases=[fixed], adaptive=False)
    cfg = TrainConfig(
        rank=p.rank,
        alpha=p.alpha,
        dropout=p.dropout,
        target_modules=p.target_modules,
        train_text_encoder=not p.unet_only,
        batch_size=p.batch_size,
        grad_accum=p.grad_accum,
        schedule=schedule,
        preset=p.name,
    )
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise ValueError(f"unknown training option {k!r}")
        setattr(cfg, k, v)
    return cfg


def get_preset(name: str) -> Preset:
    """A built-in preset by name, or a JSON file path holding a preset dict (CLI only: the node offers a list)."""
    if name in PRESETS:
        return PRESETS[name]
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        return Preset.from_dict(parse_json(_read_text(path, "preset"), f"preset file {path.name}"))
    raise ValueError(
        f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} or give a preset .json file"
    )


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ValueError(f"{what}: cannot read {path} ({reason})") from None


def load_schedule(source: str, *, folder: str | Path | None = None, allow_paths: bool = True) -> Schedule:
    """Custom phases: JSON text (a list of phases or {"adaptive":..,"phases":[..]}), or a saved schedule.

    A saved schedule is a file path only when ``allow_paths`` (the CLI: the user's own files); the ComfyUI node
    passes ``allow_paths=False`` and a ``folder``, so a name means ``folder/NAME.json`` and nothing outside that
    folder is ever read (a prompt sent to the server must not make it read arbitrary files).
    """
    text = str(source).strip()
    if not text:
        raise ValueError('phases: empty; give JSON text such as [{"name": "A", "lr": 1e-4, "alpha": 4}]')
    if not text.startswith(("[", "{")):
        text = _read_text(_schedule_file(text, folder, allow_paths), "phases")
    return Schedule.from_dict(parse_json(text, "phases"))


def _schedule_file(name: str, folder: str | Path | None, allow_paths: bool) -> Path:
    if allow_paths:
        if Path(name).is_file():
            return Path(name)
        raise ValueError(f"phases: {name!r} is neither JSON text nor an existing file")
    stem = name[: -len(".json")] if name.endswith(".json") else name
    where = f"a .json file in {folder}" if folder else "JSON text"
    if folder is None or not re.fullmatch(r"[\w][\w.\-]*", stem) or ".." in stem:
        raise ValueError(
            f"phases: give JSON text (starting with [ or {{) or the plain name of {where}; paths are not read"
        )
    path = Path(folder) / f"{stem}.json"
    if path.resolve().parent != Path(folder).resolve():  # a symlink out of the folder
        raise ValueError(
            f"phases: {stem}.json in {folder} points outside that folder; copy the file there instead"
        )
    if not path.is_file():
        raise ValueError(
            f"phases: no saved schedule {stem!r}: put {stem}.json in {folder} or paste JSON text"
        )
    return path
