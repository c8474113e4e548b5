"""Adaptive LoRA training: convergence statistics, phases, presets, the LoRA file format and the trainer.

Import the submodules you need; this package import is cheap (no torch). ``convergence``, ``phases`` and
``presets`` are pure Python/numpy; ``trainer``, ``lora_format``, ``network`` and the backends need torch.
"""

from __future__ import annotations
