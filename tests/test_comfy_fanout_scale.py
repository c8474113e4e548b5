"""``queue`` at scale (issue 16): memory flat in the number of jobs, a bounded number in flight per server, and a
run killed with SIGKILL that ``--resume`` completes with no job lost and none duplicated.

The fake servers run in their own processes here (``python tests/fake_comfy_server.py``), so what the tests
measure in this process is the client alone. The 10,000-job, three-server version of the kill test is
``benchmarks/fanout.py --kill-resume 10000``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_comfy_server import FakeComfy, txt2img  # noqa: E402
from identitylock.core import comfy as cc  # noqa: E402
from identitylock.core.cli import main  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = "queue_results.jsonl"


def cli(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    return code, out, err


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    """A fake ComfyUI in its own process; (process, url)."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fake_comfy_server.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # a killed client makes it log connection resets
        text=True,
    )
    url = proc.stdout.readline().strip()  # type: ignore[union-attr]
    assert url.startswith("http://127.0.0.1:"), url
    return proc, url


@pytest.fixture()
def server_process():
    proc, url = start_server()
    yield url
    proc.kill()
    proc.wait()


@pytest.fixture()
def workflow(tmp_path: Path) -> Path:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(txt2img()))
    return path


def subprocess_cli(command: str, workflow: Path, out: Path, servers, *extra: str) -> tuple[list[str], dict]:
    """(argv, env) of ``identitylock COMMAND`` in its own process over ``servers``, importing this checkout."""
    argv = [sys.executable, "-m", "identitylock.core.cli", command, str(workflow), "--out", str(out)]
    argv += [a for _, url in servers for a in ("--server", url)] + list(extra)
    return argv, dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def run_and_kill(argv: list[str], env: dict, out: Path, images: int) -> None:
    """Start the client, SIGKILL it once ``out`` holds ``images`` images (or after 120 s)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 120
    while len(list(out.glob("*.png"))) < images and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def done_records(out: Path) -> list[dict]:
    return [r for r in cc.read_records(out / RESULTS) if r["status"] == "done"]


def test_queue_memory_is_flat_in_job_count(workflow: Path, tmp_path: Path, capsys, server_process):
    """The defect: every finished job's result (its prompt included) stayed in memory to the end of the run,
    and the results list was rewritten whole: memory grew with the job count without bound (a 10^8-seed run
    could never finish). Traced peak of the client for 60 vs 900 jobs: the difference must stay small."""
    peaks = {}
    for n in (60, 900):
        tracemalloc.start()
        try:
            code, _, err = cli(
                [
                    "queue",
                    workflow,
                    "--server",
                    server_process,
                    "--out",
                    tmp_path / f"o{n}",
                    "--seeds",
                    f"0:{n - 1}",
                ],
                capsys,
            )
            _, peaks[n] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert code == 0, err
        assert len(list((tmp_path / f"o{n}").glob("*.png"))) == n
    growth = peaks[900] - peaks[60]
    print(f"client traced peak: 60 jobs {peaks[60] / 1e6:.2f} MB, 900 jobs {peaks[900] / 1e6:.2f} MB")
    assert growth < 1.0e6, f"memory grew by {growth / 1e6:.1f} MB for 840 more jobs"


_LAUNCH_AND_REPORT_PEAK = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('CHILD_PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def test_a_hundred_million_seed_range_runs_in_bounded_rss(workflow: Path, tmp_path: Path):
    """The issue's finding (materialising every job of ``--seeds 0:99999999`` up front: 5 GB after 60 s) as a
    whole-process bound: the client's peak RSS (the kernel's high-water mark, from wait4) stays under 150 MB
    while it runs 200 jobs of a 10^8-seed range, until the server goes away and the rest is reported not run."""
    proc, url = start_server("--die-after", "200")
    try:
        argv, env = subprocess_cli("queue", workflow, tmp_path / "o", [(proc, url)], "--seeds", "0:99999999")
        # The client is started by a small launcher process: a process forked from pytest itself would carry the
        # test process's own peak (1 GB once torch is loaded) in its ru_maxrss, which survives exec.
        launcher = [sys.executable, "-c", _LAUNCH_AND_REPORT_PEAK, *argv]
        client = subprocess.run(
            launcher, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300
        )
        err = client.stderr.decode()
    finally:
        proc.kill()
        proc.wait()
    peak_mb = float(err.rsplit("CHILD_PEAK_KB", 1)[1].split()[0]) / 1024
    print(f"--seeds 0:99999999, 200 jobs: client peak RSS {peak_mb:.1f} MB")
    assert client.returncode == 1 and "200/100000000 runs finished" in err, err[-1000:]
    assert "job(s) were not run" in err
    assert peak_mb < 150


def test_jobs_in_flight_per_server_are_bounded(workflow: Path, tmp_path: Path, capsys):
    """``--per-server N``: never more than N prompts of this client queued or running on one server."""
    with FakeComfy(node_delay=0.01) as a, FakeComfy(node_delay=0.01) as b:
        code, _, err = cli(
            ["queue", workflow, "--server", a.url, "--server", b.url, "--out", tmp_path / "o"]
            + ["--seeds", "0:29", "--per-server", "3"],
            capsys,
        )
        assert code == 0, err
        print(f"max in flight: {a.max_pending}, {b.max_pending}")
        assert 2 <= a.max_pending <= 3 and 2 <= b.max_pending <= 3
        assert len(a.prompts) + len(b.prompts) == 30
    with FakeComfy(node_delay=0.01) as c:
        code, _, err = cli(
            [
                "queue",
                workflow,
                "--server",
                c.url,
                "--out",
                tmp_path / "o1",
                "--seeds",
                "0:9",
                "--per-server",
                "1",
            ],
            capsys,
        )
        assert code == 0 and c.max_pending == 1, err


def test_kill_9_then_resume_loses_and_duplicates_nothing(workflow: Path, tmp_path: Path):
    """A client killed with SIGKILL mid-run, then ``--resume``: every seed done exactly once, one image each."""
    n = 400
    out = tmp_path / "o"
    servers = [start_server() for _ in range(3)]
    base, env = subprocess_cli("queue", workflow, out, servers, "--seeds", f"0:{n - 1}")
    try:
        run_and_kill(base, env, out, n // 3)
        before = len(done_records(out))
        assert 0 < before < n, f"the kill came too late to test anything: {before} of {n} done"
        resumed = subprocess.run(base + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    finally:
        for proc, _ in servers:
            proc.kill()
            proc.wait()
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming: {before} of {n} jobs already done" in resumed.stderr
    counts = Counter(r["seed"] for r in done_records(out))
    print(f"killed after {before} of {n} done; after --resume: {len(counts)} seeds done")
    assert sorted(counts) == list(range(n)) and set(counts.values()) == {1}, "lost or duplicated jobs"
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"wf_seed_{s}.png" for s in range(n))
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no staging folder left"


def test_resume_after_a_kill_between_moving_files_and_recording_them(workflow: Path, tmp_path: Path, capsys):
    """The narrowest window: a job's image moved in, its ``done`` record not yet written, and the last line
    torn. ``--resume`` runs that job again into the same name (its own half-placed file, named by its
    ``placing`` record) instead of adding ``wf_seed_3_2.png``; other files are never replaced."""
    out = tmp_path / "o"
    with FakeComfy() as srv:
        code, _, err = cli(["queue", workflow, "--server", srv.url, "--out", out, "--seeds", "0:4"], capsys)
        assert code == 0, err
        lines = (out / RESULTS).read_text().splitlines(keepends=True)
        kept = [ln for ln in lines if not ('"done"' in ln and '"seed": 3,' in ln)]
        assert len(kept) == len(lines) - 1
        (out / RESULTS).write_text("".join(kept) + '{"status": "done", "job": "wf_se')  # torn by the kill
        (out / "wf_seed_3.png").write_bytes(b"half")  # what the killed run had moved in
        code, _, err = cli(
            ["queue", workflow, "--server", srv.url, "--out", out, "--seeds", "0:4", "--resume"], capsys
        )
        assert code == 0, err
        assert "resuming: 4 of 5 jobs already done, 1 to go" in err
        assert [p["3"]["inputs"]["seed"] for p in srv.prompts[5:]] == [3]
    assert sorted(p.name for p in out.glob("*.png")) == [f"wf_seed_{s}.png" for s in range(5)]
    assert (out / "wf_seed_3.png").read_bytes()[:4] == b"\x89PNG"
    assert Counter(r["seed"] for r in done_records(out)) == Counter(range(5))


def test_resume_is_refused_for_another_workflow_and_never_replaces_other_files(
    workflow: Path, tmp_path: Path, capsys
):
    out = tmp_path / "o"
    with FakeComfy() as srv:
        code, _, err = cli(["queue", workflow, "--server", srv.url, "--out", out, "--seeds", "0:1"], capsys)
        assert code == 0, err
        code, _, err = cli(
            ["queue", workflow, "--server", srv.url, "--out", out, "--seeds", "0:3", "--resume"]
            + ["--set", "Sampler.steps=3"],
            capsys,
        )
        assert code == 2 and "--resume" in err and "another workflow" in err, err
        assert len(srv.prompts) == 2
        # A file the results never named is not ours: a resumed job does not replace it.
        (out / "wf_seed_2.png").write_bytes(b"mine")
        code, _, err = cli(
            ["queue", workflow, "--server", srv.url, "--out", out, "--seeds", "0:3", "--resume"], capsys
        )
        assert code == 0, err
    assert (out / "wf_seed_2.png").read_bytes() == b"mine"
    assert sorted(p.name for p in out.glob("*.png")) == [
        "wf_seed_0.png",
        "wf_seed_1.png",
        "wf_seed_2.png",
        "wf_seed_2_2.png",
        "wf_seed_3.png",
    ]


# ------------------------------------------------------------------------------------------------------------------
# generate: a lazy plan, a journal instead of rewriting the catalog after every job, kill -9 + resume.


def test_generate_plan_is_lazy():
    """The defect: ``plan_jobs`` made every job up front, each with its own copy of the workflow: 97,000 images
    on a workflow without a batch input took 556 MB before the first job was queued."""
    from identitylock.core import portfolio_gen as pg

    template = txt2img()
    del template["5"]["inputs"]["batch_size"]  # one job per image
    scenarios = pg.load_scenarios(None)
    dist = pg.distribution(1000, 96000, 5, len(scenarios))
    tracemalloc.start()
    try:
        plan, _ = pg.plan_jobs(
            template, character="x", name="x", scenarios=scenarios, dist=dist, base_seed=1, workflow_name="wf"
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"plan of {len(plan)} jobs ({dist.total_images} images): traced peak {peak / 1e6:.1f} MB")
    assert len(plan) == dist.total_images == 97000
    assert peak < 40e6
    first, second = plan[0], plan[1]
    assert (first.name, second.name) == ("char_x_seed_1_original_01", "char_x_seed_1_original_02")
    assert [j.prompt["3"]["inputs"]["seed"] for j in (first, second)] == [1, 2]
    assert [i["filename"] for i in plan[1].meta["images"]] == plan.image_names(1)
    last = plan[-1]
    assert last.meta["images"][0]["image_type"] == "scenario" and last.prompt["6"]["inputs"][
        "text"
    ].startswith("x, ")


GEN = ["--character", "lisachar", "--batch", "1", "--modified", "0", "--name", "lisa"]


def test_generate_writes_the_catalog_now_and_then_not_after_every_job(
    workflow: Path, tmp_path: Path, capsys, monkeypatch
):
    """Rewriting the whole catalog after each job is quadratic (100,000 rows x 20,000 jobs); finished jobs go to
    an append-only journal, the catalog is written at the first job, every CATALOG_EVERY s and at the end."""
    from identitylock.core import fileio

    writes: list[str] = []
    real = fileio.write_json_atomic
    monkeypatch.setattr(
        fileio,
        "write_json_atomic",
        lambda path, *a, **k: (writes.append(Path(path).name), real(path, *a, **k))[1],
    )
    out = tmp_path / "g"
    with FakeComfy() as srv:
        code, _, err = cli(
            ["generate", workflow, "--server", srv.url, "--out", out, "--originals", "20", *GEN], capsys
        )
    assert code == 0, err
    catalog = json.loads((out / "master_image_catalog.json").read_text())
    assert len(catalog["catalog"]) == 20 and len(list(out.glob("*.png"))) == 20
    assert writes.count("master_image_catalog.json") == 2, writes
    assert not (out / "master_image_catalog.journal.jsonl").exists(), (
        "the journal goes once the catalog has it all"
    )


def test_generate_resume_after_a_kill_between_moving_files_and_the_catalog(
    workflow: Path, tmp_path: Path, capsys
):
    """A job's image moved in, the run killed before any catalog row: the re-run replaces that half-placed
    file (named by the journal's ``placing`` record) instead of adding ``..._01_2.png``."""
    out = tmp_path / "g"
    out.mkdir()
    (out / "char_lisa_seed_966984_original_01.png").write_bytes(b"half")
    (out / "master_image_catalog.journal.jsonl").write_text(
        json.dumps(
            {
                "status": "placing",
                "job": "char_lisa_seed_966984_original",
                "files": ["char_lisa_seed_966984_original_01.png"],
            }
        )
        + '\n{"status": "do'
    )
    with FakeComfy() as srv:
        code, _, err = cli(
            ["generate", workflow, "--server", srv.url, "--out", out, "--originals", "3", *GEN], capsys
        )
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.png")) == [
        f"char_lisa_seed_{s}_original_01.png" for s in (966983, 966984, 966985)
    ]
    assert (out / "char_lisa_seed_966984_original_01.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((out / "master_image_catalog.json").read_text())["catalog"]
    assert sorted(r["filename"] for r in rows) == sorted(p.name for p in out.glob("*.png"))


def test_generate_kill_9_then_resume(workflow: Path, tmp_path: Path):
    """``generate`` killed with SIGKILL mid-run over three servers, then run again: every planned image once."""
    n = 150
    out = tmp_path / "g"
    servers = [start_server() for _ in range(3)]
    base, env = subprocess_cli("generate", workflow, out, servers, "--originals", str(n), *GEN)
    try:
        run_and_kill(base, env, out, n // 3)
        assert 0 < len(list(out.glob("*.png"))) < n
        resumed = subprocess.run(base, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for proc, _ in servers:
            proc.kill()
            proc.wait()
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming:" in resumed.stderr
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted(f"char_lisa_seed_{966983 + g}_original_01.png" for g in range(n))
    rows = json.loads((out / "master_image_catalog.json").read_text())["catalog"]
    assert sorted(r["filename"] for r in rows) == names
