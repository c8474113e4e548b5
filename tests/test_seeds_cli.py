"""`identitylock seeds / render / profile` on a tiny diffusers pipeline saved as a local folder (offline)."""

from __future__ import annotations

import json

import pytest
from identitylock.core.cli import main


@pytest.fixture(scope="module")
def assets(tmp_path_factory, faces_dir):
    from identitylock.core.diffusion import build_tiny_pipeline, make_test_lora
    from identitylock.core.faces import analyze_file, get_engine
    from identitylock.core.identity import reference_from_analyses

    root = tmp_path_factory.mktemp("cli")
    pipe = build_tiny_pipeline(seed=0)
    pipe.save_pretrained(root / "tiny_sd")
    lora = make_test_lora(pipe, root / "testchar.safetensors")
    ref = reference_from_analyses(
        [analyze_file(faces_dir / "lisa_1.jpg", get_engine("dlib"))], ["lisa_1.jpg"]
    )
    return {"model": root / "tiny_sd", "lora": lora, "ref": ref.save(root / "lisa.safetensors"), "root": root}


def test_seeds_command(assets, tmp_path, capsys):
    out = tmp_path / "seeds"
    rc = main([
        "seeds", "--model", str(assets["model"]), "--lora", str(assets["lora"]), "--reference", str(assets["ref"]),
        "--prompt", "photo of testchar", "--seeds", "0:3", "--steps", "3", "--batch", "2", "--no-rescue",
        "--save", "all", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    rep = json.loads((out / "seed_search.json").read_text())
    assert [r["seed"] for r in rep["records"]] == [0, 1, 2]  # all misses (random weights), ranked by seed
    assert all(r["miss"] for r in rep["records"]) and rep["parameters"]["prompt"] == "photo of testchar"
    assert sorted(p.name for p in out.glob("*.png")) == [f"verify_seed_{s}_drift_miss.png" for s in range(3)]
    printed = capsys.readouterr().out
    assert "0 locked" in printed and "miss" in printed


def test_render_command_two_pass(assets, tmp_path, capsys):
    rc = main([
        "render", "--passes", "2", "--model", str(assets["model"]), "--lora", str(assets["lora"]),
        "--prompt", "photo of testchar", "--steps", "3", "--seed", "4", "--out", str(tmp_path), "--name", "export",
    ])  # fmt: skip
    assert rc == 0
    meta = json.loads((tmp_path / "export.json").read_text())
    assert meta["mode"] == "2-pass" and meta["consistency_method"] == "lora_only"
    assert [p["name"] for p in meta["passes"]] == ["anchor", "realism_base"]
    assert (tmp_path / "export.png").exists() and (tmp_path / "export_pass2_realism_base.png").exists()


def test_render_bad_input(assets, tmp_path, capsys):
    assert main(["render", "--tiny", "--prompt", "x", "--out", str(tmp_path)]) == 2  # 3-pass needs --scene
    assert main(["seeds", "--model", str(tmp_path / "nope"), "--reference", str(assets["ref"]), "--prompt", "x",
                 "--out", str(tmp_path)]) == 2  # fmt: skip
    assert "not found" in capsys.readouterr().err


def test_profile_command(assets, capsys):
    assert main(["profile", "--lora", str(assets["lora"]), "--identity", str(assets["ref"])]) == 0
    prof = json.loads(capsys.readouterr().out)
    assert prof["method"] == "lora_only" and prof["verify"] is True


def test_seeds_command_writes_records_as_it_goes_and_resumes(assets, tmp_path, capsys):
    """Issue 16: the results were written only at the end, and nothing could resume a killed search."""
    out = tmp_path / "seeds"
    base = [
        "seeds", "--tiny", "--reference", str(assets["ref"]), "--prompt", "photo of testchar", "--steps", "2",
        "--no-rescue", "--save", "none", "--out", str(out),
    ]  # fmt: skip
    assert main([*base, "--seeds", "0:3"]) == 0
    lines = (out / "seed_search.jsonl").read_text().splitlines()
    assert [json.loads(x)["seed"] for x in lines[1:]] == [0, 1, 2]
    capsys.readouterr()
    assert main([*base, "--seeds", "0:5", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "seed 3" in err and "seed 4" in err and "seed 0" not in err  # only the new seeds were rendered
    rep = json.loads((out / "seed_search.json").read_text())
    assert sorted(r["seed"] for r in rep["records"]) == [0, 1, 2, 3, 4] and rep["resumed"] == 3
    assert main([*base, "--seeds", "0:5", "--resume", "--steps", "3"]) == 2  # other settings: refused
    assert "other settings" in capsys.readouterr().err
