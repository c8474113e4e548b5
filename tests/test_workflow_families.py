"""The per-family templates (issues 13 and 14): what each one loads, how it samples, what gates it, what its note
says — and that the builder takes what a template leaves unset from the node schemas, so nodes that change are
picked up by regenerating."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from identitylock.core.families import get_family

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
CAPTURED = REPO / "tests" / "fixtures" / "comfyui" / "object_info.json"
sys.path.insert(0, str(REPO / "scripts"))

# family -> (template number, loader classes and CLIP type of its official ComfyUI template, empty-latent node)
FAMILIES = {
    "sdxl": (20, {"CheckpointLoaderSimple": None}, "EmptyLatentImage"),
    "flux1": (30, {"UNETLoader": None, "DualCLIPLoader": "flux", "VAELoader": None}, "EmptySD3LatentImage"),
    "flux2": (40, {"UNETLoader": None, "CLIPLoader": "flux2", "VAELoader": None}, "EmptyFlux2LatentImage"),
    "zimage": (50, {"UNETLoader": None, "CLIPLoader": "lumina2", "VAELoader": None}, "EmptySD3LatentImage"),
    "qwen_image": (
        60,
        {"UNETLoader": None, "CLIPLoader": "qwen_image", "VAELoader": None},
        "EmptySD3LatentImage",
    ),
}
REFERENCE = {  # template -> the class that carries the reference photo into the conditioning
    "32_flux1_kontext_reference": "ReferenceLatent",
    "42_flux2_multi_reference": "ReferenceLatent",
    "62_qwen_image_edit_reference": "TextEncodeQwenImageEditPlus",
}
MODEL_INPUTS = ("ckpt_name", "unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "lora_name")


def _api(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def _note(name: str) -> str:
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    return next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]


def _one(api: dict, cls: str) -> tuple[str, dict]:
    found = [(k, n) for k, n in api.items() if n["class_type"] == cls]
    assert len(found) == 1, f"expected one {cls}, found {len(found)}"
    return found[0]


def _upstream(api: dict, nid: str) -> set[str]:
    """Classes of every node that feeds ``nid``, directly or not."""
    seen, todo = set(), [nid]
    while todo:
        for v in api[todo.pop()]["inputs"].values():
            if isinstance(v, list) and len(v) == 2 and str(v[0]) in api and str(v[0]) not in seen:
                seen.add(str(v[0]))
                todo.append(str(v[0]))
    return {api[k]["class_type"] for k in seen}


@pytest.mark.parametrize("family", FAMILIES)
def test_train_template_per_family(family):
    number, loaders, _ = FAMILIES[family]
    api = _api(f"{number}_{family}_train_identity_lora")
    for cls, clip_type in loaders.items():
        _, node = _one(api, cls)
        if clip_type:
            assert node["inputs"]["type"] == clip_type
    tid, train = _one(api, "LoRATrainAdaptive")
    assert train["inputs"]["lora_name"] == f"identitylock_person_{family}"
    assert {"FaceCropPrep", "IdentityEmbed", *loaders} <= _upstream(api, tid)
    _, prep = _one(api, "FaceCropPrep")
    assert prep["inputs"]["size"] == get_family(family).resolution
    if "UNETLoader" in loaders:  # a base a 24 GB card only holds in fp8 is loaded as fp8 (docs/training.md)
        _, unet = _one(api, "UNETLoader")
        fp8 = get_family(family).fp8_base_on_24gb and "fp8" not in unet["inputs"]["unet_name"]
        assert (unet["inputs"]["weight_dtype"] == "fp8_e4m3fn") == fp8
        assert fp8 == (family == "flux1")


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_seed_search_per_family(family):
    """Sampling defaults come from the one family table; the family's empty latent feeds DriftSeedSearch; only
    locked renders are saved."""
    number, loaders, latent_cls = FAMILIES[family]
    api = _api(f"{number + 1}_{family}_lora_seed_search")
    fam = get_family(family)
    sid, search = _one(api, "DriftSeedSearch")
    s = search["inputs"]
    assert (s["steps"], s["cfg"], s["sampler_name"], s["scheduler"]) == (
        fam.steps,
        fam.cfg,
        fam.sampler,
        fam.scheduler,
    )
    assert api[s["latent"][0]]["class_type"] == latent_cls
    lora = next(n for n in api.values() if n["class_type"].startswith("LoraLoader"))
    assert lora["inputs"]["lora_name"] == f"identitylock_person_{family}.safetensors"
    up = _upstream(api, sid)
    assert set(loaders) <= up and "IdentityLoad" in up
    assert ("FluxGuidance" in up) == (fam.guidance is not None)
    guidance = [n["inputs"]["guidance"] for n in api.values() if n["class_type"] == "FluxGuidance"]
    assert guidance == ([fam.guidance] if fam.guidance is not None else [])
    assert ("ModelSamplingAuraFlow" in up) == (family in ("zimage", "qwen_image"))
    saves = [n for n in api.values() if n["class_type"] == "SaveImage"]
    assert saves and all(n["inputs"]["images"] == [sid, 5] for n in saves)


@pytest.mark.parametrize("faceid", [False, True])
def test_sdxl_lora_ipadapter_is_gated(faceid):
    name = "23_sdxl_lora_ipadapter_faceid_v2" if faceid else "22_sdxl_lora_ipadapter_plus_face"
    api = _api(name)
    sid, search = _one(api, "DriftSeedSearch")
    ip = api[search["inputs"]["model"][0]]
    assert ip["class_type"] == ("IPAdapterFaceID" if faceid else "IPAdapterAdvanced")
    loader = api[ip["inputs"]["model"][0]]
    assert loader["inputs"]["preset"] == ("FACEID PLUS V2" if faceid else "PLUS FACE (portraits)")
    assert "LoraLoader" in _upstream(api, sid) and "CheckpointLoaderSimple" in _upstream(api, sid)
    note = _note(name)
    assert ("faceid-plusv2_sdxl" in note) == faceid and "models/ipadapter/" in note


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_templates_gate_the_reference_conditioning(name):
    """The conditioning built from the reference photo reaches DriftSeedSearch; the identity is embedded from the
    same photo(s); IdentityMetrics reports the candidates against the photo; only locked renders are saved."""
    api = _api(name)
    sid, search = _one(api, "DriftSeedSearch")
    pos = search["inputs"]["positive"][0]
    assert REFERENCE[name] in _upstream(api, pos) | {api[pos]["class_type"]}
    assert "LoadImage" in _upstream(api, pos)
    ident = search["inputs"]["identity"][0]
    assert api[ident]["class_type"] == "IdentityEmbed" and "LoadImage" in _upstream(api, ident)
    _, metrics = _one(api, "IdentityMetrics")
    assert metrics["inputs"]["candidates_1"] == [sid, 3]
    assert "LoadImage" in {api[metrics["inputs"]["reference_images"][0]]["class_type"]} | _upstream(
        api, metrics["inputs"]["reference_images"][0]
    )
    assert all(n["inputs"]["images"] == [sid, 5] for n in api.values() if n["class_type"] == "SaveImage")
    if name.startswith("42_"):  # multi-reference: two photos, two chained reference latents
        assert sum(n["class_type"] == "ReferenceLatent" for n in api.values()) == 2


def test_every_family_template_names_its_model_files():
    """Each template's note names every model file it loads, with the folder it goes in."""
    names = [p.stem for p in sorted(WORKFLOWS.glob("[2-6]?_*.json"))]
    assert len(names) == 15
    folders = {
        "ckpt_name": "checkpoints",
        "unet_name": "diffusion_models",
        "vae_name": "vae",
        "lora_name": "loras",
    }
    for name in names:
        note = _note(name)
        for node in _api(name).values():
            for key in MODEL_INPUTS:
                if key in node["inputs"]:
                    folder = folders.get(key, "text_encoders")
                    assert f"models/{folder}/{node['inputs'][key]}" in note, (name, key)


def test_browser_groups_by_family():
    """ComfyUI lists only <pack>/workflows/*.json (no subfolders) by file name: the number and family prefix groups
    them, and the API twins in workflows/api are not listed."""
    for p in WORKFLOWS.glob("*.json"):
        assert re.fullmatch(r"\d\d_[a-z0-9_]+", p.stem), p.name
    assert [d.name for d in WORKFLOWS.iterdir() if d.is_dir()] == ["api"]
    for family, (number, _, _) in FAMILIES.items():
        stems = [p.stem for p in WORKFLOWS.glob(f"{number // 10}?_*.json")]
        assert stems and all(s[3:].startswith(family) for s in stems), stems


# ------------------------------------------------------------------------------------------------------------------
# The builder: robust to nodes that change


def test_build_runs_with_its_defaults(tmp_path):
    """Regression: the default --object-info pointed at a sibling folder that no longer holds the capture, so the
    documented `python scripts/build_workflows.py` failed; it now reads the committed capture."""
    import build_workflows

    assert build_workflows.main(["--out", str(tmp_path), "--no-data"]) == 0
    assert {p.name for p in tmp_path.glob("*.json")} == {p.name for p in WORKFLOWS.glob("*.json")}


def test_new_widgets_and_outputs_are_picked_up(tmp_path):
    """A node that gains a widget (and an output in front of the others) is written with the schema's default and
    the right link slot, without touching the template; an IfDefined value appears once the input exists."""
    import workflows_families
    from identitylock.core import workflow_validate as wv

    schemas = wv.merged_schemas(wv.load_object_info(CAPTURED))
    changed = json.loads(json.dumps(schemas))
    train = changed["LoRATrainAdaptive"]
    train["input"]["optional"]["adapter"] = [["lora", "lokr"], {"default": "lokr"}]
    train["input_order"]["optional"].append("adapter")
    search = changed["DriftSeedSearch"]
    search["input"]["optional"]["results_name"] = ["STRING", {"default": "seed_search"}]
    search["input_order"]["optional"].append("results_name")
    for key in ("output", "output_name"):
        search[key] = ["EXTRA" if key == "output" else "extra", *search[key]]
    search["output_is_list"] = [False, *search.get("output_is_list", [False] * 6)]
    g = workflows_families.family_train(workflows_families.SPECS["flux2"])
    api = g.api(changed)
    assert (
        next(n for n in api.values() if n["class_type"] == "LoRATrainAdaptive")["inputs"]["adapter"] == "lokr"
    )
    ui = g.ui(changed)
    assert wv.validate_ui(ui, changed) == [] and wv.validate_api(api, changed) == []
    g = workflows_families.lora_seed_search(workflows_families.SPECS["flux2"])
    api = g.api(changed)
    sid = next(k for k, n in api.items() if n["class_type"] == "DriftSeedSearch")
    assert [n["inputs"]["images"] for n in api.values() if n["class_type"] == "SaveImage"] == [[sid, 6]]
    assert wv.validate_api(api, changed) == []
    # the per-template results file is set once the node has the input, and left out before
    assert api[sid]["inputs"]["results_name"] == "flux2"
    plain = json.loads(json.dumps(schemas))  # a DriftSeedSearch without the input (as before issue 16)
    plain["DriftSeedSearch"]["input"]["optional"].pop("results_name", None)
    order = plain["DriftSeedSearch"].get("input_order", {}).get("optional", [])
    if "results_name" in order:
        order.remove("results_name")
    before = g.api(plain)
    assert (
        "results_name"
        not in next(n for n in before.values() if n["class_type"] == "DriftSeedSearch")["inputs"]
    )


def test_unknown_output_or_input_stops_the_build():
    import workflow_graph
    from identitylock.core import workflow_validate as wv

    schemas = wv.merged_schemas(wv.load_object_info(CAPTURED))
    g = workflow_graph.Graph("x", "test")
    lat = g.add("EmptyLatentImage", width=64, height=64)
    g.add("PreviewImage", images=lat["no_such_output"])
    with pytest.raises(SystemExit, match="no output 'no_such_output'"):
        g.api(schemas)
    g = workflow_graph.Graph("y", "test")
    g.add("EmptyLatentImage", widht=64)
    with pytest.raises(SystemExit, match="widht"):
        g.api(schemas)


def test_ui_templates_have_a_uuid_id():
    """Regression: the templates' top-level 'id' was "identitylock-<name>"; ComfyUI's front end (1.35.9) alerts
    'Invalid workflow against zod schema: Invalid uuid at "id"' on opening each one (seen with
    scripts/check_templates_frontend.py). The validator now reports it, and the builder writes a stable UUID."""
    import copy
    import uuid

    from identitylock.core import workflow_validate as wv

    schemas = wv.merged_schemas(wv.load_object_info(CAPTURED))
    ids = set()
    for p in sorted(WORKFLOWS.glob("*.json")):
        ui = json.loads(p.read_text())
        assert str(uuid.UUID(ui["id"])) == ui["id"], p.name
        ids.add(ui["id"])
    assert len(ids) == len(list(WORKFLOWS.glob("*.json")))
    bad = copy.deepcopy(json.loads((WORKFLOWS / "42_flux2_multi_reference.json").read_text()))
    bad["id"] = "identitylock-42_flux2_multi_reference"
    assert any("not a UUID" in p for p in wv.validate_ui(bad, schemas))
    del bad["id"]
    assert wv.validate_ui(bad, schemas) == []
