"""``identitylock queue``, ``identitylock generate`` and ``identitylock validate-workflow``.

Exit codes: 0 every job finished; 2 bad input (not a workflow, bad ``--set`` / ``--upload`` / ``--out``, the
server rejected the workflow, an upload failed; the other files are still checked); 1 anything else: a server
down, hung or answering nonsense, a node that failed while running, a run over ``--timeout``, jobs not run.
Never 0 unless every job finished. Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import EXIT_BAD_INPUT, EXIT_OK

INDEX_NAME = "queue_results.jsonl"
_log = logging.getLogger("IdentityLock")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 64, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser(
        "queue",
        help="run a workflow on one or more ComfyUI servers and download its images",
        description="Queue an API-format workflow (a UI-format one is converted using the first server's "
        "/object_info) on ComfyUI servers, follow progress, and download the outputs into --out.",
    )
    _common(q)
    q.add_argument(
        "--seeds",
        help="seed range A:B (inclusive), A:B:STEP or list 1,5,9: one run per seed, "
        "spread over the servers; sets every literal seed/noise_seed input",
    )
    q.add_argument(
        "--resume",
        action="store_true",
        help=f"skip the jobs that --out/{INDEX_NAME} records as done (after a run was stopped or killed)",
    )
    q.set_defaults(func=cmd_queue)

    g = sub.add_parser(
        "generate",
        help="generate a seed-consistent portfolio (originals + scenarios) and its master_image_catalog.json",
        description="Expand the portfolio seed-group distribution into jobs, run them over the servers, and "
        "write master_image_catalog.json. Re-running with the same --out resumes.",
    )
    _common(g)
    g.add_argument("--character", required=True, help="character prompt (include the LoRA trigger word)")
    g.add_argument("--name", help="short character name used in filenames (default: from --character)")
    g.add_argument(
        "--scenarios",
        default="starter",
        help="JSON list / text file of scenario modifiers (default: the bundled starter list of 60)",
    )
    g.add_argument("--originals", type=int, default=50, help="original images per character (default 50)")
    g.add_argument("--modified", type=int, default=600, help="scenario images per character (default 600)")
    g.add_argument("--batch", type=int, default=5, help="originals per seed group (default 5)")
    g.add_argument("--min-per-scenario", type=int, default=2, help="minimum images per scenario per seed (2)")
    g.add_argument("--base-seed", type=int, default=966983, help="seed of group 0; group g uses base+g")
    g.add_argument(
        "--prompt-node",
        help="title/id of the positive text node (default: the one feeding the sampler's 'positive')",
    )
    g.add_argument(
        "--dry-run", action="store_true", help="print the distribution and job count, queue nothing"
    )
    g.set_defaults(func=cmd_generate)

    v = sub.add_parser(
        "validate-workflow",
        help="check workflows against node schemas (classes, required inputs, link types, ranges, combos)",
    )
    v.add_argument("workflows", nargs="+", help="workflow files (UI or API format) or folders")
    v.add_argument(
        "--object-info", help="a saved /object_info JSON (default: the subset bundled with the pack)"
    )
    v.add_argument("--server", help="fetch /object_info from this ComfyUI server instead")
    v.set_defaults(func=cmd_validate)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow", help="workflow JSON (API format preferred: workflows/api/*.json)")
    p.add_argument(
        "--server",
        action="append",
        required=True,
        metavar="URL",
        help="ComfyUI server, e.g. http://127.0.0.1:8188; repeat to fan out",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="'NODE.INPUT=VALUE'",
        dest="sets",
        help="change an input of the node with this title or id; repeatable",
    )
    p.add_argument(
        "--upload",
        action="append",
        default=[],
        metavar="NODE[.INPUT]=PATH",
        help="upload a local image and put its name in NODE's input (default input: image)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder (only complete files are ever moved in; existing files are never replaced)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=3600.0,
        help="seconds allowed per run, upload, wait in the server's queue and download included (default 3600)",
    )
    p.add_argument(
        "--per-server",
        type=_positive_int,
        default=2,
        metavar="N",
        help="jobs in flight (queued or running) per server at once (default 2: the next one waits in the "
        "server's queue while the previous one's images download)",
    )


def _prepare(args: argparse.Namespace):
    """Workflow with --set applied, servers, uploads — everything checked before anything is queued."""
    import copy

    from ..comfy import (
        ComfyServer,
        WorkflowError,
        apply_sets,
        is_ui_workflow,
        read_json,
        set_input,
        workflow_from_data,
    )

    servers = [ComfyServer(u, timeout=min(args.timeout, 60.0)) for u in args.server]
    data = read_json(args.workflow)
    object_info = None
    if is_ui_workflow(data):
        from ..workflow_validate import merged_schemas

        object_info = merged_schemas(servers[0].object_info(), include_ours=False)
    prompt = workflow_from_data(data, args.workflow, object_info)
    prompt = apply_sets(prompt, args.sets)
    uploads: dict[str, str] = {}
    for spec in args.upload:
        if "=" not in spec:
            raise WorkflowError(f"--upload {spec!r}: expected NODE[.INPUT]=PATH")
        target, local = spec.split("=", 1)
        if not Path(local).is_file():
            raise WorkflowError(f"--upload {spec!r}: {local} is not a file")
        ref, name = target.rsplit(".", 1) if "." in target else (target, "image")
        set_input(copy.deepcopy(prompt), ref, name, "probe", parse=False)  # node/input exist?
        uploads[f"{ref}.{name}"] = local
    return prompt, servers, uploads


def _file_stem(workflow: str) -> str:
    """The workflow's file name as the stem of output names: one safe component, short enough for suffixes."""
    from ..fileio import OutputPathError, confined_name, short_stem

    try:
        return confined_name(short_stem(Path(workflow).stem), "workflow name")
    except OutputPathError:
        return "workflow"


def _fingerprint(prompt: dict[str, Any], uploads: dict[str, str]) -> str:
    """The workflow (with ``--set`` applied, seeds blanked) and uploads of a run: ``--resume`` refuses to
    continue another workflow's run under the same names."""
    import copy
    import hashlib

    from ..comfy import seed_targets

    blank = copy.deepcopy(prompt)
    for nid, name in seed_targets(blank):
        blank[nid]["inputs"][name] = 0
    text = json.dumps([blank, sorted(uploads.items())], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Recorder:
    """The run's results file, opened at its first record (a run that does nothing leaves no file)."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path, self.header, self.log = path, header, None
        self._lock = threading.Lock()

    def __call__(self, record: dict[str, Any]) -> None:
        from ..comfy import ResultsLog

        with self._lock:  # worker threads record placements while another records a finished job
            if self.log is None:
                self.log = ResultsLog(self.path)
                self.log.append(self.header)
        self.log.append(record)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def cmd_queue(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from ..comfy import (
        EarlierRuns,
        Job,
        ProgressLine,
        RunTally,
        WorkflowError,
        parse_seed_range,
        seed_jobs,
        stream_jobs,
    )
    from ..comfy.download import claim_output_dir, release_output_dir
    from ..fileio import printable

    out = Path(args.out)
    created = claim_output_dir(out)  # before any work: a file or a read-only folder fails now
    tally, todo, total, record = RunTally(), 0, 0, None
    try:
        log_path = out / INDEX_NAME
        prompt, servers, uploads = _prepare(args)
        stem = _file_stem(args.workflow)
        seeds = parse_seed_range(args.seeds) if args.seeds is not None else None
        fingerprint = _fingerprint(prompt, uploads)
        earlier = EarlierRuns.read(log_path, stem, seeds) if args.resume else EarlierRuns(stem, seeds)
        if earlier.fingerprints and fingerprint not in earlier.fingerprints:
            raise WorkflowError(
                f"--resume: {log_path} records runs of {stem!r} with another workflow, --set or --upload; "
                "resume with the same ones, or use another --out"
            )
        total = len(seeds) if seeds is not None else 1
        todo = total - earlier.done
        if args.resume:
            print(f"resuming: {earlier.done} of {total} jobs already done, {todo} to go", file=sys.stderr)
        if seeds is not None:  # lazy: one job per seed as a worker frees up; done seeds are skipped
            jobs: Any = seed_jobs(stem, prompt, (s for s in seeds if not earlier.is_done(s)), uploads)
        else:
            jobs = [] if earlier.done else [Job(stem, prompt, {}, uploads)]
        replaceable = earlier.unfinished_files()  # a killed run's half-placed files of jobs not done
        record = _Recorder(
            log_path,
            {
                "status": "run",
                "stem": stem,
                "workflow": Path(args.workflow).name,
                "fingerprint": fingerprint,
                "seeds": args.seeds,
                "resume": bool(args.resume),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )

        def on_place(job, names) -> None:  # from worker threads; ResultsLog is thread-safe
            record({"status": "placing", "job": job.name, **job.meta, "files": names})

        def on_done(r) -> None:  # serialised; if it raises, the job is reported failed (not recorded)
            files = [Path(f).name for f in r.files]
            record(
                {
                    "status": "done",
                    "job": r.job.name,
                    **r.job.meta,
                    "server": r.server,
                    "prompt_id": r.prompt_id,
                    "files": files,
                }
            )

        def on_result(_seq: int, r) -> None:  # serialised
            if r.ok:
                for f in r.files:
                    print(printable(f), flush=True)
            tally.add(r)

        progress = ProgressLine(todo)
        try:
            stream_jobs(
                jobs,
                servers,
                out,
                on_result=on_result,
                on_event=progress,
                on_done=on_done,
                on_place=on_place,
                timeout=args.timeout,
                per_server=args.per_server,
                stop_on_bad_input=True,
                may_replace=lambda name: name in replaceable,
                drain=isinstance(jobs, list),  # never a seed range: it would enumerate them all
            )
        finally:
            progress.close()
    finally:
        if record is not None:
            record.close()
        release_output_dir(out, created)
    for line in tally.error_lines(todo):
        print(line, file=sys.stderr)
    print(
        f"{total - todo + tally.finished}/{total} runs finished; {tally.files} files in {out}",
        file=sys.stderr,
    )
    return tally.exit_code(todo)


def cmd_generate(args: argparse.Namespace) -> int:
    from ..comfy.download import claim_output_dir, release_output_dir
    from ..portfolio_gen import distribution, load_scenarios, plan_jobs, safe_name

    scenarios = load_scenarios(args.scenarios)
    dist = distribution(args.originals, args.modified, args.batch, len(scenarios), args.min_per_scenario)
    prompt, servers, uploads = _prepare(args)
    name = safe_name(args.name or args.character.split(",")[0])
    plan, header = plan_jobs(
        prompt,
        character=args.character,
        name=name,
        scenarios=scenarios,
        dist=dist,
        base_seed=args.base_seed,
        workflow_name=Path(args.workflow).name,
        prompt_node=args.prompt_node,
    )
    plan.uploads = uploads
    out = Path(args.out)
    print(
        f"distribution: {dist.num_seed_groups} seed groups x ({dist.original_per_seed} originals + "
        f"{dist.total_scenarios} scenarios x {dist.images_per_scenario_per_seed}) = {dist.total_images} images "
        f"in {len(plan)} jobs",
        file=sys.stderr,
    )
    if args.dry_run:
        print(json.dumps(header["distribution"], indent=1))
        return EXIT_OK
    created = claim_output_dir(out)  # before any work: a file or a read-only folder fails now
    try:
        return _generate(out, plan, header, dist, servers, args)
    finally:
        release_output_dir(out, created)


def _generate(out: Path, plan, header: dict[str, Any], dist, servers, args: argparse.Namespace) -> int:
    from ..comfy import ProgressLine, ResultsLog, RunTally, stream_jobs
    from ..comfy.download import safe_ext
    from ..fileio import write_json_atomic
    from ..portfolio_gen import (
        CATALOG_EVERY,
        CATALOG_NAME,
        JOURNAL_NAME,
        catalog_entries,
        load_catalog,
        pending_jobs,
        replay_journal,
        row_key,
    )

    catalog = load_catalog(out, header)
    journal_existed = (out / JOURNAL_NAME).exists()
    placing = replay_journal(out, catalog)  # what a killed run finished after its last catalog write
    done = {r.get("planned_filename", r["filename"]) for r in catalog["catalog"]}
    todo = pending_jobs(plan, done)
    del done
    if len(todo) < len(plan):
        print(f"resuming: {len(plan) - len(todo)} jobs already done, {len(todo)} to go", file=sys.stderr)
    by_name = {r["filename"]: r for r in catalog["catalog"]}
    own = set(by_name) | placing  # files of this catalog, or half-placed by a killed run of it
    journal: list[Any] = [None]
    journal_lock = threading.Lock()
    state = {"written": 0.0, "dirty": False}
    tally = RunTally()

    def record(rec: dict[str, Any]) -> None:
        with journal_lock:
            if journal[0] is None:
                journal[0] = ResultsLog(out / JOURNAL_NAME)
        journal[0].append(rec)

    def write_catalog() -> None:
        catalog["catalog"] = sorted(by_name.values(), key=row_key)
        write_json_atomic(out / CATALOG_NAME, catalog)
        state["written"], state["dirty"] = time.monotonic(), False

    def on_place(job, names) -> None:
        record({"status": "placing", "job": job.name, "files": names})

    def on_done(result) -> None:  # serialised
        rows = catalog_entries(result.job, result.files, header, result.server, result.prompt_id)
        record({"status": "done", "job": result.job.name, "rows": rows})
        for row in rows:
            by_name[row["filename"]] = row
        state["dirty"] = True
        if not state["written"] or time.monotonic() - state["written"] >= CATALOG_EVERY:
            write_catalog()

    def name_files(job, files):
        planned = [i["filename"] for i in job.meta["images"]]
        if len(files) != len(planned):  # the workflow saved a different number of images than planned
            stem = job.name
            return [f"{stem}_x{i + 1:02d}{safe_ext(f['filename'])}" for i, f in enumerate(files)]
        return [str(Path(p).with_suffix(safe_ext(f["filename"]))) for p, f in zip(planned, files)]

    progress = ProgressLine(len(todo))
    try:
        stream_jobs(
            (plan[i] for i in todo),
            servers,
            out,
            on_result=lambda _seq, r: tally.add(r),
            on_event=progress,
            on_done=on_done,
            on_place=on_place,
            timeout=args.timeout,
            per_server=args.per_server,
            name_files=name_files,
            stop_on_bad_input=True,
            may_replace=lambda name: name in own,  # re-running a job of this catalog: same seed, same image
        )
    finally:
        progress.close()
        if state["dirty"] or (journal_existed and by_name):
            write_catalog()
        if journal[0] is not None:
            journal[0].close()
        if not state["dirty"] and (out / JOURNAL_NAME).exists() and (out / CATALOG_NAME).exists():
            (out / JOURNAL_NAME).unlink()  # the catalog holds everything the journal did
    for line in tally.error_lines(len(todo)):
        print(line, file=sys.stderr)
    failed = tally.failed + tally.not_run(len(todo))
    print(
        f"{len(catalog['catalog'])}/{dist.total_images} images in {out / CATALOG_NAME}"
        + (f"; {failed} jobs not finished — run the same command again to resume" if failed else ""),
        file=sys.stderr,
    )
    return tally.exit_code(len(todo))


def cmd_validate(args: argparse.Namespace) -> int:
    from ..comfy import ComfyServer
    from ..fileio import printable
    from ..workflow_validate import load_object_info, merged_schemas, validate_file

    if args.server:
        info = ComfyServer(args.server).object_info()
    else:
        info = load_object_info(args.object_info)
    schemas = merged_schemas(info)
    files: list[Path] = []
    for w in args.workflows:
        p = Path(w)
        files += sorted(p.glob("*.json")) + sorted((p / "api").glob("*.json")) if p.is_dir() else [p]
    if not files:
        print(
            f"error: no workflow (.json) files in {', '.join(map(printable, args.workflows))}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    bad = 0
    for f in files:
        problems = validate_file(f, schemas)  # never raises: a hostile file is one bad file, the rest go on
        if problems:
            bad += 1
            print(f"{printable(f)}: {len(problems)} problem(s)")
            for pr in problems:
                print(f"  - {printable(pr)}")
        else:
            print(f"{printable(f)}: ok")
    return EXIT_BAD_INPUT if bad else EXIT_OK
