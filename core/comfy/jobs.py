"""The job model of a fan-out: what to run (:class:`Job`) and what came of it (:class:`JobResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """One prompt to run. ``name`` prefixes its output files; ``meta`` travels to the result."""

    name: str
    prompt: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    uploads: dict[str, str] = field(
        default_factory=dict
    )  # "node ref.input" -> local path, uploaded per server


@dataclass
class JobResult:
    job: Job
    server: str
    prompt_id: str | None = None
    files: list[str] = field(default_factory=list)  # paths in the output folder
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
