"""Face engine on real photos (embedded dlib backend): ranking quality, invariances, rescue, pose sign."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from identitylock.core.faces import analyze, get_engine
from identitylock.core.identity import default_threshold, drift
from identitylock.core.images import load_image

# Photos cut from the same photograph (labels.csv notes): pairs among them are not independent.
SAME_PHOTOGRAPH = {"multi_3": {"obama_5.jpg", "biden_2.jpg", "gates_1.jpg"}, "multi_1": {"biden_3.jpg"}}
# Known hard case (labels.csv): 45 deg yaw + looking down; dlib's landmarks are wrong on it.
HARD_POSE = {"obama_4.jpg"}


def _source_photo(name: str) -> str:
    for src, members in SAME_PHOTOGRAPH.items():
        if name in members:
            return src
    return name


@pytest.fixture(scope="module")
def engine():
    return get_engine("dlib")


@pytest.fixture(scope="module")
def single_faces(faces_dir, face_labels, engine):
    """file -> (identity, embedding, image) for every single-face photo."""
    out = {}
    for row in face_labels:
        if row["faces_expected"] != "1":
            continue
        img = load_image(faces_dir / row["file"])
        res = analyze(img, engine)
        assert res.found, f"{row['file']}: the embedded backend must find this face (rescue ladder included)"
        out[row["file"]] = (row["identity"], res.primary.embedding, img)
    return out


def _pairs(single_faces):
    from identitylock.core.calibration import pair_drifts

    names = list(single_faces)
    pairs = pair_drifts(
        names,
        [single_faces[n][0] for n in names],
        [single_faces[n][1] for n in names],
        [_source_photo(n) for n in names],
    )
    same = [(p.drift, p.a, p.b) for p in pairs if p.same]
    diff = [(p.drift, p.a, p.b) for p in pairs if not p.same]
    return same, diff


def test_ranking_auc_same_vs_different_identity(single_faces):
    from identitylock.core.calibration import PairDrift, ranking_auc
    from sklearn.metrics import roc_auc_score

    same, diff = _pairs(single_faces)
    assert len(same) >= 15 and len(diff) >= 200
    labels = [1] * len(same) + [0] * len(diff)
    scores = [-d for d, *_ in same] + [-d for d, *_ in diff]
    auc = roc_auc_score(labels, scores)
    print(f"dlib AUC over {len(same)} same / {len(diff)} different independent pairs: {auc:.4f}")
    assert auc >= 0.99
    ours = ranking_auc(
        [PairDrift(d, a, b, True) for d, a, b in same] + [PairDrift(d, a, b, False) for d, a, b in diff]
    )
    assert ours == pytest.approx(auc)


def test_lock_threshold_has_no_false_accepts_and_closest_impostor_pair_stays_out(single_faces):
    threshold = default_threshold("dlib")
    same, diff = _pairs(single_faces)
    closest = min(diff)
    print(
        f"closest different-person pair: {closest[1]} / {closest[2]} drift {closest[0]:.4f} (threshold {threshold})"
    )
    assert closest[0] > threshold, "a different person would be accepted as locked"
    false_accepts = sum(d <= threshold for d, *_ in diff)
    false_rejects = [(round(d, 3), a, b) for d, a, b in same if d > threshold]
    print(
        f"false accepts {false_accepts}/{len(diff)}, false rejects {len(false_rejects)}/{len(same)}: {false_rejects}"
    )
    assert false_accepts == 0
    # Same-person pairs that fail the lock all involve the documented hard pose.
    assert all(HARD_POSE & {a, b} for _, a, b in false_rejects)


def _rotate(img: np.ndarray, angle: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def _center_crop(img: np.ndarray, fraction: float) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = int(h * fraction), int(w * fraction)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw])


@pytest.mark.parametrize(
    "variant",
    ["flip", "rotate+10", "rotate-10"],
)
def test_flip_and_rotation_stay_locked(single_faces, engine, variant):
    threshold = default_threshold("dlib")
    failures = {}
    for name, (_, ref, img) in single_faces.items():
        if variant == "flip":
            v = np.ascontiguousarray(img[:, ::-1])
        else:
            v = _rotate(img, 10.0 if variant == "rotate+10" else -10.0)
        res = analyze(v, engine)
        assert res.found, f"{name} {variant}: face lost"
        d = drift(ref, res.primary.embedding)
        if d > threshold:
            failures[name] = round(d, 4)
    print(f"{variant}: over threshold {failures}")
    # Only the documented hard pose (wrong landmarks at 45 deg yaw, looking down) may leave the lock.
    assert set(failures) <= HARD_POSE


def test_sixty_percent_crop_is_locked_or_a_flagged_miss(single_faces, engine):
    threshold = default_threshold("dlib")
    misses = []
    for name, (_, ref, img) in single_faces.items():
        res = analyze(_center_crop(img, 0.6), engine)
        if not res.found:
            misses.append(name)  # the crop cut the face away: a miss, never a drift number
            continue
        assert drift(ref, res.primary.embedding) <= threshold, name
    print("60% crop misses:", misses)
    assert len(misses) < len(single_faces) // 2


def test_no_face_images_are_misses_after_the_whole_ladder(faces_dir, engine):
    from identitylock.core.faces import RESCUE_LADDER

    res = analyze(load_image(faces_dir / "noface_1.jpg"), engine)
    assert not res.found and res.rescue is None
    assert res.tried == RESCUE_LADDER


def test_rescue_ladder_finds_hard_faces_and_records_the_rung(faces_dir, engine):
    # HOG at upsample 0 misses both (labels.csv); the ladder must find them and say how.
    for name in ("obama_4.jpg", "gates_1.jpg"):
        res = analyze(load_image(faces_dir / name), engine)
        assert res.found and res.rescue != "direct", (name, res.rescue)
        assert res.primary.rescue == res.rescue


def test_close_up_filling_the_frame_is_rescued_by_padding(faces_dir, engine):
    img = load_image(faces_dir / "london004_1.jpg")
    face = analyze(img, engine).primary
    x0, y0, x1, y1 = face.bbox.astype(int)
    inset = int(0.2 * (x1 - x0))
    # Cropped well inside the detector's own box: the face runs off every edge of the frame.
    close = np.ascontiguousarray(img[y0 + inset : y1 - inset // 2, x0 + inset : x1 - inset])
    assert not analyze(close, engine, rescue=False).found  # the plain detector misses it...
    res = analyze(close, engine)
    assert res.found and res.rescue == "pad", res.tried  # ...padding around the image rescues it


def test_yaw_sign_flips_with_the_image(faces_dir, engine):
    for name in ("obama_2.jpg", "obama_5.jpg", "biden_2.jpg"):  # clear yaw toward the frame's left
        img = load_image(faces_dir / name)
        yaw = analyze(img, engine).primary.pose.yaw
        yaw_flipped = analyze(np.ascontiguousarray(img[:, ::-1]), engine).primary.pose.yaw
        assert yaw < -10 and yaw_flipped > 10, (name, yaw, yaw_flipped)


def test_multi_face_images_return_all_faces_largest_first(faces_dir, engine):
    res = analyze(load_image(faces_dir / "multi_2.jpg"), engine)
    assert len(res.faces) == 2
    assert res.faces[0].area >= res.faces[1].area


def test_engine_is_cached_and_thread_safe(faces_dir):
    from concurrent.futures import ThreadPoolExecutor

    eng = get_engine("dlib")
    assert get_engine("dlib") is eng
    img = load_image(faces_dir / "lisa_1.jpg")
    with ThreadPoolExecutor(3) as pool:
        vecs = list(pool.map(lambda _: analyze(img, eng).primary.embedding, range(3)))
    assert all(np.allclose(vecs[0], v) for v in vecs)


def test_analyze_many_matches_sequential_and_reports_bad_files(faces_dir, tmp_path):
    from identitylock.core.faces import analyze_many

    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    items = [faces_dir / "lisa_1.jpg", bad, faces_dir / "noface_2.jpg", faces_dir / "london005_1.jpg"]
    par = analyze_many(items, workers=2, engine_kwargs={"backend": "dlib"})
    seq = analyze_many(items, workers=1, engine_kwargs={"backend": "dlib"})
    assert [r is None for r, _ in par] == [False, True, False, False]
    assert "not a readable image" in par[1][1]
    assert not par[2][0].found
    for (a, _), (b, _) in zip(par, seq):
        if a is not None and a.found:
            assert np.allclose(a.primary.embedding, b.primary.embedding, atol=1e-5)
