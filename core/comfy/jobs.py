"""The job model of a fan-out: what to run (:class:`Job`) and what came of it (:class:`JobResult`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK


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


@dataclass
class RunTally:
    """What came of a streamed run, in constant memory: counts, the worst exit code, the first error lines."""

    finished: int = 0
    failed: int = 0
    files: int = 0
    bad_input: bool = False
    errors: list[str] = field(default_factory=list)
    max_errors: int = 20

    def add(self, result: JobResult) -> None:
        if result.ok:
            self.finished += 1
            self.files += len(result.files)
            return
        self.failed += 1
        self.bad_input = self.bad_input or result.exit_code == EXIT_BAD_INPUT
        if len(self.errors) < self.max_errors:
            self.errors.append(f"error: {result.job.name}: {result.error}")

    def error_lines(self, todo: int) -> list[str]:
        """The first error lines, how many more failed, and how many of ``todo`` jobs were never run."""
        lines = list(self.errors)
        if self.failed > len(self.errors):
            lines.append(
                f"error: ... and {self.failed - len(self.errors)} more failed jobs (their errors are above)"
            )
        not_run = self.not_run(todo)
        if not_run:
            lines.append(
                f"error: {not_run} job(s) were not run (the run stopped: see the errors above); "
                "fix the cause and run again"
            )
        return lines

    def not_run(self, todo: int) -> int:
        return max(0, todo - self.finished - self.failed)

    def exit_code(self, todo: int) -> int:
        if not self.failed and not self.not_run(todo):
            return EXIT_OK
        return EXIT_BAD_INPUT if self.bad_input else EXIT_ERROR


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
