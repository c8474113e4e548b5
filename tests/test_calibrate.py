"""`identitylock calibrate`: pair drifts, ROC AUC, EER, the threshold at a false-accept rate, and --save as the
user's own default; on the committed photos with the embedded dlib backend and with the ONNX stand-ins."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from identitylock.core import cli
from identitylock.core.calibration import (
    calibrate,
    identity_from_name,
    pair_drifts,
    ranking_auc,
    threshold_at_far,
)
from identitylock.core.errors import EXIT_BAD_INPUT, EXIT_OK, IdentityLockError
from identitylock.core.faces import clear_engine_cache
from identitylock.core.identity import (
    IdentityReference,
    default_threshold,
    save_threshold,
    user_thresholds_path,
)

from .insightface_standins import make_pack

SUBSET = [
    "obama_1",
    "obama_2",
    "obama_3",
    "biden_1",
    "biden_3",
    "london004_1",
    "london004_2",
    "london025_1",
    "london025_2",
]


@pytest.fixture(autouse=True)
def _config(monkeypatch, tmp_path):
    monkeypatch.setenv("IDENTITYLOCK_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path))
    clear_engine_cache()
    yield
    clear_engine_cache()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, faces_dir):
    d = tmp_path_factory.mktemp("calib")
    for n in SUBSET:
        shutil.copy(faces_dir / f"{n}.jpg", d / f"{n}.jpg")
    return d


def test_identity_from_file_name_prefix():
    assert [
        identity_from_name(n)
        for n in ("obama_3.jpg", "london004_1.jpg", "Anna-02.png", "bob7.jpg", "x/carl (2).webp", "dora.jpg")
    ] == ["obama", "london004", "anna", "bob", "carl", "dora"]


def test_threshold_at_far_never_exceeds_the_rate():
    diff = np.array([0.30, 0.35, 0.41, 0.5, 0.62, 0.7, 0.8, 0.9, 0.95, 0.99])
    assert threshold_at_far(diff, 0.001) == 0.2999  # no false accept allowed: just below the smallest
    assert threshold_at_far(diff, 0.2) == 0.4099  # two allowed, the third (0.41) must stay rejected
    for far in (0.05, 0.1, 0.25, 0.5):
        t = threshold_at_far(diff, far)
        assert (diff <= t).mean() <= far and (diff <= t + 2e-4).mean() > far - 1e-9
    assert threshold_at_far(np.array([0.0, 0.5]), 0.1) is None


def test_calibrate_statistics_on_synthetic_vectors():
    rng = np.random.default_rng(0)
    people = rng.standard_normal((6, 64))
    ids, vecs = [], []
    for p in range(6):
        for _ in range(4):
            ids.append(f"p{p}")
            vecs.append(people[p] + 0.6 * rng.standard_normal(64))
    c = calibrate(ids, vecs, backend="dlib", model="m", far=0.01)
    pairs = pair_drifts([f"#{i}" for i in range(len(ids))], ids, vecs)
    assert len(c.same) == 6 * 6 and len(c.different) == len(pairs) - 36
    assert c.auc == pytest.approx(ranking_auc(pairs))
    assert (c.different <= c.threshold).mean() <= 0.01 and c.far <= 0.01
    assert c.frr == pytest.approx((c.same > c.threshold).mean())
    with pytest.raises(IdentityLockError, match="two photos of one person"):
        calibrate(["a", "b", "c"], vecs[:3], backend="dlib", model="m")
    with pytest.raises(IdentityLockError, match="not a rate"):
        calibrate(ids, vecs, backend="dlib", model="m", far=1.5)


@pytest.mark.slow  # real dlib on 6-9 photos
def test_cli_dlib_on_the_photos_prints_and_saves(photos, capsys):
    assert cli.main(["calibrate", str(photos), "--backend", "dlib", "--json"]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "dlib" and out["photos"] == 9 and out["identities"] == 4
    assert (
        out["same_person_drift"]["pairs"] == 3 + 1 + 1 + 1
        and out["different_person_drift"]["pairs"] == 36 - 6
    )
    t = out["threshold_at_far"]
    assert 0 < t < out["different_person_drift"]["min"] and out["far_at_threshold"] == 0.0
    assert out["roc_auc"] > 0.9  # dlib separates these four people (measured 1.0)
    assert not user_thresholds_path().exists()
    assert cli.main(["calibrate", str(photos), "--backend", "dlib", "--save"]) == EXIT_OK
    text = capsys.readouterr().out
    assert (
        "ROC AUC" in text
        and "EER" in text
        and "same person" in text
        and f"saved: lock threshold {t:.4f}" in text
    )
    model = out["model"]
    assert default_threshold("dlib", model) == t and default_threshold("dlib") == 0.06
    assert IdentityReference(np.ones(128), "dlib", model).lock_threshold == t
    assert IdentityReference(np.ones(128), "dlib", "another").lock_threshold == 0.06
    assert IdentityReference(np.ones(128), "dlib", model, threshold=0.05).lock_threshold == 0.05


@pytest.mark.slow  # real dlib on 6-9 photos
def test_cli_labels_file_skips_unusable_rows_and_reports_missing(photos, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    rows = [
        "file,identity,faces_expected,source",
        "obama_1.jpg,A,1,",
        "obama_2.jpg,A,1,",
        "obama_3.jpg,A,1,",
        "biden_1.jpg,B,1,",
        "biden_3.jpg,B,1,x",
        "london004_1.jpg,C,1,",
        "london004_2.jpg,C,0,",
        "gone.jpg,C,1,",
    ]
    labels.write_text("\ufeff" + "\n".join(rows) + "\n", encoding="utf-8")  # a spreadsheet's BOM
    code = cli.main(["calibrate", str(photos), "--labels", str(labels), "--backend", "dlib", "--json"])
    captured = capsys.readouterr()
    assert code == EXIT_BAD_INPUT and "gone.jpg" in captured.err  # the rest is still calibrated
    out = json.loads(captured.out)
    assert out["photos"] == 6 and out["identities"] == 3 and out["same_person_drift"]["pairs"] == 4


def test_cli_with_the_onnx_standins(tmp_path, photos, capsys):
    pack = make_pack(tmp_path / "insightface" / "models" / "buffalo_l")
    args = [
        "calibrate",
        str(photos),
        "--backend",
        "arcface-onnx",
        "--model-dir",
        str(pack.parent.parent),
        "--json",
    ]
    code = cli.main(args)
    out = json.loads(capsys.readouterr().out)
    # The fixed-place stand-in face falls outside two of the photos: they are reported, the rest calibrated.
    assert code == (EXIT_BAD_INPUT if out["left_out"] else EXIT_OK)
    assert out["backend"] == "insightface" and out["model"] == "buffalo_l"
    assert out["photos"] + len(out["left_out"]) == 9 and out["photos"] >= 6
    assert 0.0 <= out["roc_auc"] <= 1.0 and out["threshold_at_far"] < out["different_person_drift"]["min"]


def test_saved_thresholds_file_errors_are_one_clear_message(tmp_path):
    save_threshold("insightface", "buffalo_l", 0.3, {"far": 0.001})
    assert default_threshold("insightface", "buffalo_l") == 0.3
    assert json.loads(user_thresholds_path().read_text())["insightface/buffalo_l"]["far"] == 0.001
    with pytest.raises(IdentityLockError):
        save_threshold("insightface", "buffalo_l", 1.2)
    user_thresholds_path().write_text('{"insightface/buffalo_l": {"threshold": 7}}')
    with pytest.raises(IdentityLockError, match="delete the file"):
        default_threshold("insightface", "buffalo_l")
    user_thresholds_path().write_text("not json")
    with pytest.raises(IdentityLockError, match="unreadable"):
        default_threshold("insightface", "antelopev2")
