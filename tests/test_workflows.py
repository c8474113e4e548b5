"""Every bundled workflow is valid against the node schemas of a real ComfyUI 0.8 (+ IPAdapter_plus) and ours."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
from identitylock.core import workflow_validate as wv

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
CAPTURED = Path(__file__).resolve().parent / "fixtures" / "comfyui" / "object_info.json"


@pytest.fixture(scope="module")
def schemas() -> dict:
    # The full capture of a real ComfyUI 0.8 (+ IPAdapter_plus), committed under tests/fixtures/comfyui.
    info = wv.load_object_info(CAPTURED)
    return wv.merged_schemas(info)


def test_there_are_templates():
    assert len(UI_FILES) >= 8
    assert [p.name for p in UI_FILES] == [p.name for p in API_FILES], "every UI template needs its API twin"


@pytest.mark.parametrize("path", UI_FILES + API_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_workflow_is_valid(path: Path, schemas: dict):
    assert wv.validate_file(path, schemas) == []


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_and_api_are_the_same_graph(path: Path, schemas: dict):
    ui = json.loads(path.read_text())
    api = json.loads((WORKFLOWS / "api" / path.name).read_text())
    assert wv.compare_ui_api(ui, api, schemas) == []
    notes = [n for n in ui["nodes"] if n["type"] == "Note"]
    assert notes and len(notes[0]["widgets_values"][0]) > 80, "each template carries a description note"


def test_templates_match_the_builder(tmp_path: Path):
    """The committed JSON is what scripts/build_workflows.py produces (nobody hand-edited one version)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import build_workflows

    build_workflows.main(["--object-info", str(CAPTURED), "--out", str(tmp_path), "--no-data"])
    for p in sorted(tmp_path.glob("*.json")) + sorted((tmp_path / "api").glob("*.json")):
        committed = WORKFLOWS / p.relative_to(tmp_path)
        assert committed.exists(), f"{committed} missing: run scripts/build_workflows.py"
        assert json.loads(committed.read_text()) == json.loads(p.read_text()), f"{committed} is stale"


def test_bundled_node_schemas_are_fresh():
    """core/data/identitylock_object_info.json (what core validates against) is what the nodes declare now."""
    from identitylock.nodes import NODE_CLASS_MAPPINGS
    from identitylock.nodes._object_info import SCHEMA_PATH, build_object_info, render

    fresh = build_object_info()
    assert set(fresh) == set(NODE_CLASS_MAPPINGS) and fresh
    committed = (REPO / SCHEMA_PATH).read_text(encoding="utf-8")
    assert committed == render(fresh), (
        f"{SCHEMA_PATH} is stale (a node's INPUT_TYPES, outputs or description changed): "
        "regenerate it with `python scripts/build_workflows.py --schemas-only` "
        "(or `python scripts/build_workflows.py` to rebuild the templates too) and commit it"
    )
    assert wv.our_object_info() == fresh


def test_base_template_follows_the_seed():
    api = json.loads((WORKFLOWS / "api" / "03_lora_ipadapter_base.json").read_text())
    by_title = {n["_meta"]["title"]: n for n in api.values()}
    assert by_title["Identity LoRA"]["inputs"]["strength_model"] == 0.7
    assert by_title["IPAdapter"]["inputs"]["weight"] == 0.6
    ks = by_title["Sampler"]["inputs"]
    assert (ks["cfg"], ks["steps"], ks["sampler_name"], ks["scheduler"]) == (7.0, 25, "dpmpp_2m", "karras")
    assert by_title["Positive"]["inputs"]["text"].startswith("ilkperson,")


def test_3pass_table():
    api = json.loads((WORKFLOWS / "api" / "09_stylized_3pass.json").read_text())
    by_title = {n["_meta"]["title"]: n["inputs"] for n in api.values()}
    assert [by_title[f"Pass {i} sampler"]["cfg"] for i in (1, 2, 3)] == [5.8, 6.3, 6.8]
    loras = sorted(v["strength_model"] for k, v in by_title.items() if k.startswith("Pass") and "LoRA" in k)
    assert loras == [0.85, 0.9, 1.0]
    assert by_title["Rescue blend 30 %"]["blend_factor"] == 0.3


# ------------------------------------------------------------------------------------------------------------------
# The validator catches what it claims to catch (so a passing check means something).


@pytest.fixture()
def base() -> tuple[dict, dict]:
    ui = json.loads((WORKFLOWS / "03_lora_ipadapter_base.json").read_text())
    api = json.loads((WORKFLOWS / "api" / "03_lora_ipadapter_base.json").read_text())
    return ui, api


def _node(api: dict, title: str) -> dict:
    return next(n for n in api.values() if n["_meta"]["title"] == title)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda a: _node(a, "Sampler").update(class_type="KSamplerX"), "unknown node class"),
        (lambda a: _node(a, "Sampler")["inputs"].pop("positive"), "required input 'positive'"),
        (lambda a: _node(a, "Sampler")["inputs"].update(steps=0), "below the minimum 1"),
        (lambda a: _node(a, "IPAdapter")["inputs"].update(weight=9.0), "above the maximum 5"),
        (lambda a: _node(a, "Sampler")["inputs"].update(sampler_name="dpm_9000"), "is not one of"),
        (lambda a: _node(a, "IPAdapter loader")["inputs"].update(preset="ULTRA"), "is not one of"),
        (lambda a: _node(a, "Sampler")["inputs"].update(positive=["99", 0]), "missing node 99"),
        (lambda a: _node(a, "Sampler")["inputs"].update(positive=["1", 0]), "expects CONDITIONING"),
        (lambda a: _node(a, "Sampler")["inputs"].update(steps=2.5), "should be an integer"),
        (lambda a: _node(a, "Sampler")["inputs"].update(stepz=3), "does not define"),
    ],
)
def test_validator_catches(base, schemas, mutate, expected):
    _, api = base
    api = copy.deepcopy(api)
    mutate(api)
    problems = wv.validate_api(api, schemas)
    assert any(expected in p for p in problems), problems


def test_model_file_lists_are_not_checked(base, schemas):
    _, api = base
    api = copy.deepcopy(api)
    _node(api, "Checkpoint")["inputs"]["ckpt_name"] = "my_own_model.safetensors"
    assert wv.validate_api(api, schemas) == []


def test_ui_dangling_link_and_mismatch(base, schemas):
    ui, api = base
    bad = copy.deepcopy(ui)
    bad["links"].append([999, 12345, 0, 1, 0, "MODEL"])
    assert any("dangling" in p for p in wv.validate_ui(bad, schemas))
    bad = copy.deepcopy(ui)
    bad["links"][0][5] = "LATENT"
    assert any("type LATENT" in p for p in wv.validate_ui(bad, schemas))
    bad = copy.deepcopy(ui)
    sampler = next(n for n in bad["nodes"] if n.get("title") == "Sampler")
    sampler["widgets_values"] = sampler["widgets_values"][:-1]
    assert any("widget values" in p for p in wv.validate_ui(bad, schemas))
    # UI and API drifting apart is caught.
    drift = copy.deepcopy(api)
    _node(drift, "Sampler")["inputs"]["cfg"] = 6.0
    assert any("'cfg'" in p for p in wv.compare_ui_api(ui, drift, schemas))


def test_ui_conversion_control_widgets(base, schemas):
    ui, api = base
    conv = wv.ui_to_api(ui, schemas)
    sampler = next(n for n in ui["nodes"] if n.get("title") == "Sampler")
    assert "fixed" in sampler["widgets_values"]  # control_after_generate slot after the seed
    assert conv == {k: v for k, v in api.items()}


def test_cli_validate(tmp_path: Path, capsys):
    import argparse

    from identitylock.core.cli import client as comfy_client_cli

    parser = argparse.ArgumentParser()
    comfy_client_cli.register(parser.add_subparsers())
    args = parser.parse_args(["validate-workflow", str(WORKFLOWS)])
    assert args.func(args) == 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": "world"}')
    args = parser.parse_args(["validate-workflow", str(bad)])
    assert args.func(args) == 2
    assert "not a ComfyUI workflow" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "producer", "slot"),
    [("08_seed_discovery", "DriftSeedSearch", 5), ("11_matched_portrait", "MatchedPortrait", 4)],
)
def test_failed_runs_save_nothing(name, producer, slot):
    """Issue 15: templates 08 and 11 saved the outputs of failed runs. Their SaveImage takes only the output that
    carries locked / passed images (a blocker with the reason when nothing passed)."""
    from identitylock.nodes import NODE_CLASS_MAPPINGS

    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    ids = {k for k, n in api.items() if n["class_type"] == producer}
    saves = [n for n in api.values() if n["class_type"] == "SaveImage"]
    assert saves and all(s["inputs"]["images"][0] in ids for s in saves)
    assert all(s["inputs"]["images"][1] == slot for s in saves)
    assert NODE_CLASS_MAPPINGS[producer].RETURN_NAMES[slot] in ("locked_images", "passed_image")
