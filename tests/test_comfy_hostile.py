"""queue / generate / validate-workflow under hostile input and hostile servers (issue 15).

Each defect found by hostile use has a regression test here, against tests/fake_comfy_server.py made to
misbehave (malformed replies, a reply trickled one byte at a time, a connection dropped mid-run, a websocket
registered late). The last test is a generated corpus covering each class for the three commands: every case
must end with exit code 1 or 2 and one-line errors, never a traceback, a lost thread exception, or 0.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_comfy_server import FakeComfy, txt2img, with_load_image  # noqa: E402
from identitylock.core import comfy as cc  # noqa: E402
from identitylock.core.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_lost_thread_exceptions(monkeypatch):
    """An exception that kills a worker thread loses its job: fail the test if one escapes."""
    lost: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: lost.append(args.exc_value))
    yield
    assert not lost, f"exceptions lost in threads: {lost!r}"


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``identitylock ARGV`` in-process (the real entry point: its exit codes, its error handling)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refusing an option value
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and 'File "' not in err, err
    return code, out, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def workflow(tmp_path: Path) -> Path:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(txt2img()))
    return path


@pytest.fixture()
def face(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "face.png"
    Image.new("RGB", (8, 8), (200, 100, 50)).save(path)
    return path


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


# ------------------------------------------------------------------------------------------------------------------
# 1. Nothing finished must never read as success; no exception may die with its worker thread.

HISTORY_MANGLES = {
    "entry is text": lambda b: {k: "done" for k in b},
    "entry is a list": lambda b: {k: [1, 2] for k in b},
    "status is a list": lambda b: {k: dict(v, status=["success"]) for k, v in b.items()},
    "outputs is a list": lambda b: {k: dict(v, outputs=[1]) for k, v in b.items()},
    "error with garbage messages": lambda b: {
        k: dict(v, status={"status_str": "error", "messages": "x"}) for k, v in b.items()
    },
    "body is a list": lambda b: [b] if b else b,
    "body is not JSON": lambda b: b"<html>oops</html>" if b else b,
}


@pytest.mark.parametrize("case", list(HISTORY_MANGLES))
def test_malformed_history_fails_the_job(workflow: Path, tmp_path: Path, capsys, case: str):
    with FakeComfy(mangle={"history": HISTORY_MANGLES[case]}) as srv:
        code, _, err = cli(["queue", workflow, "--server", srv.url, "--out", tmp_path / "o"], capsys)
    assert code == 1, err
    assert "0/1 runs finished" in err and "0/0" not in err
    assert "error: wf: " in err


UPLOAD_MANGLES = {
    "a list": lambda b: [b],
    "name not text": lambda b: dict(b, name=5),
    "empty name": lambda b: dict(b, name=""),
    "not JSON": lambda b: b"ok",
}


@pytest.mark.parametrize("case", list(UPLOAD_MANGLES))
def test_malformed_upload_reply_fails_the_job(tmp_path: Path, face: Path, capsys, case: str):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(with_load_image(txt2img())))
    with FakeComfy(mangle={"upload": UPLOAD_MANGLES[case]}) as srv:
        code, _, err = cli(
            ["queue", wf, "--server", srv.url, "--out", tmp_path / "o", "--upload", f"Reference={face}"],
            capsys,
        )
        assert srv.prompts == []
    assert code == 1, err
    assert "upload of face.png" in err and "unexpected answer" in err and "0/1 runs finished" in err


def test_callback_failure_is_reported_not_lost(workflow: Path, tmp_path: Path):
    """A job whose result cannot be recorded (on_done raises: disk full...) is a failed job, not a lost one."""

    def on_done(result):
        raise OSError(28, "No space left on device")

    with FakeComfy() as srv:
        results = cc.run_jobs(
            [cc.Job("a", txt2img()), cc.Job("b", txt2img())], [srv.url], tmp_path / "o", on_done=on_done
        )
    assert [r.job.name for r in results] == ["a", "b"]
    assert all(not r.ok and "could not be recorded" in r.error for r in results)


def test_job_given_back_by_a_dead_server_is_run_by_another(workflow: Path, tmp_path: Path, capsys):
    """Server B accepts connections and drops them after 1 s; A is healthy and finishes its job first. B's job
    goes back to the queue after A's worker found it empty: A must still run it (it used to be reported as
    'no reachable server left' although A was alive)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def drop_after_a_second() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            time.sleep(1.0)
            conn.close()

    threading.Thread(target=drop_after_a_second, daemon=True).start()
    dead = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with FakeComfy() as a:
            code, _, err = cli(
                [
                    "queue",
                    workflow,
                    "--server",
                    a.url,
                    "--server",
                    dead,
                    "--out",
                    tmp_path / "o",
                    "--seeds",
                    "1:2",
                ],
                capsys,
            )
            assert len(a.prompts) == 2, err
    finally:
        listener.close()
    assert code == 0 and "2/2 runs finished" in err, err


# ------------------------------------------------------------------------------------------------------------------
# 2. --out that cannot hold the results fails before the work.


@pytest.mark.parametrize("command", ["queue", "generate"])
def test_out_is_an_existing_file(workflow: Path, tmp_path: Path, capsys, command: str):
    out = tmp_path / "taken"
    out.write_text("keep me")
    extra = (
        ["--character", "lisachar", "--originals", "1", "--modified", "0"] if command == "generate" else []
    )
    with FakeComfy() as srv:
        code, _, err = cli([command, workflow, "--server", srv.url, "--out", out, *extra], capsys)
        assert srv.prompts == [], "checked before the work"
    assert code == 2 and "is an existing file, not a folder" in err, err
    assert out.read_text() == "keep me"


# ------------------------------------------------------------------------------------------------------------------
# 3. --timeout is a deadline: a server trickling one byte at a time cannot hold a run past it.


@pytest.mark.parametrize("route", ["prompt", "history", "view", "ws"])
def test_timeout_bounds_a_trickling_server(workflow: Path, tmp_path: Path, capsys, route: str):
    box: dict[str, object] = {}
    with FakeComfy(trickle={route: 0.25}) as srv:

        def run() -> None:
            box["res"] = cli(
                ["queue", workflow, "--server", srv.url, "--out", tmp_path / "o", "--timeout", "2"], capsys
            )

        start = time.monotonic()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(30)
        elapsed = time.monotonic() - start
    assert not t.is_alive(), f"still running after {elapsed:.0f} s with --timeout 2"
    code, _, err = box["res"]  # type: ignore[misc]
    print(f"trickled {route}: --timeout 2 ended the run after {elapsed:.2f} s")
    assert elapsed < 6.0, f"--timeout 2 took {elapsed:.1f} s"
    assert code == 1 and ("did not answer" in err or "did not finish within --timeout" in err), err


# ------------------------------------------------------------------------------------------------------------------
# 4. A huge seed range is produced lazily: no memory for jobs not running, no hang.


def test_seed_range_is_lazy():
    tracemalloc.start()
    try:
        seeds = cc.parse_seed_range("0:100000000")
        jobs = cc.seed_jobs("wf", txt2img(), seeds)
        first = [next(jobs) for _ in range(3)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(seeds) == 100_000_001 and [j.meta["seed"] for j in first] == [0, 1, 2]
    print(f"parse_seed_range('0:100000000') + 3 jobs: peak {peak / 1e6:.2f} MB")
    assert peak < 2e6
    for bad in ("-1:5", f"0:{2**64}", "", ",", "1e3"):
        with pytest.raises(cc.WorkflowError):
            cc.parse_seed_range(bad)


def test_huge_seed_range_in_queue_stays_small_and_stops(workflow: Path, tmp_path: Path, capsys):
    """``--seeds 0:100000000`` on a server that dies after 3 runs: 3 images, the rest reported not run."""
    out = tmp_path / "o"
    tracemalloc.start()
    start = time.monotonic()
    try:
        with FakeComfy(die_after_prompts=3) as srv:
            code, _, err = cli(
                ["queue", workflow, "--server", srv.url, "--out", out, "--seeds", "0:100000000"], capsys
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - start
    print(
        f"queue --seeds 0:100000000 (server dies after 3): {elapsed:.2f} s, traced peak {peak / 1e6:.1f} MB"
    )
    assert code == 1, err
    assert "3/100000001 runs finished" in err and "99999997 job(s) were not run" in err
    assert len(list(out.glob("*.png"))) == 3
    assert peak < 30e6 and elapsed < 30


# ------------------------------------------------------------------------------------------------------------------
# 5. A second run into the same --out never replaces the first run's images; the index keeps both.


def test_second_queue_keeps_the_first_runs_images(workflow: Path, tmp_path: Path, capsys):
    out = tmp_path / "o"
    with FakeComfy() as srv:
        for extra in ([], [], ["--seeds", "1:2"], ["--seeds", "1:2"]):
            code, _, err = cli(["queue", workflow, "--server", srv.url, "--out", out, *extra], capsys)
            assert code == 0, err
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "wf.png",
        "wf_2.png",
        "wf_seed_1.png",
        "wf_seed_1_2.png",
        "wf_seed_2.png",
        "wf_seed_2_2.png",
    ]
    index = [r for r in cc.read_records(out / "queue_results.jsonl") if r["status"] == "done"]
    assert sorted(f for row in index for f in row["files"]) == pngs
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no staging or temporary file left"


def test_long_and_odd_workflow_names_make_legal_output_names(tmp_path: Path, capsys):
    """A legal 255-byte workflow file name plus ``_seed_1.png`` is too long for the file system; a newline in
    it would forge lines of the printed file list."""
    out = tmp_path / "o"
    with FakeComfy() as srv:
        for stem in ("x" * 250, "evil\nname"):
            wf = tmp_path / f"{stem}.json"
            wf.write_text(json.dumps(txt2img()))
            code, stdout, err = cli(["queue", wf, "--server", srv.url, "--out", out, "--seeds", "1"], capsys)
            assert code == 0 and "1/1 runs finished" in err, err
            assert len(stdout.strip().splitlines()) == 1
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["evil_name_seed_1.png", "x" * 180 + "_seed_1.png"]


# ------------------------------------------------------------------------------------------------------------------
# 6. JSON nested deeply enough to overflow Python is one bad file, not the end of the folder.


def test_deep_json_is_one_bad_file_in_validate_workflow(tmp_path: Path, capsys):
    folder = tmp_path / "wfs"
    folder.mkdir()
    (folder / "a_good.json").write_text(json.dumps(txt2img()))
    (folder / "b_deep.json").write_text(deep_json(100_000))
    (folder / "c_deep_value.json").write_text(json.dumps({"1": {"class_type": "KSampler", "x": nested(800)}}))
    (folder / "d_good.json").write_text(json.dumps(txt2img()))
    code, out, _ = cli(["validate-workflow", folder], capsys)
    assert code == 2
    assert f"{folder / 'a_good.json'}: ok" in out and f"{folder / 'd_good.json'}: ok" in out
    assert f"{folder / 'b_deep.json'}: 1 problem(s)" in out and "nested" in out
    assert f"{folder / 'c_deep_value.json'}: 1 problem(s)" in out


@pytest.mark.parametrize("content", [deep_json(100_000), json.dumps(dict(txt2img(), x={"a": nested(800)}))])
def test_deep_json_is_bad_input_in_queue(tmp_path: Path, capsys, content: str):
    wf = tmp_path / "wf.json"
    wf.write_text(content)
    code, _, err = cli(
        ["queue", wf, "--server", f"http://127.0.0.1:{free_port()}", "--out", tmp_path / "o"], capsys
    )
    assert code == 2 and "nested" in err and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------------------------------------------
# 7. A server that is down is an environment error (1), never bad input (2), whatever the workflow format.


def test_server_down_exits_1_for_ui_workflows_and_validate(tmp_path: Path, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    ui = REPO / "workflows" / "10_export_2pass.json"
    code, _, err = cli(["queue", ui, "--server", dead, "--out", tmp_path / "o"], capsys)
    assert code == 1 and "not reachable" in err, err
    code, _, err = cli(["validate-workflow", ui, "--server", dead], capsys)
    assert code == 1 and "not reachable" in err, err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------------------------
# 8. The websocket is registered before the prompt is posted: a fast run's first events are not lost.


def test_progress_socket_is_registered_before_the_prompt(workflow: Path):
    """The fake registers the socket 0.5 s after the handshake (a busy server); the run takes milliseconds.
    A client that posts right after the handshake loses every event; one that waits for the server's greeting
    (status with its sid) gets them all."""
    with FakeComfy(ws_register_delay=0.5) as srv:
        events: list[dict] = []
        result = cc.ComfyServer(srv.url).run(
            cc.load_workflow(workflow), on_progress=events.append, timeout=30
        )
    kinds = [e["type"] for e in events]
    assert kinds[0] == "execution_start" and "progress" in kinds and "executed" in kinds, kinds
    assert result.files


# ------------------------------------------------------------------------------------------------------------------
# 9. A generated hostile corpus: every command, every class of bad input and bad server. Never a traceback,
#    never 0, always the documented exit code.


def _corpus_workflows(tmp: Path) -> dict[str, Path]:
    good = txt2img()
    dangling = json.loads(json.dumps(good))
    dangling["3"]["inputs"]["model"] = ["99", 0]
    texts: dict[str, str | bytes] = {
        "not json": "{",
        "binary": b"\xff\xfe\x00\x01",
        "empty": "",
        "null": "null",
        "list": "[1, 2]",
        "number": "42",
        "empty object": "{}",
        "deep": deep_json(50_000),
        "deep value": json.dumps(dict(good, x={"a": nested(900)})),
        "class_type not text": json.dumps({"1": {"class_type": 5}}),
        "inputs a list": json.dumps({"1": {"class_type": "KSampler", "inputs": [1]}}),
        "meta a list": json.dumps({"1": {"class_type": "KSampler", "inputs": {}, "_meta": []}}),
        "title a number": json.dumps({"1": {"class_type": "KSampler", "inputs": {}, "_meta": {"title": 5}}}),
        "ui nodes not objects": json.dumps({"nodes": [1, "x"], "links": []}),
        "ui ids not integers": json.dumps({"nodes": [{"id": "a", "type": 3}], "links": "x"}),
        "ui link of strings": json.dumps(
            {
                "nodes": [{"id": 1, "type": "KSampler", "inputs": [{"name": "model", "link": 7}]}],
                "links": [["7", "2", "x", 1, 0, "MODEL"]],
            }  # fmt: skip
        ),
        "ui dangling link": json.dumps(
            {
                "nodes": [{"id": 1, "type": "KSampler", "inputs": [{"name": "model", "link": 7}]}],
                "links": [[7, 2, 0, 1, 0, "MODEL"]],
            }  # fmt: skip
        ),
        "ui inputs not a list": json.dumps(
            {"nodes": [{"id": 1, "type": "KSampler", "inputs": 5}], "links": []}
        ),
        "ui widgets wrong": json.dumps(
            {"nodes": [{"id": 1, "type": "KSampler", "widgets_values": 5}], "links": []}
        ),
        "ui duplicate ids": json.dumps(
            {"nodes": [{"id": 1, "type": "Note"}, {"id": 1, "type": "Note"}], "links": []}
        ),
        "missing node link": json.dumps(dangling),
        "unknown class": json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}),
        "long chain": json.dumps(
            {str(i): {"class_type": "VAEDecode", "inputs": {"samples": [str(i + 1), 0]}} for i in range(3000)}
        ),
    }
    files = {}
    for name, text in texts.items():
        p = tmp / (name.replace(" ", "_") + ".json")
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        files[name] = p
    folder = tmp / "a_folder.json"
    folder.mkdir()
    files["a folder"] = folder
    files["missing"] = tmp / "missing.json"
    return files


BAD_ARGS = {
    "server bad ipv6": ["--server", "http://[::1"],
    "server ftp": ["--server", "ftp://x"],
    "server port text": ["--server", "http://127.0.0.1:port"],
    "server port too big": ["--server", "http://127.0.0.1:99999"],
    "server space": ["--server", "http://a b:1"],
    "server empty": ["--server", ""],
    "server query": ["--server", "http://127.0.0.1:1/?x=1"],
    "timeout nan": ["--timeout", "nan"],
    "timeout negative": ["--timeout", "-1"],
    "timeout inf": ["--timeout", "inf"],
    "timeout text": ["--timeout", "soon"],
    "set no value": ["--set", "Sampler.steps"],
    "set empty": ["--set", "="],
    "set nan": ["--set", "Sampler.cfg=nan"],
    "set huge float to int": ["--set", "Sampler.steps=1e400"],
    "set unknown node": ["--set", "Nope.steps=1"],
    "upload missing": ["--upload", "Sampler=/nonexistent.png"],
    "upload folder": ["--upload", "Sampler=/tmp"],
    "upload no equals": ["--upload", "Sampler"],
}
QUEUE_ARGS = {
    "seeds text": ["--seeds", "a:b"],
    "seeds empty": ["--seeds", ""],
    "seeds commas": ["--seeds", ",,"],
    "seeds reversed": ["--seeds", "5:3"],
    "seeds float": ["--seeds", "1e3"],
    "seeds negative": ["--seeds", "-5:3"],
    "seeds too big": ["--seeds", f"0:{2**70}"],
    "seeds step 0": ["--seeds", "1:2:0"],
}
GENERATE_ARGS = {
    "originals negative": ["--originals", "-1"],
    "batch zero": ["--batch", "0"],
    "portfolio too big": ["--originals", "1000000000"],
    "scenarios deep": ["--scenarios", "DEEP"],
    "scenarios not strings": ["--scenarios", "INTS"],
    "scenarios folder": ["--scenarios", "/tmp"],
    "prompt node missing": ["--prompt-node", "Nope"],
}


def test_hostile_corpus_queue_generate_validate(tmp_path: Path, capsys):
    files = _corpus_workflows(tmp_path)
    deep = tmp_path / "scen_deep.json"
    deep.write_text(deep_json(50_000))
    ints = tmp_path / "scen_ints.json"
    ints.write_text("[1, 2]")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(txt2img()))
    out_file = tmp_path / "out_is_a_file"
    out_file.write_text("x")
    seen: dict[str, int] = {}

    def check(label: str, argv: list, expected: set[int]) -> None:
        code, _, err = cli(argv, capsys)
        assert code in expected, f"{label}: exit {code}, expected {expected}: {err}"
        seen[label] = code

    dead = f"http://127.0.0.1:{free_port()}"
    with FakeComfy() as srv:
        gen = ["--character", "lisachar", "--originals", "1", "--modified", "0"]
        for name, wf in files.items():
            for command, extra in (("queue", []), ("generate", gen)):
                out = tmp_path / f"o_{command}_{name.replace(' ', '_')}"
                check(f"{command} {name}", [command, wf, "--server", srv.url, "--out", out, *extra], {2})
                assert not list(out.glob("*.png")) if out.is_dir() else True
            check(f"validate {name}", ["validate-workflow", wf], {2})
        for name, args in {**BAD_ARGS, **QUEUE_ARGS}.items():
            argv = ["queue", good, "--server", srv.url, "--out", tmp_path / "o_args", *args]
            check(f"queue {name}", argv, {2})
        for name, args in {**BAD_ARGS, **GENERATE_ARGS}.items():
            args = [str(deep) if a == "DEEP" else str(ints) if a == "INTS" else a for a in args]
            argv = ["generate", good, "--server", srv.url, "--out", tmp_path / "g_args", *gen, *args]
            check(f"generate {name}", argv, {2})
        listy = txt2img()
        listy["5"]["inputs"]["meta"] = [1, 2]  # a list-valued input: --set parses its value as JSON
        listy_wf = tmp_path / "listy.json"
        listy_wf.write_text(json.dumps(listy))
        for name, value in {"deep": "[" * 100_000, "too deep": deep_json(200)}.items():
            argv = [
                "queue",
                listy_wf,
                "--server",
                srv.url,
                "--out",
                tmp_path / "o_set",
                "--set",
                f"Latent.meta={value}",
            ]
            check(f"queue set {name} JSON", argv, {2})
        for command, extra in (("queue", []), ("generate", gen)):
            check(
                f"{command} out is a file",
                [command, good, "--server", srv.url, "--out", out_file, *extra],
                {2},
            )
            check(
                f"{command} out under a file",
                [command, good, "--server", srv.url, "--out", out_file / "sub", *extra],
                {2},
            )
    # Hostile servers: every malformed reply is a failed job (1), never 0, never a traceback.
    server_cases = {
        "prompt id a number": {"prompt": lambda b: dict(b, prompt_id=5) if "prompt_id" in b else b},
        "prompt reply a list": {"prompt": lambda b: [b]},
        "prompt reply not json": {"prompt": lambda b: b"\x00\xff"},
        "node_errors a list": {"prompt": lambda b: dict(b, node_errors=[1])},
        "object_info a list": {"object_info": lambda b: [1]},
        **{f"history {k}": {"history": v} for k, v in HISTORY_MANGLES.items()},
        "view empty": {"view": lambda b: b""},
    }
    ui = REPO / "workflows" / "10_export_2pass.json"
    for name, mangle in server_cases.items():
        with FakeComfy(mangle=mangle) as srv:
            wf = ui if name.startswith("object_info") else good
            check(
                f"server {name}",
                ["queue", wf, "--server", srv.url, "--out", tmp_path / "s", "--timeout", "20"],
                {1, 2},
            )
    # Object-info files of the wrong shape for validate-workflow.
    for name, text in {
        "deep": deep_json(50_000),
        "list": "[1]",
        "not json": "{",
        "garbage schemas": '{"KSampler": 5, "X": {"input": []}}',
    }.items():
        oi = tmp_path / f"oi_{name.replace(' ', '_')}.json"
        oi.write_text(text)
        check(f"validate object-info {name}", ["validate-workflow", good, "--object-info", oi], {2})
    check("validate server down", ["validate-workflow", good, "--server", dead], {1})
    print(f"hostile corpus: {len(seen)} cases, exit codes {sorted(set(seen.values()))}")
    assert len(seen) > 120
    shutil.rmtree(tmp_path / "s", ignore_errors=True)
