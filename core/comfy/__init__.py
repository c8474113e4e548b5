"""Client for ComfyUI servers (the scale-out path: existing ComfyUI workers, no cluster code).

One module per concern, all dependency-light (stdlib + websocket-client; never ComfyUI):

- :mod:`.workflow` — load workflow files (API or UI format), ``--set`` edits, seeds;
- :mod:`.transport` — one server over HTTP + websocket (:class:`ComfyServer`), under deadlines;
- :mod:`.replies` — what the server's answers mean, checked for shape;
- :mod:`.jobs` — the job model (:class:`Job`, :class:`JobResult`);
- :mod:`.download` — a finished run's files, staged and moved into the output folder when complete;
- :mod:`.fanout` — many jobs over many servers (:func:`stream_jobs`, flat memory; :func:`run_jobs`);
- :mod:`.results_log` — the append-only results file a run writes as it goes and ``--resume`` reads back;
- :mod:`.progress` — the one-line terminal progress display.
"""

from __future__ import annotations

from .download import download_outputs, output_name
from .errors import (
    ComfyError,
    ExecutionFailed,
    PromptRejected,
    ProtocolError,
    RunTimeout,
    ServerUnavailable,
    UploadFailed,
    WorkflowError,
    exit_code_of,
)
from .fanout import run_jobs, stream_jobs
from .jobs import Job, JobResult, RunTally, seed_jobs
from .progress import ProgressLine
from .replies import RunResult, format_node_errors
from .results_log import EarlierRuns, ResultsLog, read_records
from .transport import ComfyServer
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
    read_json,
    seed_targets,
    set_input,
    set_seed,
    split_set,
    workflow_from_data,
)

__all__ = [
    "SEED_INPUTS",
    "ComfyError",
    "ComfyServer",
    "EarlierRuns",
    "ExecutionFailed",
    "Job",
    "JobResult",
    "ProgressLine",
    "PromptRejected",
    "ResultsLog",
    "ProtocolError",
    "RunTimeout",
    "RunResult",
    "RunTally",
    "ServerUnavailable",
    "UploadFailed",
    "WorkflowError",
    "apply_sets",
    "download_outputs",
    "exit_code_of",
    "find_nodes",
    "format_node_errors",
    "is_api_workflow",
    "is_ui_workflow",
    "load_workflow",
    "node_title",
    "output_name",
    "parse_seed_range",
    "parse_value",
    "read_json",
    "read_records",
    "run_jobs",
    "seed_jobs",
    "seed_targets",
    "set_input",
    "set_seed",
    "split_set",
    "stream_jobs",
    "workflow_from_data",
]
