"""``identitylock queue`` at scale (issue 16): client time and peak RSS against the job count, the startup of a
10^8-seed range, and a run killed with SIGKILL then completed with ``--resume`` — over three loopback servers
that speak ComfyUI's protocol (``tests/fake_comfy_server.py``, each in its own process, tiny 16 px images).

    PYTHONPATH=/path/to/pp .venv/bin/python benchmarks/fanout.py --sizes 1000 10000
    PYTHONPATH=/path/to/pp .venv/bin/python benchmarks/fanout.py --huge 60
    PYTHONPATH=/path/to/pp .venv/bin/python benchmarks/fanout.py --kill-resume 10000
    PYTHONPATH=/path/to/pp .venv/bin/python benchmarks/fanout.py --generate 1000 10000

(``PYTHONPATH`` must make ``import identitylock`` find this checkout.) The client is a separate process;
its peak RSS comes from ``wait4`` (the kernel's high-water mark of that process alone), its RSS over time from
``/proc/PID/status``. Jobs finished are counted from the results file ``queue_results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fake_comfy_server import txt2img  # noqa: E402

RESULTS = "queue_results.jsonl"


def start_servers(n: int) -> list[tuple[subprocess.Popen, str]]:
    servers = []
    for _ in range(n):
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "fake_comfy_server.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        servers.append((proc, proc.stdout.readline().strip()))  # type: ignore[union-attr]
    return servers


def stop_servers(servers) -> None:
    for proc, _ in servers:
        proc.kill()
        proc.wait()


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def done_seeds(out: Path) -> Counter:
    counts: Counter = Counter()
    path = out / RESULTS
    if path.exists():
        for line in open(path, "rb"):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and r.get("status") == "done":
                counts[r.get("seed")] += 1
    return counts


def client(workflow: Path, out: Path, servers, seeds: str, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "identitylock.core.cli", "queue", str(workflow), "--out", str(out)]
    argv += [a for _, url in servers for a in ("--server", url)] + ["--seeds", seeds, *extra]
    log = open(out.parent / f"{out.name}.stderr.txt", "ab")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)


def wait_peak(proc: subprocess.Popen) -> tuple[int, float]:
    """(exit code, peak RSS in MB) of a client: the kernel's high-water mark for that process."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def sizes(workflow: Path, tmp: Path, counts: list[int], per_server: int) -> None:
    print(f"{'jobs':>7} {'seconds':>8} {'jobs/s':>7} {'peak RSS MB':>12}  RSS at 25/50/75 % (MB)")
    for n in counts:
        servers = start_servers(3)
        out = tmp / f"sizes_{n}"
        start = time.monotonic()
        proc = client(workflow, out, servers, f"0:{n - 1}", "--per-server", str(per_server))
        marks, next_mark = [], 1
        while not _exited(proc):
            done = sum(1 for e in os.scandir(out) if e.name.endswith(".png")) if out.exists() else 0
            if next_mark <= 3 and done >= n * next_mark / 4:
                marks.append(rss_mb(proc.pid))
                next_mark += 1
            time.sleep(0.2)
        code, peak = wait_peak(proc)
        elapsed = time.monotonic() - start
        stop_servers(servers)
        counts_ = done_seeds(out)
        ok = code == 0 and sorted(counts_) == list(range(n)) and set(counts_.values()) == {1}
        print(
            f"{n:>7} {elapsed:>8.1f} {n / elapsed:>7.0f} {peak:>12.1f}  "
            + " / ".join(f"{m:.1f}" for m in marks)
            + ("" if ok else f"  FAILED: exit {code}, {len(counts_)} seeds done")
        )


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the client has exited, without reaping it (wait4 must still see it for its peak RSS)."""
    try:
        with open(f"/proc/{proc.pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def huge(workflow: Path, tmp: Path, seconds: float, per_server: int) -> None:
    """``--seeds 0:99999999`` (10^8 jobs): time to the first finished job, RSS over time, then SIGKILL."""
    servers = start_servers(3)
    out = tmp / "huge"
    start = time.monotonic()
    proc = client(workflow, out, servers, "0:99999999", "--per-server", str(per_server))
    first = None
    while first is None and time.monotonic() - start < 60:
        if (out / RESULTS).exists() and done_seeds(out):
            first = time.monotonic() - start
        time.sleep(0.05)
    print(f"--seeds 0:99999999: first job finished after {first:.2f} s, client RSS {rss_mb(proc.pid):.1f} MB")
    print(f"{'seconds':>8} {'jobs done':>10} {'RSS MB':>7}")
    while time.monotonic() - start < seconds:
        time.sleep(min(10.0, seconds / 6))
        n = sum(1 for e in os.scandir(out) if e.name.endswith(".png"))
        print(f"{time.monotonic() - start:>8.0f} {n:>10} {rss_mb(proc.pid):>7.1f}")
    proc.send_signal(signal.SIGKILL)
    _, peak = wait_peak(proc)
    stop_servers(servers)
    print(f"peak RSS {peak:.1f} MB (killed with SIGKILL after {seconds:g} s)")


def kill_resume(workflow: Path, tmp: Path, n: int, at: float, per_server: int) -> int:
    """Run n jobs, SIGKILL the client when a fraction ``at`` is done, resume; check none lost/duplicated."""
    servers = start_servers(3)
    out = tmp / f"kill_{n}"
    try:
        start = time.monotonic()
        proc = client(workflow, out, servers, f"0:{n - 1}", "--per-server", str(per_server))
        while not _exited(proc):
            if out.exists() and sum(1 for e in os.scandir(out) if e.name.endswith(".png")) >= n * at:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        _, peak1 = wait_peak(proc)
        before = len(done_seeds(out))
        print(f"killed with SIGKILL after {time.monotonic() - start:.1f} s: {before} of {n} recorded done")
        start = time.monotonic()
        proc = client(workflow, out, servers, f"0:{n - 1}", "--per-server", str(per_server), "--resume")
        code, peak2 = wait_peak(proc)
        print(f"--resume: exit {code} after {time.monotonic() - start:.1f} s")
    finally:
        stop_servers(servers)
    counts = done_seeds(out)
    lost = n - len([s for s in range(n) if counts[s]])
    dup = sum(c - 1 for c in counts.values() if c > 1)
    pngs = sorted(e.name for e in os.scandir(out) if e.name.endswith(".png"))
    extra = len(pngs) - n
    right = pngs == sorted(f"wf_seed_{s}.png" for s in range(n))
    print(
        f"{n} jobs: {len(counts)} seeds done, lost {lost}, duplicated {dup}; {len(pngs)} images "
        f"({'exactly wf_seed_0..' + str(n - 1) if right else f'{extra:+d} vs expected'}); "
        f"peak RSS {peak1:.1f} MB (killed run), {peak2:.1f} MB (resumed run)"
    )
    return 0 if code == 0 and not lost and not dup and right else 1


def generate(workflow: Path, tmp: Path, counts: list[int], per_server: int) -> None:
    """``generate`` of N one-image jobs (``--originals N --batch 1 --modified 0``): time and peak RSS."""
    print(f"{'images':>7} {'seconds':>8} {'peak RSS MB':>12}  catalog rows")
    for n in counts:
        servers = start_servers(3)
        out = tmp / f"gen_{n}"
        argv = [sys.executable, "-m", "identitylock.core.cli", "generate", str(workflow), "--out", str(out)]
        argv += [a for _, url in servers for a in ("--server", url)]
        argv += ["--character", "x", "--originals", str(n), "--batch", "1", "--modified", "0"]
        argv += ["--per-server", str(per_server)]
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(tmp / f"gen_{n}.txt", "wb"))
        code, peak = wait_peak(proc)
        elapsed = time.monotonic() - start
        stop_servers(servers)
        rows = len(json.loads((out / "master_image_catalog.json").read_text())["catalog"])
        print(f"{n:>7} {elapsed:>8.1f} {peak:>12.1f}  {rows}" + ("" if code == 0 else f"  exit {code}"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[], help="job counts to time")
    ap.add_argument("--huge", type=float, default=0, help="run --seeds 0:99999999 this many seconds")
    ap.add_argument("--kill-resume", type=int, default=0, help="jobs for the SIGKILL + --resume check")
    ap.add_argument("--kill-at", type=float, default=0.4, help="fraction done when the client is killed")
    ap.add_argument("--generate", type=int, nargs="*", default=[], help="image counts for `generate`")
    ap.add_argument("--per-server", type=int, default=2)
    args = ap.parse_args()
    code = 0
    with tempfile.TemporaryDirectory(prefix="fanout-bench-") as d:
        tmp = Path(d)
        workflow = tmp / "wf.json"
        workflow.write_text(json.dumps(txt2img()))
        if args.sizes:
            sizes(workflow, tmp, args.sizes, args.per_server)
        if args.generate:
            generate(workflow, tmp, args.generate, args.per_server)
        if args.huge:
            huge(workflow, tmp, args.huge, args.per_server)
        if args.kill_resume:
            code = kill_resume(workflow, tmp, args.kill_resume, args.kill_at, args.per_server)
    return code


if __name__ == "__main__":
    sys.exit(main())
