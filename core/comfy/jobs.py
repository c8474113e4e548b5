"""The job model of a fan-out: what to run (:class:`Job`) and what came of it (:class:`JobResult`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import EXIT_ERROR


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
    """A job that ended: finished (``error`` is None) or failed with a one-sentence reason."""

    job: Job
    server: str
    prompt_id: str | None = None
    files: list[str] = field(default_factory=list)  # paths in the output folder
    error: str | None = None
    exit_code: int = EXIT_ERROR  # when failed: 2 bad input (the user can fix it), 1 anything else

    @property
    def ok(self) -> bool:
        return self.error is None


def seed_jobs(
    stem: str, prompt: dict[str, Any], seeds: Iterable[int], uploads: dict[str, str] | None = None
) -> Iterator[Job]:
    """One job per seed, made lazily: ``--seeds 0:100000000`` costs memory only for the jobs running now."""
    from .workflow import WorkflowError, seed_targets, set_seed

    targets = seed_targets(prompt)
    if not targets:
        raise WorkflowError("--seeds: the workflow has no literal 'seed' / 'noise_seed' input to vary")

    def make() -> Iterator[Job]:
        for s in seeds:
            yield Job(f"{stem}_seed_{s}", set_seed(prompt, s, targets), {"seed": s}, dict(uploads or {}))

    return make()
