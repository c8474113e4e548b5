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
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from .comfy import Job, WorkflowError, node_title, read_json, seed_targets

CATALOG_NAME = "master_image_catalog.json"
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
) -> tuple[list[Job], dict[str, Any]]:
    """Expand the distribution into jobs (one per seed x prompt, batched when the workflow has batch_size)."""
    pos_ids, neg_ids = prompt_nodes(template, prompt_node)
    seeds = seed_targets(template)
    if not seeds:
        raise WorkflowError("the workflow has no literal 'seed' / 'noise_seed' input; generate needs one")
    batches = batch_targets(template)
    negative = template[neg_ids[0]]["inputs"]["text"] if neg_ids else ""
    settings = generation_settings(template, workflow_name)
    jobs: list[Job] = []

    def add(
        group: int, seed: int, kind: str, tag: str, text: str, count: int, s_idx: int | None, scen: str | None
    ):
        base = base_seed + group
        if batches:
            chunks = [(seed, count, 0)]
        else:  # no batch input: one job per image, consecutive seeds
            chunks = [(seed + k, 1, k) for k in range(count)]
        for job_seed, n, first in chunks:
            prompt = copy.deepcopy(template)
            for nid, inp in seeds:
                prompt[nid]["inputs"][inp] = int(job_seed)
            for nid, inp in batches:
                prompt[nid]["inputs"][inp] = int(n)
            for nid in pos_ids:
                prompt[nid]["inputs"]["text"] = text
            stem = f"char_{name}_seed_{base}_{tag}"
            images = []
            for b in range(n):
                idx = first + b + 1
                images.append(
                    PlannedImage(
                        filename=f"{stem}_{idx:02d}{ext}",
                        seed=int(job_seed),
                        base_seed=base,
                        seed_group=group,
                        image_type=kind,
                        scenario=scen,
                        scenario_index=s_idx,
                        batch_index=b,
                        prompt=text,
                    )
                )
            job_name = stem if n == count else f"{stem}_{first + 1:02d}"
            jobs.append(
                Job(
                    name=job_name,
                    prompt=prompt,
                    meta={"images": [asdict(i) for i in images], "batch_size": n},
                )
            )

    for g in range(dist.num_seed_groups):
        base = base_seed + g
        add(g, base, "original", "original", character, dist.original_per_seed, None, None)
        if dist.images_per_scenario_per_seed:
            for s, scen in enumerate(scenarios, start=1):
                add(
                    g,
                    base + s,
                    "scenario",
                    f"scenario_{s:02d}",
                    character + scen,
                    dist.images_per_scenario_per_seed,
                    s,
                    scen,
                )
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
    return jobs, header


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


def pending_jobs(jobs: list[Job], catalog: dict[str, Any]) -> list[Job]:
    """Jobs with at least one image missing from the catalog (finished jobs are not redone)."""
    done = {r.get("planned_filename", r["filename"]) for r in catalog.get("catalog", [])}
    return [j for j in jobs if not all(i["filename"] in done for i in j.meta["images"])]
