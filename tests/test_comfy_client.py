"""The ComfyUI HTTP client and the queue / generate commands, against a local server speaking the real protocol."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_comfy_server import FakeComfy, txt2img, with_load_image  # noqa: E402
from identitylock.core import comfy as cc  # noqa: E402
from identitylock.core import portfolio_gen  # noqa: E402
from identitylock.core.cli import main as cli_main  # noqa: E402


@pytest.fixture()
def workflow(tmp_path: Path) -> Path:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(txt2img()))
    return path


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """The real entry point (``identitylock ...``): its exit code, stdout and stderr."""
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def run_queue(workflow, server: str, out, *extra: str, capsys) -> tuple[int, str, str]:
    """``identitylock queue WORKFLOW --server SERVER --out OUT [extra...]``."""
    return run_cli(["queue", str(workflow), "--server", server, "--out", str(out), *extra], capsys)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_partials(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".partial-" in p.name]


# ------------------------------------------------------------------------------------------------------------------


def test_run_follows_ws_and_downloads(workflow: Path):
    with FakeComfy() as srv:
        server = cc.ComfyServer(srv.url)
        events: list[dict] = []
        result = server.run(cc.load_workflow(workflow), on_progress=events.append, timeout=30)
        kinds = [e["type"] for e in events]
        assert "execution_start" in kinds and "progress" in kinds and "executed" in kinds
        assert any(e.get("title") == "Sampler" for e in events if e["type"] == "progress")
        assert result.files and result.files[0]["filename"].startswith("lab_txt2img")
        png = server.view(result.files[0]["filename"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_queue_success_with_sets(workflow: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    with FakeComfy() as srv:
        code, stdout, err = run_queue(
            str(workflow),
            srv.url,
            str(out),
            "--set",
            "Sampler.steps=3",
            "--set",
            "Positive.text=a photo of lisa",
            "--set",
            "5.width=128",
            capsys=capsys,
        )
        assert code == 0, err
        sent = srv.prompts[0]
    assert sent["3"]["inputs"]["steps"] == 3 and sent["6"]["inputs"]["text"] == "a photo of lisa"
    assert sent["5"]["inputs"]["width"] == 128
    files = sorted(p.name for p in out.iterdir())
    assert files == ["queue_results.jsonl", "wf.png"]
    assert (out / "wf.png").read_bytes()[:4] == b"\x89PNG"
    done = [r for r in cc.read_records(out / "queue_results.jsonl") if r["status"] == "done"]
    assert [r["files"] for r in done] == [["wf.png"]]
    assert no_partials(tmp_path)


def test_queue_node_errors_are_clear(workflow: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    with FakeComfy() as srv:
        code, _, err = run_queue(
            str(workflow),
            srv.url,
            str(out),
            "--set",
            "Sampler.sampler_name=no_such_sampler",
            "--set",
            "Sampler.steps=-5",
            capsys=capsys,
        )
    assert code == 2
    assert "node 3 'Sampler' (KSampler): sampler_name: Value not in list" in err
    assert "steps: Value -5 smaller than min of 1" in err
    assert not out.exists() and no_partials(tmp_path)


def test_unknown_node_class(tmp_path: Path, capsys):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}))
    with FakeComfy() as srv:
        code, _, err = run_queue(str(wf), srv.url, str(tmp_path / "o"), capsys=capsys)
    assert code == 2 and "NoSuchNode does not exist" in err


def test_execution_error_is_clear(workflow: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    with FakeComfy() as srv:
        code, _, err = run_queue(
            str(workflow),
            srv.url,
            str(out),
            "--set",
            "Checkpoint.ckpt_name=zz_corrupt.safetensors",
            capsys=capsys,
        )
    assert code == 1
    assert "node 4 'Checkpoint' (CheckpointLoaderSimple) failed while running" in err
    assert "header too large" in err
    assert not out.exists() and no_partials(tmp_path)


def test_server_down(workflow: Path, tmp_path: Path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run_queue(str(workflow), url, str(tmp_path / "o"), capsys=capsys)
    assert code == 1
    assert "not reachable" in err and url in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("Nope.steps=3", "no node with id or title 'Nope'"),
        ("Sampler.stepz=3", "has no input 'stepz'"),
        ("Sampler.steps=many", "expected an integer"),
        ("Sampler.model=x", "is linked to node 4"),
        ("Sampler=3", "'.input' part is missing"),
        ("Sampler.steps", "expected 'Node title.input=value'"),
    ],
)
def test_bad_set_is_refused_before_queueing(workflow: Path, tmp_path: Path, capsys, spec: str, message: str):
    with FakeComfy() as srv:
        code, _, err = run_queue(str(workflow), srv.url, str(tmp_path / "o"), "--set", spec, capsys=capsys)
        assert srv.prompts == []
    assert code == 2 and message in err, err


def test_not_a_workflow(tmp_path: Path, capsys):
    for content, message in [
        ("hello", "not JSON"),
        ('{"a": 1}', "not a ComfyUI workflow"),
        ("[1, 2]", "not a ComfyUI workflow"),
    ]:
        wf = tmp_path / "x.json"
        wf.write_text(content)
        code, _, err = run_queue(str(wf), "http://127.0.0.1:9", str(tmp_path / "o"), capsys=capsys)
        assert code == 2 and message in err, err
    code, _, err = run_queue(
        str(tmp_path / "missing.json"), "http://127.0.0.1:9", str(tmp_path / "o"), capsys=capsys
    )
    assert code == 2 and "not found" in err


def test_upload_ok_and_failed(tmp_path: Path, capsys):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(with_load_image(txt2img())))
    face = tmp_path / "face.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 100, 50)).save(face)
    with FakeComfy() as srv:
        code, _, err = run_queue(
            str(wf), srv.url, str(tmp_path / "ok"), "--upload", f"Reference={face}", capsys=capsys
        )
        assert code == 0, err
        assert srv.uploads["face.png"] == face.read_bytes()
        assert srv.prompts[0]["20"]["inputs"]["image"] == "face.png"
        assert len(list((tmp_path / "ok").glob("wf_*.png"))) == 2  # two SaveImage nodes
    with FakeComfy(fail_uploads=True) as srv:
        code, _, err = run_queue(
            str(wf), srv.url, str(tmp_path / "bad"), "--upload", f"Reference={face}", capsys=capsys
        )
        assert srv.prompts == []
    assert code == 2 and "upload of face.png" in err and "HTTP 500" in err
    assert not (tmp_path / "bad").exists() and no_partials(tmp_path)
    code, _, err = run_queue(
        str(wf),
        "http://127.0.0.1:9",
        str(tmp_path / "o"),
        "--upload",
        f"Reference={tmp_path / 'nope.png'}",
        capsys=capsys,
    )
    assert code == 2 and "is not a file" in err
    code, _, err = run_queue(
        str(wf), "http://127.0.0.1:9", str(tmp_path / "o"), "--upload", f"Missing={face}", capsys=capsys
    )
    assert code == 2 and "no node with id or title 'Missing'" in err


def test_fan_out_over_two_servers(workflow: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    with FakeComfy(node_delay=0.02) as a, FakeComfy(node_delay=0.02) as b:
        code, stdout, err = run_cli(
            [
                "queue",
                str(workflow),
                "--server",
                a.url,
                "--server",
                b.url,
                "--out",
                str(out),
                "--seeds",
                "10:17",
            ],
            capsys,
        )
        assert code == 0, err
        assert a.prompts and b.prompts, "both servers must take jobs"
        seeds = sorted(p["3"]["inputs"]["seed"] for p in a.prompts + b.prompts)
    assert seeds == list(range(10, 18))
    assert sorted(p.name for p in out.glob("*.png")) == [
        f"wf_seed_{s}.png" for s in sorted(range(10, 18), key=str)
    ]
    index = [r for r in cc.read_records(out / "queue_results.jsonl") if r["status"] == "done"]
    assert sorted(r["seed"] for r in index) == list(range(10, 18))
    assert {r["server"] for r in index} == {a.url, b.url}
    # Images differ by seed: the fake server colours by seed, so the files must not all be identical.
    assert len({p.read_bytes() for p in out.glob("*.png")}) == 8


def test_fan_out_survives_one_server_down(workflow: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    dead = f"http://127.0.0.1:{free_port()}"
    with FakeComfy() as a:
        code, _, err = run_cli(
            [
                "queue",
                str(workflow),
                "--server",
                dead,
                "--server",
                a.url,
                "--out",
                str(out),
                "--seeds",
                "1:4",
            ],
            capsys,
        )
        assert len(a.prompts) == 4
    assert code == 0, err
    assert len(list(out.glob("*.png"))) == 4


def test_seed_range_parsing():
    assert list(cc.parse_seed_range("3:5")) == [3, 4, 5]
    assert list(cc.parse_seed_range("0:10:5")) == [0, 5, 10]
    assert list(cc.parse_seed_range("7,1,9")) == [7, 1, 9]
    for bad in ("5:3", "a:b", "1:2:0", "1:2:3:4"):
        with pytest.raises(cc.WorkflowError):
            cc.parse_seed_range(bad)


# ------------------------------------------------------------------------------------------------------------------
# Portfolio generation


def test_distribution_matches_the_seed():
    d = portfolio_gen.distribution(50, 600, 5, 60)
    assert (d.num_seed_groups, d.original_per_seed, d.modified_per_seed, d.images_per_scenario_per_seed) == (
        10,
        5,
        120,
        2,
    )
    d = portfolio_gen.distribution(50, 6000, 5, 60)
    assert d.images_per_scenario_per_seed == 10
    assert portfolio_gen.distribution(7, 0, 5, 60).num_seed_groups == 2
    assert len(portfolio_gen.load_scenarios(None)) == 60
    with pytest.raises(cc.WorkflowError):
        portfolio_gen.distribution(0, 10, 5, 3)


def test_generate_writes_catalog_and_resumes(workflow: Path, tmp_path: Path, capsys):
    scen = tmp_path / "scen.txt"
    scen.write_text("# two scenarios\nin a library, warm light\n, on a beach, golden hour\n")
    out = tmp_path / "portfolio"
    argv = [
        "generate",
        str(workflow),
        "--character",
        "lisachar woman, freckles",
        "--name",
        "lisa",
        "--scenarios",
        str(scen),
        "--originals",
        "4",
        "--batch",
        "2",
        "--modified",
        "4",
        "--base-seed",
        "100",
        "--out",
        str(out),
    ]
    with FakeComfy() as a, FakeComfy() as b:
        code, _, err = run_cli(argv + ["--server", a.url, "--server", b.url], capsys)
        assert code == 0, err
        sent = a.prompts + b.prompts
        # 2 groups x (1 originals job + 2 scenario jobs), every job batched (EmptyLatentImage batch_size)
        assert len(sent) == 6
    catalog = json.loads((out / "master_image_catalog.json").read_text())
    assert catalog["distribution"] == {
        "num_seed_groups": 2,
        "original_per_seed": 2,
        "modified_per_seed": 4,
        "images_per_scenario_per_seed": 2,
        "total_scenarios": 2,
    }
    rows = catalog["catalog"]
    assert len(rows) == 12
    assert all((out / r["filename"]).is_file() for r in rows)
    orig = [r for r in rows if r["image_type"] == "original"]
    assert {r["filename"] for r in orig} == {
        f"char_lisa_seed_{s}_original_0{i}.png" for s in (100, 101) for i in (1, 2)
    }
    scen_rows = [r for r in rows if r["image_type"] == "scenario" and r["seed_group"] == 1]
    assert {r["seed"] for r in scen_rows} == {102, 103}  # base 101 + scenario index
    assert {r["prompt"] for r in scen_rows} == {
        "lisachar woman, freckles, in a library, warm light",
        "lisachar woman, freckles, on a beach, golden hour",
    }
    assert rows[0]["negative_prompt"] == "blurry, lowres"
    assert any("Sampler" in k for k in rows[0]["generation_settings"])
    # What the server received matches the catalog.
    by_seed_text = {(p["3"]["inputs"]["seed"], p["6"]["inputs"]["text"]) for p in sent}
    assert (102, "lisachar woman, freckles, in a library, warm light") in by_seed_text

    # Resume: nothing to do.
    with FakeComfy() as c:
        code, _, err = run_cli(argv + ["--server", c.url], capsys)
        assert code == 0 and c.prompts == []
    # Lose one image: only its job runs again.
    (out / "char_lisa_seed_101_scenario_02_01.png").unlink()
    with FakeComfy() as c:
        code, _, err = run_cli(argv + ["--server", c.url], capsys)
        assert code == 0 and len(c.prompts) == 1
        assert c.prompts[0]["3"]["inputs"]["seed"] == 103
    assert len(json.loads((out / "master_image_catalog.json").read_text())["catalog"]) == 12
    # A different run into the same folder is refused.
    code, _, err = run_cli(
        [a if a != "lisachar woman, freckles" else "someone else" for a in argv]
        + ["--server", "http://127.0.0.1:9"],
        capsys,
    )
    assert code == 2 and "different run" in err


def test_generate_partial_failure_then_resume(workflow: Path, tmp_path: Path, capsys):
    out = tmp_path / "p"
    argv = [
        "generate",
        str(workflow),
        "--character",
        "lisachar",
        "--originals",
        "2",
        "--batch",
        "1",
        "--modified",
        "0",
        "--out",
        str(out),
    ]
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = run_cli(argv + ["--server", dead], capsys)
    assert code == 1 and "not reachable" in err
    assert not (out / "master_image_catalog.json").exists()
    with FakeComfy() as srv:
        code, _, err = run_cli(argv + ["--server", srv.url], capsys)
        assert code == 0, err
    assert len(json.loads((out / "master_image_catalog.json").read_text())["catalog"]) == 2
    assert no_partials(tmp_path)


def test_queue_ui_format_workflow_is_converted(tmp_path: Path, capsys):
    """A UI-format template is converted with the server's /object_info and queued as its API twin."""
    repo = Path(__file__).resolve().parents[1]
    ui = repo / "workflows" / "10_export_2pass.json"
    api = json.loads((repo / "workflows" / "api" / "10_export_2pass.json").read_text())
    with FakeComfy() as srv:
        code, _, err = run_queue(
            str(ui), srv.url, str(tmp_path / "o"), "--set", "Anchor sampler.steps=4", capsys=capsys
        )
        assert code == 0, err
        sent = srv.prompts[0]
    next(n for n in api.values() if n["_meta"]["title"] == "Anchor sampler")["inputs"]["steps"] = 4
    assert sent == api
