"""Client for ComfyUI servers (the scale-out path: existing ComfyUI workers, no cluster code).

One module per concern, all dependency-light (stdlib + websocket-client; never ComfyUI):

- :mod:`.workflow` — load workflow files (API or UI format), ``--set`` edits, seeds;
- :mod:`.transport` — one server over HTTP + websocket (:class:`ComfyServer`);
- :mod:`.jobs` — the job model (:class:`Job`, :class:`JobResult`);
- :mod:`.download` — a finished run's files, staged and moved into the output folder when complete;
- :mod:`.fanout` — many jobs over many servers (:func:`run_jobs`);
- :mod:`.progress` — the one-line terminal progress display.
"""

from __future__ import annotations

from .download import download_outputs, output_name
from .errors import (
    ComfyError,
    ExecutionFailed,
    PromptRejected,
    ServerUnavailable,
    UploadFailed,
    WorkflowError,
)
from .fanout import run_jobs
from .jobs import Job, JobResult
from .progress import ProgressLine
from .transport import ComfyServer, RunResult, format_node_errors
from .workflow import (
    SEED_INPUTS,
    apply_sets,
    find_nodes,
    is_api_workflow,
    is_ui_workflow,
    load_workflow,
    node_title,
    parse_seed_range,
    parse_value,
    seed_targets,
    set_input,
    set_seed,
    split_set,
)

__all__ = [
    "SEED_INPUTS",
    "ComfyError",
    "ComfyServer",
    "ExecutionFailed",
    "Job",
    "JobResult",
    "ProgressLine",
    "PromptRejected",
    "RunResult",
    "ServerUnavailable",
    "UploadFailed",
    "WorkflowError",
    "apply_sets",
    "download_outputs",
    "find_nodes",
    "format_node_errors",
    "is_api_workflow",
    "is_ui_workflow",
    "load_workflow",
    "node_title",
    "output_name",
    "parse_seed_range",
    "parse_value",
    "run_jobs",
    "seed_targets",
    "set_input",
    "set_seed",
    "split_set",
]
