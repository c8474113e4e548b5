"""``identitylock queue``, ``identitylock generate`` and ``identitylock validate-workflow``.

Exit codes: 0 every job finished; 2 bad input (not a workflow, bad ``--set`` / ``--upload``, the server
rejected the workflow, an upload failed); 1 a server was down or a node failed while running.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


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
    p.add_argument("--out", required=True, help="output folder (only complete files are ever moved in)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per run (default 3600)")


def _prepare(args: argparse.Namespace):
    """Workflow with --set applied, servers, uploads — everything checked before anything is queued."""
    from ..comfy import (
        ComfyServer,
        WorkflowError,
        apply_sets,
        is_ui_workflow,
        load_workflow,
        set_input,
    )

    servers = [ComfyServer(u, timeout=min(args.timeout, 60.0)) for u in args.server]
    path = Path(args.workflow)
    object_info = None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if is_ui_workflow(raw):
            object_info = servers[0].object_info()
            from ..workflow_validate import merged_schemas

            object_info = merged_schemas(object_info, include_ours=False)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        pass  # load_workflow reports it properly
    prompt = load_workflow(path, object_info)
    prompt = apply_sets(prompt, args.sets)
    uploads: dict[str, str] = {}
    for spec in args.upload:
        if "=" not in spec:
            raise WorkflowError(f"--upload {spec!r}: expected NODE[.INPUT]=PATH")
        target, local = spec.split("=", 1)
        if not Path(local).is_file():
            raise WorkflowError(f"--upload {spec!r}: {local} is not a file")
        ref, name = target.rsplit(".", 1) if "." in target else (target, "image")
        set_input(json.loads(json.dumps(prompt)), ref, name, "probe", parse=False)  # node/input exist?
        uploads[f"{ref}.{name}"] = local
    return prompt, servers, uploads


def _exit_code(results) -> int:
    if all(r.ok for r in results):
        return EXIT_OK
    bad_input = ("rejected the workflow", "upload of", "--upload", "has no input")
    if any(any(b in (r.error or "") for b in bad_input) for r in results if not r.ok):
        return EXIT_BAD_INPUT
    return EXIT_ERROR


def cmd_queue(args: argparse.Namespace) -> int:
    from ..comfy import (
        Job,
        ProgressLine,
        parse_seed_range,
        run_jobs,
        set_seed,
    )
    from ..fileio import write_json_atomic

    prompt, servers, uploads = _prepare(args)
    stem = Path(args.workflow).stem
    if args.seeds:
        seeds = parse_seed_range(args.seeds)
        jobs = [Job(f"{stem}_seed_{s}", set_seed(prompt, s), {"seed": s}, uploads) for s in seeds]
    else:
        jobs = [Job(stem, prompt, {}, uploads)]
    out = Path(args.out)
    progress = ProgressLine(len(jobs))
    try:
        results = run_jobs(jobs, servers, out, on_event=progress, timeout=args.timeout)
    finally:
        progress.close()
    ok = [r for r in results if r.ok]
    if ok:
        index_path = out / "queue_results.json"
        index: list[dict[str, Any]] = []
        if index_path.exists():
            try:
                index = json.loads(index_path.read_text())
            except (OSError, json.JSONDecodeError):
                index = []
        index += [
            {
                "job": r.job.name,
                **r.job.meta,
                "server": r.server,
                "prompt_id": r.prompt_id,
                "files": [Path(f).name for f in r.files],
            }
            for r in ok
        ]
        write_json_atomic(index_path, index)
    for r in results:
        if r.ok:
            for f in r.files:
                print(f)
        else:
            print(f"error: {r.job.name}: {r.error}", file=sys.stderr)
    print(
        f"{len(ok)}/{len(results)} runs finished; {sum(len(r.files) for r in ok)} files in {out}",
        file=sys.stderr,
    )
    return _exit_code(results)


def cmd_generate(args: argparse.Namespace) -> int:
    from ..comfy import ProgressLine, run_jobs
    from ..fileio import write_json_atomic
    from ..portfolio_gen import (
        CATALOG_NAME,
        catalog_entries,
        distribution,
        load_catalog,
        load_scenarios,
        pending_jobs,
        plan_jobs,
        safe_name,
    )

    scenarios = load_scenarios(args.scenarios)
    dist = distribution(args.originals, args.modified, args.batch, len(scenarios), args.min_per_scenario)
    prompt, servers, uploads = _prepare(args)
    name = safe_name(args.name or args.character.split(",")[0])
    jobs, header = plan_jobs(
        prompt,
        character=args.character,
        name=name,
        scenarios=scenarios,
        dist=dist,
        base_seed=args.base_seed,
        workflow_name=Path(args.workflow).name,
        prompt_node=args.prompt_node,
    )
    for j in jobs:
        j.uploads = uploads
    out = Path(args.out)
    print(
        f"distribution: {dist.num_seed_groups} seed groups x ({dist.original_per_seed} originals + "
        f"{dist.total_scenarios} scenarios x {dist.images_per_scenario_per_seed}) = {dist.total_images} images "
        f"in {len(jobs)} jobs",
        file=sys.stderr,
    )
    if args.dry_run:
        print(json.dumps(header["distribution"], indent=1))
        return EXIT_OK
    catalog = load_catalog(out, header)
    todo = pending_jobs(jobs, catalog)
    if len(todo) < len(jobs):
        print(f"resuming: {len(jobs) - len(todo)} jobs already done, {len(todo)} to go", file=sys.stderr)
    lock = threading.Lock()
    by_name = {r["filename"]: r for r in catalog["catalog"]}

    def on_done(result) -> None:
        if not result.ok:
            return
        with lock:
            for row in catalog_entries(result.job, result.files, header, result.server, result.prompt_id):
                by_name[row["filename"]] = row
            catalog["catalog"] = sorted(by_name.values(), key=lambda r: (r["seed_group"], r["filename"]))
            write_json_atomic(out / CATALOG_NAME, catalog)

    def name_files(job, files):
        planned = [i["filename"] for i in job.meta["images"]]
        if len(files) != len(planned):  # the workflow saved a different number of images than planned
            stem = job.name
            return [f"{stem}_x{i + 1:02d}{Path(f['filename']).suffix}" for i, f in enumerate(files)]
        return [
            str(Path(p).with_suffix(Path(f["filename"]).suffix or ".png")) for p, f in zip(planned, files)
        ]

    progress = ProgressLine(len(todo))
    try:
        results = run_jobs(
            todo,
            servers,
            out,
            on_event=progress,
            on_done=on_done,
            timeout=args.timeout,
            name_files=name_files,
        )
    finally:
        progress.close()
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"error: {r.job.name}: {r.error}", file=sys.stderr)
    print(
        f"{len(catalog['catalog'])}/{dist.total_images} images in {out / CATALOG_NAME}"
        + (f"; {len(failed)} jobs failed — run the same command again to resume" if failed else ""),
        file=sys.stderr,
    )
    return _exit_code(results)


def cmd_validate(args: argparse.Namespace) -> int:
    from ..comfy import ComfyServer
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
    bad = 0
    for f in files:
        problems = validate_file(f, schemas)
        if problems:
            bad += 1
            print(f"{f}: {len(problems)} problem(s)")
            for pr in problems:
                print(f"  - {pr}")
        else:
            print(f"{f}: ok")
    return EXIT_BAD_INPUT if bad else EXIT_OK
