"""Seed-consistent portfolio generation plan: seed groups, jobs and the master image catalog.

From the portfolio seed: ``num_seed_groups = ceil(originals / batch)``, each group makes ``batch`` originals
(the character prompt alone) and, for every scenario, ``max(min_per_scenario, ceil(modified / (groups *
scenarios)))`` images. Group ``g`` has base seed ``base_seed + g``; its originals use the base seed (one
batch), scenario ``s`` (1-based) uses ``base_seed + s``. Filenames carry the group's base seed
(``char_<name>_seed_<base>_original_01.png``) so curation can read seed diversity from the name alone.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from .comfy import Job, WorkflowError, node_title, read_json, seed_targets

CATALOG_NAME = "master_image_catalog.json"
#: Append-only journal of a generate run (placements and finished jobs' catalog rows, one JSON line each): the
#: catalog itself is rewritten at most every CATALOG_EVERY seconds (rewriting it after every job was quadratic:
#: 100,000 rows rewritten 20,000 times), the journal keeps what came since; removed once the catalog holds it all.
JOURNAL_NAME = "master_image_catalog.journal.jsonl"
CATALOG_EVERY = 30.0
#: Largest portfolio one ``generate`` plans (its catalog is one JSON file, rewritten after each job); split a
#: bigger one over several --out folders.
MAX_PORTFOLIO_IMAGES = 100_000
SETTINGS_CLASSES = (
    "KSampler",
    "KSamplerAdvanced",
    "CheckpointLoaderSimple",
    "LoraLoader",
    "LoraLoaderModelOnly",
    "EmptyLatentImage",
    "IPAdapterAdvanced",
    "IPAdapter",
    "IPAdapterFaceID",
    "IPAdapterUnifiedLoader",
    "IPAdapterUnifiedLoaderFaceID",
    "DriftSeedSearch",
)


@dataclass(frozen=True)
class Distribution:
    num_seed_groups: int
    original_per_seed: int
    modified_per_seed: int
    images_per_scenario_per_seed: int
    total_scenarios: int

    @property
    def total_images(self) -> int:
        return self.num_seed_groups * (self.original_per_seed + self.modified_per_seed)


def distribution(
    originals: int, modified: int, batch: int, num_scenarios: int, min_per_scenario: int = 2
) -> Distribution:
    """The seed's CalculateDistribution (50, 600, 5, 60) -> 10 groups x (5 originals + 60 x 2 scenario images)."""
    if originals < 1 or batch < 1:
        raise WorkflowError("--originals and --batch must be at least 1")
    if modified < 0 or min_per_scenario < 0:
        raise WorkflowError("--modified and --min-per-scenario cannot be negative")
    if num_scenarios < 1 and modified > 0:
        raise WorkflowError("the scenario list is empty")
    groups = math.ceil(originals / batch)
    per_scenario = 0
    if modified > 0:
        per_scenario = max(min_per_scenario, math.ceil(modified / (groups * num_scenarios)))
    dist = Distribution(groups, batch, per_scenario * num_scenarios, per_scenario, num_scenarios)
    if dist.total_images > MAX_PORTFOLIO_IMAGES:
        raise WorkflowError(
            f"this portfolio would have {dist.total_images} images, more than {MAX_PORTFOLIO_IMAGES} in one "
            "--out: lower --originals / --modified / --min-per-scenario, or split it over several folders"
        )
    return dist


def load_scenarios(path: str | None) -> list[str]:
    """A JSON list of strings (or {"scenarios": [...]}) or a text file with one scenario per line.

    ``None`` or ``"starter"`` loads the bundled starter list. Each scenario is appended to the character
    prompt; a leading ", " is added when missing.
    """
    if path in (None, "starter"):
        text = resources.files("identitylock.core").joinpath("data/scenarios_starter.json").read_text("utf-8")
        source = "bundled starter list"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise WorkflowError(f"--scenarios {path}: cannot read ({reason})") from None
        source = str(path)
    items: Any
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkflowError(
                f"--scenarios {source}: invalid JSON ({exc.msg}, line {exc.lineno})"
            ) from None
        except RecursionError:
            raise WorkflowError(f"--scenarios {source}: the JSON is nested too deeply to read") from None
        if isinstance(items, dict):
            items = items.get("scenarios")
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise WorkflowError(f"--scenarios {source}: expected a list of strings or {{'scenarios': [...]}}")
    else:
        items = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    out = []
    for s in items:
        s = s.strip()
        if not s:
            continue
        out.append(s if s.startswith(",") else ", " + s)
    if not out:
        raise WorkflowError(f"--scenarios {source}: no scenarios in the file")
    return out


def safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "_", text.strip().lower()).strip("_")
    return name[:40] or "character"


def _linked_text_node(prompt: dict[str, Any], input_name: str) -> list[str]:
    found = []
    for node in prompt.values():
        src = node.get("inputs", {}).get(input_name)
        if isinstance(src, list) and len(src) == 2 and str(src[0]) in prompt:
            nid = str(src[0])
            if isinstance(prompt[nid].get("inputs", {}).get("text"), str) and nid not in found:
                found.append(nid)
    return found


def prompt_nodes(prompt: dict[str, Any], ref: str | None = None) -> tuple[list[str], list[str]]:
    """(positive text node ids, negative text node ids): the CLIPTextEncode nodes feeding a sampler."""
    if ref:
        from .comfy import find_nodes

        ids = find_nodes(prompt, ref)
        if not ids or not all(isinstance(prompt[i].get("inputs", {}).get("text"), str) for i in ids):
            raise WorkflowError(
                f"--prompt-node {ref!r}: no node with that id/title and a literal 'text' input"
            )
        return ids, _linked_text_node(prompt, "negative")
    pos = _linked_text_node(prompt, "positive")
    if not pos:
        raise WorkflowError(
            "cannot find the positive prompt: no node with a literal 'text' input is linked to a sampler's "
            "'positive'; name it with --prompt-node TITLE"
        )
    return pos, _linked_text_node(prompt, "negative")


def batch_targets(prompt: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (nid, "batch_size")
        for nid, n in prompt.items()
        if isinstance(n.get("inputs", {}).get("batch_size"), int)
    ]


def generation_settings(prompt: dict[str, Any], workflow_name: str) -> dict[str, Any]:
    """Literal inputs of the nodes that decide how an image looks (sampler, model, LoRA, IPAdapter, size)."""
    settings: dict[str, Any] = {"workflow": workflow_name}
    for nid in sorted(prompt, key=lambda k: (len(k), k)):
        node = prompt[nid]
        if node["class_type"] not in SETTINGS_CLASSES:
            continue
        lits = {
            k: v
            for k, v in node.get("inputs", {}).items()
            if not (isinstance(v, list) and len(v) == 2 and isinstance(v[0], str))
            and k not in ("seed", "batch_size")
        }
        settings[f"{node_title(prompt, nid)} [{nid}]"] = lits
    return settings


@dataclass
class PlannedImage:
    filename: str
    seed: int
    base_seed: int
    seed_group: int
    image_type: str
    scenario: str | None
    scenario_index: int | None
    batch_index: int
    prompt: str


_Spec = tuple[int, int, int, int, int, int, int, str, str, "int | None"]


class JobPlan(Sequence[Job]):
    """The portfolio's jobs, made one at a time when asked for (a job holds a full copy of the workflow: 100,000
    of them up front took 556 MB). Holds one small tuple per job; ``uploads`` go into every job made."""

    def __init__(self, template: dict[str, Any], name: str, prompt_node: str | None, ext: str):
        self.template = template
        self.name = name
        self.pos_ids, self.neg_ids = prompt_nodes(template, prompt_node)
        self.seeds = seed_targets(template)
        if not self.seeds:
            raise WorkflowError("the workflow has no literal 'seed' / 'noise_seed' input; generate needs one")
        self.batches = batch_targets(template)
        self.ext = ext
        self.uploads: dict[str, str] = {}
        self.texts: list[str] = []  # the character prompt, then character + each scenario
        self.scenarios: list[str | None] = []
        # (group, base seed, job seed, images, first image index, images of the seed, text index, kind, tag,
        # scenario index)
        self._specs: list[_Spec] = []

    def __len__(self) -> int:
        return len(self._specs)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return self.make(self._specs[i])

    def image_names(self, i: int) -> list[str]:
        """The planned file names of job ``i``, without making the job."""
        group, base, _, n, first, _, _, _, tag, _ = self._specs[i]
        return [f"char_{self.name}_seed_{base}_{tag}_{first + b + 1:02d}{self.ext}" for b in range(n)]

    def make(self, spec: _Spec) -> Job:
        group, base, job_seed, n, first, count, t, kind, tag, s_idx = spec
        text = self.texts[t]
        prompt = copy.deepcopy(self.template)
        for nid, inp in self.seeds:
            prompt[nid]["inputs"][inp] = int(job_seed)
        for nid, inp in self.batches:
            prompt[nid]["inputs"][inp] = int(n)
        for nid in self.pos_ids:
            prompt[nid]["inputs"]["text"] = text
        stem = f"char_{self.name}_seed_{base}_{tag}"
        images = [
            PlannedImage(
                filename=f"{stem}_{first + b + 1:02d}{self.ext}",
                seed=int(job_seed),
                base_seed=base,
                seed_group=group,
                image_type=kind,
                scenario=self.scenarios[t],
                scenario_index=s_idx,
                batch_index=b,
                prompt=text,
            )
            for b in range(n)
        ]
        job_name = stem if n == count else f"{stem}_{first + 1:02d}"
        return Job(
            name=job_name,
            prompt=prompt,
            meta={"images": [asdict(im) for im in images], "batch_size": n},
            uploads=dict(self.uploads),
        )

    def add(
        self, group: int, base: int, seed: int, kind: str, tag: str, t: int, count: int, s_idx: int | None
    ):
        if self.batches:
            self._specs.append((group, base, seed, count, 0, count, t, kind, tag, s_idx))
        else:  # no batch input: one job per image, consecutive seeds
            self._specs += [(group, base, seed + k, 1, k, count, t, kind, tag, s_idx) for k in range(count)]


def plan_jobs(
    template: dict[str, Any],
    *,
    character: str,
    name: str,
    scenarios: list[str],
    dist: Distribution,
    base_seed: int,
    workflow_name: str,
    prompt_node: str | None = None,
    ext: str = ".png",
) -> tuple[JobPlan, dict[str, Any]]:
    """Expand the distribution into jobs (one per seed x prompt, batched when the workflow has batch_size);
    the jobs are made lazily by the returned :class:`JobPlan`."""
    plan = JobPlan(template, name, prompt_node, ext)
    plan.texts = [character] + [character + scen for scen in scenarios]
    plan.scenarios = [None, *scenarios]
    negative = template[plan.neg_ids[0]]["inputs"]["text"] if plan.neg_ids else ""
    settings = generation_settings(template, workflow_name)
    for g in range(dist.num_seed_groups):
        base = base_seed + g
        plan.add(g, base, base, "original", "original", 0, dist.original_per_seed, None)
        if dist.images_per_scenario_per_seed:
            for s in range(1, len(scenarios) + 1):
                per = dist.images_per_scenario_per_seed
                plan.add(g, base, base + s, "scenario", f"scenario_{s:02d}", s, per, s)
    header = {
        # Generation-side catalog (curate's own output catalog is identitylock.master_image_catalog/1).
        "schema": "identitylock.generation_catalog/1",
        "session_info": {
            "timestamp": datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S"),
            "character_name": name,
            "character_prompt": character,
            "original_images_per_character": dist.num_seed_groups * dist.original_per_seed,
            "modified_images_per_character": dist.num_seed_groups * dist.modified_per_seed,
            "total_images_per_character": dist.total_images,
            "batch_size": dist.original_per_seed,
            "base_seed": base_seed,
            "workflow": workflow_name,
        },
        "distribution": asdict(dist),
        "negative_prompt": negative,
        "generation_settings": settings,
    }
    return plan, header


def catalog_entries(job: Job, files: list[str], header: dict[str, Any], server: str, prompt_id: str | None):
    """Catalog rows for a finished job: one per image, in the seed's master_image_catalog shape."""
    rows = []
    now = datetime.now().isoformat()
    for img, path in zip(job.meta["images"], files):
        extra = {} if Path(path).name == img["filename"] else {"planned_filename": img["filename"]}
        rows.append(
            {
                "filename": Path(path).name,
                **extra,  # the file got another name (its extension, or a name already taken: never replaced)
                "character_name": header["session_info"]["character_name"],
                "seed": img["seed"],
                "base_seed": img["base_seed"],
                "seed_group": img["seed_group"],
                "image_type": img["image_type"],
                "scenario": img["scenario"],
                "scenario_index": img["scenario_index"],
                "batch_index": img["batch_index"],
                "batch_size": job.meta["batch_size"],
                "prompt": img["prompt"],
                "negative_prompt": header["negative_prompt"],
                "generation_settings": header["generation_settings"],
                "server": server,
                "prompt_id": prompt_id,
                "timestamp": now,
            }
        )
    return rows


def load_catalog(out_dir: Path, header: dict[str, Any]) -> dict[str, Any]:
    """The catalog of an earlier run in ``out_dir`` (for resume), or a fresh one. Refuses a different run."""
    path = out_dir / CATALOG_NAME
    if not path.exists():
        return dict(header, catalog=[])
    old = read_json(path, what="catalog")
    rows = old.get("catalog", []) if isinstance(old, dict) else None
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("filename", ""), str) for r in rows
    ):
        raise WorkflowError(
            f"{path}: not a generation catalog (an object with a 'catalog' list); move it away to start over"
        )
    same = (
        old.get("distribution") == header["distribution"]
        and (old.get("session_info") or {}).get("character_prompt")
        == header["session_info"]["character_prompt"]
        and (old.get("session_info") or {}).get("base_seed") == header["session_info"]["base_seed"]
    )
    if not same:
        raise WorkflowError(
            f"{out_dir} holds a portfolio of a different run (character, seeds or distribution differ); "
            "use another --out or the same settings to resume"
        )
    old["catalog"] = [r for r in rows if r.get("filename") and (out_dir / r["filename"]).is_file()]
    return old


def row_key(row: dict[str, Any]) -> tuple[int, str]:
    group = row.get("seed_group")
    return (group if isinstance(group, int) else -1, str(row.get("filename")))


def replay_journal(out_dir: Path, catalog: dict[str, Any]) -> set[str]:
    """Put the rows a stopped or killed run journaled after its last catalog write back into ``catalog``
    (those whose files are there); return the names its jobs were moving in (their own files, which re-running
    the same job may replace rather than add a duplicate)."""
    from .comfy import read_records

    by_name = {r["filename"]: r for r in catalog["catalog"]}
    placing: set[str] = set()
    for record in read_records(out_dir / JOURNAL_NAME):
        if record["status"] == "placing" and isinstance(record.get("files"), list):
            placing.update(f for f in record["files"] if isinstance(f, str))
        elif record["status"] == "done" and isinstance(record.get("rows"), list):
            for row in record["rows"]:
                name = row.get("filename") if isinstance(row, dict) else None
                if isinstance(name, str) and name and Path(name).name == name and (out_dir / name).is_file():
                    by_name[name] = row
    catalog["catalog"] = sorted(by_name.values(), key=row_key)
    return placing


def pending_jobs(plan: JobPlan, done: set[str]) -> list[int]:
    """Indices of the jobs with at least one image not in ``done`` (planned names of catalogued images);
    finished jobs are not redone."""
    return [i for i in range(len(plan)) if not all(n in done for n in plan.image_names(i))]
