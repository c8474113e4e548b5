"""IdentityMetrics: real dlib on the shared photos — statistics, outliers, copycat pairing, report safety."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from identitylock.core.faces import Face, FaceAnalysis, analyze, get_engine
from identitylock.core.faces.pose import Pose
from identitylock.core.identity import IdentityReference
from identitylock.core.images import load_image
from identitylock.core.metrics import AnalyzedImage, band_of, build_metrics
from identitylock.core.metrics.report import PANELS, write_report
from identitylock.core.metrics.stats import bootstrap_ci, holm, wilson_ci

HOSTILE = "<img src=x onerror=alert(1)>.png"
LONDON = [f"london{p}_{k}.jpg" for p in ("001", "004", "005", "006", "025", "042") for k in (1, 2)]


def _augment(img: np.ndarray) -> dict[str, np.ndarray]:
    """Crops, brightness and scale changes of one photo: the 'same person' candidates."""
    import cv2

    h, w = img.shape[:2]
    return {
        "crop": img[h // 10 : h - h // 20, w // 12 : w - w // 12],
        "dark": np.clip(img.astype(np.float32) * 0.75, 0, 255).astype(np.uint8),
        "bright": np.clip(img.astype(np.float32) * 1.2 + 10, 0, 255).astype(np.uint8),
        "small": cv2.resize(img, (w * 2 // 3, h * 2 // 3), interpolation=cv2.INTER_AREA),
        "flip": np.ascontiguousarray(img[:, ::-1]),
    }


@pytest.fixture(scope="module")
def analyzed(faces_dir: Path) -> dict[str, AnalyzedImage]:
    """Every image used below, analyzed once with the real dlib backend."""
    eng = get_engine("dlib")
    out: dict[str, AnalyzedImage] = {}

    def add(name: str, img: np.ndarray, path: str | None = None) -> None:
        out[name] = AnalyzedImage(name, analyze(img, eng), path=path, image=None if path else img)

    for n in ["lisa_1.jpg", "lisa_2.jpg", "lisa_3.jpg", "lisa_4.jpg", *LONDON]:
        add(n, load_image(faces_dir / n), str(faces_dir / n))
    for k, img in _augment(load_image(faces_dir / "lisa_4.jpg")).items():
        add(f"lisa_4_{k}", img)
    for n in ("lisa_1.jpg", "london004_1.jpg"):
        add(f"flip_{n}", np.ascontiguousarray(load_image(faces_dir / n)[:, ::-1]))
    return out


def test_same_person_group_beats_other_person_group_significantly(analyzed):
    ref = [analyzed[n] for n in ("lisa_1.jpg", "lisa_2.jpg", "lisa_3.jpg")]
    same = [analyzed["lisa_4.jpg"]] + [analyzed[k] for k in analyzed if k.startswith("lisa_4_")]
    other = [analyzed[n] for n in LONDON]
    m = build_metrics(ref, {"same": same, "other": other})
    gs, go = m.groups["same"], m.groups["other"]
    assert gs.n_face == 6 and go.n_face == 12
    assert gs.median > go.median
    # the intervals separate, and each contains its own median
    assert gs.median_ci[0] <= gs.median <= gs.median_ci[1]
    assert go.median_ci[0] <= go.median <= go.median_ci[1]
    assert gs.median_ci[0] > go.median_ci[1]
    assert gs.lock_rate > go.lock_rate
    (c,) = m.comparisons
    assert c.significant and c.p_holm < 0.01
    assert (c.a, c.b) == ("same", "other") and c.cliffs_delta > 0.9 and c.effect == "large"
    assert c.median_diff_ci[0] > 0
    assert c.verdict.startswith("same scores higher than other")
    # different people: every London face is below the lock; the same person's are locked
    assert all(not r.locked for r in m.rows if r.group == "other")
    assert all(r.locked for r in m.rows if r.group == "same")


def test_no_difference_between_two_halves_of_one_group(analyzed):
    ref = [analyzed[n] for n in ("lisa_1.jpg", "lisa_2.jpg", "lisa_3.jpg")]
    m = build_metrics(
        ref, {"a": [analyzed[n] for n in LONDON[::2]], "b": [analyzed[n] for n in LONDON[1::2]]}
    )
    (c,) = m.comparisons
    assert not c.significant, c.verdict


def test_leave_one_out_flags_planted_other_person(analyzed):
    ref = [analyzed[n] for n in ("lisa_1.jpg", "lisa_2.jpg", "london001_1.jpg", "lisa_3.jpg", "lisa_4.jpg")]
    m = build_metrics(ref, {"gen": [analyzed["lisa_4_crop"]]})
    refs = [r for r in m.rows if r.kind == "reference"]
    assert [r.name for r in refs if r.outlier] == ["london001_1.jpg"]
    assert min(refs, key=lambda r: r.similarity).name == "london001_1.jpg"
    assert any("london001_1.jpg" in w for w in m.warnings)
    assert m.summary_dict()["reference_outliers"] == ["london001_1.jpg"]


def test_copycat_flipped_reference_points_back_to_it(analyzed):
    ref = [
        analyzed[n] for n in ("lisa_1.jpg", "lisa_2.jpg", "lisa_3.jpg", "london004_1.jpg", "london005_1.jpg")
    ]
    gen = [analyzed["flip_lisa_1.jpg"], analyzed["flip_london004_1.jpg"], analyzed["lisa_4.jpg"]]
    m = build_metrics(ref, {"gen": gen})
    by = {r.name: r for r in m.rows if r.kind == "candidate"}
    assert by["flip_lisa_1.jpg"].nearest_ref == "lisa_1.jpg"
    assert by["flip_london004_1.jpg"].nearest_ref == "london004_1.jpg"
    # a mirrored copy is a near-duplicate: danger band on the dlib scale
    assert by["flip_lisa_1.jpg"].band == "danger" and by["flip_lisa_1.jpg"].nearest_sim > 0.99
    holes = {h.reference: h.count for h in m.black_holes}
    assert sum(holes.values()) == 3 and set(holes) == {r.name for r in m.rows if r.kind == "reference"}
    assert m.black_holes[0].count >= m.black_holes[-1].count


def test_bands_and_small_statistics():
    assert [band_of(x, "dlib") for x in (0.85, 0.93, 0.98, 0.995, None)] == [
        "low",
        "ok",
        "watch",
        "danger",
        "failed",
    ]
    assert [band_of(x, "insightface") for x in (0.3, 0.6, 0.8, 0.9)] == ["low", "ok", "watch", "danger"]
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    lo, hi = wilson_ci(10, 10)
    assert hi == pytest.approx(1.0) and 0.6 < lo < 0.75
    v = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert bootstrap_ci(v) == bootstrap_ci(v)  # seeded
    assert bootstrap_ci(v[:1]) is None


def _fake(name: str, vec: np.ndarray, yaw: float = 0.0, box: float = 200.0) -> AnalyzedImage:
    face = Face(
        bbox=np.array([100, 100, 100 + box, 100 + box], dtype=float),
        det_score=0.9,
        detector="test",
        keypoints={"eye_fl": (150.0, 170.0), "eye_fr": (250.0, 170.0), "nose": (200.0, 230.0)},
        pose=Pose(yaw=yaw, pitch=0.0, roll=0.0, confidence=0.7, method="test"),
        embedding=(vec / np.linalg.norm(vec)).astype(np.float32),
    )
    return AnalyzedImage(name, FaceAnalysis([face], (512, 512), "dlib", "m", ("direct",), "direct"))


def test_overtraining_warning_needs_high_similarity_and_no_variance():
    rng = np.random.default_rng(1)
    base = rng.normal(size=128)
    refs = [_fake(f"r{i}", base + rng.normal(scale=0.25, size=128), yaw=i * 7 - 10) for i in range(4)]
    frozen = [_fake(f"f{i}", base + rng.normal(scale=0.01, size=128)) for i in range(6)]
    varied = [
        _fake(f"v{i}", base + rng.normal(scale=0.6, size=128), yaw=i * 9 - 20, box=120 + 30 * i)
        for i in range(6)
    ]
    m = build_metrics(refs, {"frozen": frozen, "varied": varied}, tsne=False)
    assert m.groups["frozen"].overtraining and not m.groups["varied"].overtraining
    assert any("overtraining" in w for w in m.warnings)
    assert m.groups["varied"].flexibility_vs_reference > m.groups["frozen"].flexibility_vs_reference


def test_backend_mismatch_is_an_error(analyzed):
    from identitylock.core.errors import BackendMismatchError

    ref = IdentityReference(np.ones((2, 512), np.float32), "insightface", "buffalo_l", ["a", "b"])
    with pytest.raises(BackendMismatchError):
        build_metrics(ref, {"gen": [analyzed["lisa_4.jpg"]]})


def test_report_has_every_panel_escapes_names_and_lists_failures(analyzed, tmp_path):
    ref = [analyzed[n] for n in ("lisa_1.jpg", "lisa_2.jpg", "lisa_3.jpg")]
    hostile = AnalyzedImage(HOSTILE, analyzed["lisa_4.jpg"].analysis, path=analyzed["lisa_4.jpg"].path)
    unreadable = AnalyzedImage("broken.png", None, error="not a readable image")
    group = '<script>alert("g")</script>'
    m = build_metrics(ref, {group: [hostile, unreadable], "london": [analyzed[n] for n in LONDON[:4]]})
    paths = write_report(m, tmp_path)
    text = paths["html"].read_text(encoding="utf-8")
    for pid, title in PANELS:
        assert f'id="p-{pid}"' in text and title in text
    assert "Copycat report" in text and "Black-hole ranking" in text
    assert HOSTILE not in text and "<script>alert(" not in text
    assert "&lt;script&gt;alert(&quot;g&quot;)&lt;/script&gt;" in text  # server-rendered tables
    assert "\\u003cimg src=x onerror=alert(1)\\u003e.png" in text  # data block
    # every script tag carries the nonce that the CSP allows
    nonce = re.search(r"nonce-([A-Za-z0-9_-]+)", text).group(1)
    tags = re.findall(r"<script(?![^>]*application/json)[^>]*>", text)
    assert tags and all(f'nonce="{nonce}"' in t for t in tags)
    assert "cdn." not in text.split("<script nonce")[0]  # no external resources in the page head/body
    rows = list(csv.DictReader(open(paths["csv"], encoding="utf-8")))
    assert {r["name"]: r["status"] for r in rows}["broken.png"] == "error"
    assert any(r["name"] == HOSTILE and r["status"] == "ok" for r in rows)
    summary = json.loads(paths["json"].read_text())
    assert summary["counts"]["errors"] == 1 and group in summary["groups"]


# -- end to end: CLI on files, then the report in a real headless Chromium ------------------------------------
@pytest.fixture(scope="module")
def cli_report(faces_dir: Path, tmp_path_factory) -> tuple[int, str, Path]:
    from identitylock.core.cli import main

    root = tmp_path_factory.mktemp("metrics_cli")
    (root / "ref").mkdir()
    for n in ("lisa_1.jpg", "lisa_2.jpg", "lisa_3.jpg"):
        shutil.copy(faces_dir / n, root / "ref" / n)
    (root / "cands" / "lisa_lora").mkdir(parents=True)
    (root / "cands" / "other").mkdir(parents=True)
    shutil.copy(faces_dir / "lisa_4.jpg", root / "cands" / "lisa_lora" / HOSTILE)
    shutil.copy(faces_dir / "noface_2.jpg", root / "cands" / "lisa_lora" / "noface.jpg")
    for n in ("london001_1.jpg", "london004_1.jpg"):
        shutil.copy(faces_dir / n, root / "cands" / "other" / n)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(
            [
                "metrics",
                "--reference",
                str(root / "ref"),
                "--candidates",
                str(root / "cands"),
                "--out",
                str(root / "out"),
                "--workers",
                "1",
            ]
        )
    return rc, buf.getvalue(), root / "out"


def test_cli_writes_report_and_prints_paths(cli_report):
    rc, out, folder = cli_report
    assert rc == 0
    for kind in ("html", "csv", "json"):
        assert f"{kind}: {folder / ('identity_metrics.' + kind)}" in out
    rows = list(csv.DictReader(open(folder / "identity_metrics.csv", encoding="utf-8")))
    status = {r["name"]: r["status"] for r in rows}
    assert status["noface.jpg"] == "failed" and status[HOSTILE] == "ok"
    assert {r["group"] for r in rows} == {"reference", "lisa_lora", "other"}


def test_cli_bad_input_exit_code(tmp_path):
    from identitylock.core.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["metrics", "--reference", str(tmp_path), "--candidates", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip


def test_report_in_headless_chromium_no_errors_no_network(cli_report):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from headless_chromium import Browser, find_chromium

    chromium = find_chromium()
    if not chromium:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    _, _, folder = cli_report
    html_path = (folder / "identity_metrics.html").resolve()
    b = Browser(chromium, width=1400, height=1800, domains=("Page", "Runtime", "Log", "Network"))
    try:
        b.call("Page.navigate", url=html_path.as_uri())
        assert b.wait("document.body && document.body.dataset.ready === '1'", 60, every=0.3), (
            "dashboard script did not finish"
        )
        time.sleep(1.0)
        info = b.js(
            "({plots: document.querySelectorAll('.js-plotly-plot').length,"
            " svg: document.querySelectorAll('.js-plotly-plot .main-svg').length,"
            " cards: document.querySelectorAll('#cards .card').length,"
            " hostileText: [...document.querySelectorAll('#cards .card')].some("
            "   c => c.textContent.includes('<img src=x onerror=alert(1)>.png')),"
            " injected: document.querySelectorAll('img[src=\"x\"], #cards script').length,"
            " holes: document.querySelectorAll('#holes tbody tr').length})"
        )
        png = b.screenshot()
        # toggling a group off hides its traces (no errors either)
        b.js("document.querySelector('#toggles input[type=checkbox]').click()")
        time.sleep(0.5)
        b.js("1")  # flush events
    finally:
        b.close()
    assert info["plots"] == len(PANELS) and info["svg"] >= len(PANELS)
    assert info["cards"] == 4 and info["holes"] == 3
    assert info["hostileText"] and info["injected"] == 0
    dialogs = [e for e in b.events if e.get("method") == "Page.javascriptDialogOpening"]
    assert not b.errors() and not dialogs, (b.errors(), dialogs)
    requests = [
        e["params"]["request"]["url"] for e in b.events if e.get("method") == "Network.requestWillBeSent"
    ]
    assert requests and all(u == html_path.as_uri() or u.startswith("data:") for u in requests), requests
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


def test_node_with_identity_input(analyzed, tmp_path, monkeypatch):
    import identitylock.nodes.metrics as node_mod
    import torch

    monkeypatch.setattr(node_mod, "output_directory", lambda: str(tmp_path))
    vecs = np.stack([analyzed[n].analysis.primary.embedding for n in ("lisa_1.jpg", "lisa_2.jpg")])
    ident = IdentityReference(vecs, "dlib", analyzed["lisa_1.jpg"].analysis.model, ["lisa_1", "lisa_2"])
    img = analyzed["lisa_4_small"].image
    batch = torch.from_numpy(img[None].astype(np.float32) / 255.0)
    out = node_mod.IdentityMetrics().run(batch, "mine", "insightface", "run<1>", identity=ident)
    summary, preview = out["result"]
    assert "mine: n=1 faces=1" in summary
    assert preview.shape[0] == 1 and preview.shape[-1] == 3 and float(preview.std()) > 0.01
    rel = out["ui"]["report"][0]["html"]
    assert (tmp_path / rel).exists() and rel.startswith("identitylock_metrics/run_1_")


def test_one_reference_photo_is_found_and_leave_one_out_is_said_to_be_undefined(analyzed):
    """Issue 15: with one reference photo the summary said "reference: 1 image(s), no face found" although the
    face was found and every candidate was scored against it."""
    m = build_metrics([analyzed["lisa_1.jpg"]], {"gen": [analyzed["lisa_4.jpg"], analyzed[LONDON[0]]]})
    ref = m.groups["reference"]
    assert ref.n == 1 and ref.n_face == 1 and ref.detection_rate == 1.0 and ref.median is None
    text = m.summary_text()
    line = next(s for s in text.splitlines() if s.strip().startswith("reference:"))
    assert "no face found" not in line and "1 face(s) found" in line and "leave-one-out" in line
    assert not any("no face found" in w for w in m.warnings)
    assert m.groups["gen"].n_face == 2 and m.groups["gen"].median is not None
