"""MatchedPortrait core on real photos: yaw sign, view bins, light side, geometry, color, compositing, retries.

Generated / composited "renders" use only the lisa_* and london* identities (SOURCES.md); the politicians'
photos are used for measurement (view classification) only.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _quiet_identitylock_log():
    """Silence the retry log of these tests only (a module-level setLevel leaked into every later test)."""
    logger = logging.getLogger("IdentityLock")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(old)


@pytest.fixture(scope="module")
def engine():
    from identitylock.core.faces import get_engine

    return get_engine("dlib")


@pytest.fixture(scope="module")
def load(faces_dir):
    from identitylock.core.images import load_image

    cache: dict[str, np.ndarray] = {}

    def _load(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = load_image(faces_dir / name)
        return cache[name]

    return _load


def flip(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[:, ::-1])


def gradient(img: np.ndarray, lo: float = 0.45, hi: float = 1.25) -> np.ndarray:
    """Relight: brightness rising from the frame's left edge to its right edge."""
    g = np.linspace(lo, hi, img.shape[1], dtype=np.float32)[None, :, None]
    return np.clip(img.astype(np.float32) * g, 0, 255).astype(np.uint8)


def turn(img: np.ndarray, bbox, deg: float) -> np.ndarray:
    """Rotate the head region about a vertical cylinder (a planted yaw: + turns the nose to the frame's right)."""
    import cv2

    h, w = img.shape[:2]
    x0, _, x1, _ = bbox
    cx, radius = (x0 + x1) / 2, (x1 - x0) * 0.75
    xs = np.arange(w, dtype=np.float32)
    phi = np.arcsin(np.clip((xs - cx) / radius, -1, 1)) - np.radians(deg)
    src = np.where(np.abs(xs - cx) < radius, cx + radius * np.sin(phi), xs).astype(np.float32)
    mapx = np.repeat(src[None], h, 0)
    mapy = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, 1)
    return cv2.remap(img, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def fused_yaw(img, engine):
    from identitylock.core.faces import analyze
    from identitylock.core.portrait.views import estimate_yaw

    res = analyze(img, engine, embed=False)
    assert res.found
    return estimate_yaw(res.primary, img, res.rescue)


@pytest.fixture(scope="module")
def turned_lisa(load, engine):
    """lisa_1 with its head turned toward the frame's right edge by the cylinder warp."""
    from identitylock.core.faces import analyze

    img = load("lisa_1.jpg")
    bbox = analyze(img, engine, embed=False).primary.bbox
    return turn(img, bbox, 30)


# -- yaw sign, mirror check -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["obama_2.jpg", "obama_5.jpg", "biden_2.jpg", "gates_1.jpg"])
def test_flipped_photo_has_opposite_yaw_sign(load, engine, name):
    img = load(name)
    a, b = fused_yaw(img, engine), fused_yaw(flip(img), engine)
    assert abs(a.yaw) >= 15 and abs(b.yaw) >= 15, (a.yaw, b.yaw)
    assert np.sign(a.yaw) == -np.sign(b.yaw), (a.to_dict(), b.to_dict())


def test_planted_turn_and_its_mirror(turned_lisa, engine):
    from identitylock.core.portrait.pipeline import is_mirrored

    a, b = fused_yaw(turned_lisa, engine), fused_yaw(flip(turned_lisa), engine)
    assert a.yaw >= 8 and b.yaw <= -8, (a.yaw, b.yaw)
    assert is_mirrored(a.yaw, b.yaw)
    assert not is_mirrored(a.yaw, a.yaw + 3)
    assert not is_mirrored(3.0, -3.0)  # a frontal scene has no side to mirror


def test_mirror_check_catches_planted_mirrored_render(turned_lisa, engine):
    from identitylock.core.portrait.pipeline import PortraitSettings, check_candidate

    scene_yaw = fused_yaw(turned_lisa, engine).yaw
    s = PortraitSettings()
    good = check_candidate(turned_lisa, 0, scene_yaw, 0.0, s, None, engine)
    bad = check_candidate(flip(turned_lisa), 1, scene_yaw, 0.0, s, None, engine)
    assert good.passed and not good.mirrored, good
    assert bad.mirrored and not bad.passed
    assert any("mirrored" in r for r in bad.reasons)


# -- views -----------------------------------------------------------------------------------------------------
FRONTAL = [
    "lisa_1.jpg",
    "lisa_2.jpg",
    "lisa_4.jpg",
    "london001_1.jpg",
    "london004_2.jpg",
    "obama_1.jpg",
    "biden_1.jpg",
]


@pytest.mark.parametrize("name", FRONTAL)
def test_view_checker_labels_frontal_photos_front(load, engine, name):
    from identitylock.core.portrait.views import check_view

    chk = check_view(load(name), "front", engine)
    assert chk.measured == "front" and chk.ok, chk.to_dict()


@pytest.mark.parametrize(
    ("name", "view"), [("obama_5.jpg", "three_quarter_left"), ("biden_2.jpg", "three_quarter_left")]
)
def test_flipped_three_quarter_is_the_opposite_three_quarter(load, engine, name, view):
    from identitylock.core.portrait.views import check_view, mirror_of

    img = load(name)
    assert check_view(img, view, engine).ok
    flipped = check_view(flip(img), view, engine)
    assert flipped.measured == mirror_of(view) == "three_quarter_right"
    assert flipped.mirrored and flipped.ok is False and "MIRRORED" in flipped.message


def test_near_profile_is_not_read_as_three_quarter(load, engine):
    """gates_1: landmarks say about -17 deg; detector behaviour says profile. Confidence is reported lower."""
    from identitylock.core.portrait.views import check_view

    img = load("gates_1.jpg")
    a, b = check_view(img, None, engine), check_view(flip(img), None, engine)
    assert a.measured == "profile_left" and b.measured == "profile_right", (a.to_dict(), b.to_dict())
    assert a.estimate.cues["landmark_yaw"] > -30  # the landmark yaw alone would have said three-quarter/front
    assert a.confidence <= 0.5


def test_view_bins_and_names():
    from identitylock.core.portrait.views import VIEWS, classify_yaw, expected_view

    assert classify_yaw(0) == "front" and classify_yaw(-19.9) == "front"
    assert classify_yaw(-20) == "three_quarter_left" and classify_yaw(54) == "three_quarter_right"
    assert classify_yaw(-55) == "profile_left" and classify_yaw(80) == "profile_right"
    assert "LEFT edge" in VIEWS["profile_left"].prompt and "LEFT edge" in VIEWS["three_quarter_left"].prompt
    assert expected_view("anna_3q_left.png") == "three_quarter_left"
    assert expected_view("anna_profile_right.png") == "profile_right"
    assert expected_view("anna_front.png") == "front"
    assert expected_view("anna.png") is None


# -- light, color, expression ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lisa_1.jpg", "london001_1.jpg", "london042_1.jpg"])
def test_relit_photo_light_side(load, engine, name):
    from identitylock.core.portrait.scene import analyze_scene

    lit = gradient(load(name))
    right = analyze_scene(lit, engine).face.light
    left = analyze_scene(flip(lit), engine).face.light
    assert right.direction == "frame-right" and left.direction == "frame-left", (right, left)
    assert right.confidence > 0.3 and left.confidence > 0.3


def test_studio_photo_is_front_lit(load, engine):
    from identitylock.core.portrait.scene import analyze_scene

    assert analyze_scene(load("london001_1.jpg"), engine).face.light.direction == "front"


def test_color_temperature_orders_warm_and_cool(load):
    from identitylock.core.portrait.scene import color_temperature

    img = load("london004_1.jpg").astype(np.float32)
    warm = np.clip(img * [1.15, 1.0, 0.75], 0, 255).astype(np.uint8)
    cool = np.clip(img * [0.8, 1.0, 1.2], 0, 255).astype(np.uint8)
    (kw, lw), (kc, lc) = color_temperature(warm), color_temperature(cool)
    assert kw < 4500 < kc and lw == "warm" and lc in ("neutral", "cool")


def test_expression_unavailable_with_5_point_and_measured_with_68(load, engine):
    from identitylock.core.faces import get_engine
    from identitylock.core.portrait.scene import analyze_scene

    sf = analyze_scene(load("london001_2.jpg"), engine).face
    assert sf.expression["available"] is False and "68" in sf.expression["note"]
    e68 = get_engine("dlib", landmarks=68)
    smiling = analyze_scene(load("london001_2.jpg"), e68).face.expression
    neutral = analyze_scene(load("london001_1.jpg"), e68).face.expression
    assert smiling["smile"] is True and neutral["smile"] is False
    assert neutral["mouth_open"] is False


def test_prompt_fragments_use_frame_edges(turned_lisa, engine):
    from identitylock.core.portrait.scene import analyze_scene

    sf = analyze_scene(gradient(turned_lisa), engine).face
    text = " | ".join(sf.prompt_fragments())
    assert "RIGHT edge of the frame" in text and "key light from the RIGHT edge" in text
    assert "subject's" not in text


# -- geometry --------------------------------------------------------------------------------------------------
def test_crop_uncrop_round_trip_is_exact_at_the_border(load):
    from identitylock.core.portrait import geometry as geo

    img = load("lisa_2.jpg")
    h, w = img.shape[:2]
    box = geo.CropBox(-37, h - 200, 300, 300, (w, h))  # sticks out at the left and the bottom
    assert box.padded
    out = geo.uncrop(geo.crop(img, box), box, img)
    assert np.array_equal(out, img)
    pts = np.array([[0.0, 0.0], [123.25, 456.5], [w - 1.0, h - 1.0]])
    assert np.allclose(box.to_image(box.to_crop(pts)), pts, atol=1e-9)


def test_uncrop_touches_only_the_crop(load):
    from identitylock.core.portrait import geometry as geo

    img = load("london004_1.jpg")
    h, w = img.shape[:2]
    box = geo.head_and_shoulders_box((400, 300, 620, 560), (w, h), work=512)
    rendered = np.full((512, 512, 3), 7, np.uint8)
    out = geo.uncrop(rendered, box, img)
    x0, y0, x1, y1 = box.valid()
    outside = np.ones((h, w), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], img[outside])
    assert (out[y0:y1, x0:x1] == 7).all()


def test_face_mask_dilated_and_feathered(load, engine):
    from identitylock.core.faces import analyze
    from identitylock.core.portrait.geometry import face_mask

    img = load("london001_1.jpg")
    f = analyze(img, engine, embed=False).primary
    h, w = img.shape[:2]
    m0 = face_mask((w, h), f.bbox, f.keypoints, dilate=0, feather=0)
    m = face_mask((w, h), f.bbox, f.keypoints)
    assert (m > 0).sum() > (m0 > 0).sum()  # dilated
    assert ((m > 0) & (m < 1)).sum() > 1000  # feathered edge
    cx, cy = (int(v) for v in f.center)
    assert m[cy, cx] == 1.0 and m[0, 0] == 0.0


# -- color match and composite --------------------------------------------------------------------------------
def test_color_match_reduces_lab_mean_difference(load, engine):
    from identitylock.core.faces import analyze
    from identitylock.core.portrait.composite import color_match, lab_mean_difference
    from identitylock.core.portrait.geometry import face_mask

    scene = gradient(load("london001_1.jpg"), 0.5, 0.9)  # darker, relit scene
    src = load("london004_1.jpg")  # another person's face, studio light
    f = analyze(scene, engine, embed=False).primary
    mask = face_mask((scene.shape[1], scene.shape[0]), f.bbox, f.keypoints)
    before = lab_mean_difference(src, scene, mask)
    matched = color_match(src, scene, mask)
    after = lab_mean_difference(matched, scene, mask)
    assert before > 5 and after < 0.35 * before, (before, after)
    assert np.array_equal(matched[mask == 0], src[mask == 0])


@pytest.mark.parametrize("seamless", [False, True])
def test_composite_leaves_outside_mask_pixels_unchanged(load, engine, seamless):
    from identitylock.core.faces import analyze
    from identitylock.core.portrait.composite import feather_composite, seamless_composite
    from identitylock.core.portrait.geometry import face_mask

    base, over = load("london005_1.jpg"), load("london006_1.jpg")
    f = analyze(base, engine, embed=False).primary
    mask = face_mask((base.shape[1], base.shape[0]), f.bbox, f.keypoints)
    out = (seamless_composite if seamless else feather_composite)(base, over, mask)
    outside = mask == 0
    assert outside.sum() > 0.5 * mask.size
    assert np.array_equal(out[outside], base[outside])
    assert not np.array_equal(out[mask == 1], base[mask == 1])


# -- bad input -------------------------------------------------------------------------------------------------
def test_no_face_scene(load, engine):
    from identitylock.core.errors import NoFaceError
    from identitylock.core.portrait.scene import analyze_scene

    with pytest.raises(NoFaceError, match="no face found in the scene"):
        analyze_scene(load("noface_1.jpg"), engine)


def test_several_faces_pick_largest_or_index(load, engine):
    from identitylock.core.errors import ImageInputError
    from identitylock.core.portrait.scene import analyze_scene

    img = load("multi_2.jpg")
    a = analyze_scene(img, engine)
    assert a.faces_found == 2 and any("2 faces" in w for w in a.warnings)
    left = analyze_scene(img, engine, face_index=0).face
    right = analyze_scene(img, engine, face_index=1).face
    assert left.bbox[0] < right.bbox[0]
    with pytest.raises(ImageInputError, match="face_index 5"):
        analyze_scene(img, engine, face_index=5)


def test_too_small_face_says_fraction_and_minimum(load, engine):
    import cv2
    from identitylock.core.errors import ImageInputError
    from identitylock.core.portrait.scene import analyze_scene

    img = load("london001_1.jpg")
    canvas = np.full((1024, 4000, 3), 128, np.uint8)
    small = cv2.resize(img, (260, 260), interpolation=cv2.INTER_AREA)
    canvas[382:642, 1870:2130] = small  # face about 95 px in a 4000 px wide scene (~2.4 %)
    with pytest.raises(ImageInputError, match=r"too small.*% of the image width \(minimum 4%"):
        analyze_scene(canvas, engine)


# -- the pipeline with a stand-in generator --------------------------------------------------------------------
def _reference(load, engine, names):
    from identitylock.core.faces import analyze
    from identitylock.core.identity import reference_from_analyses

    return reference_from_analyses([analyze(load(n), engine) for n in names], names)


def test_pipeline_retry_rejects_mirrored_candidate(load, engine, turned_lisa):
    """Seed 0 returns the mirrored head, seed 1 the right one; the loop must reject 0 and keep 1."""
    import cv2
    from identitylock.core.portrait.pipeline import PortraitSettings, matched_portrait

    ref = _reference(load, engine, ["lisa_1.jpg", "lisa_4.jpg"])
    calls = []

    def inpaint(crop, mask, seed):
        calls.append(seed)
        assert crop.shape == (384, 384, 3) and mask.shape == (384, 384) and mask.max() == 1.0
        photo = cv2.resize(turned_lisa[100:700], (384, 384), interpolation=cv2.INTER_AREA)
        return flip(photo) if seed == 0 else photo

    settings = PortraitSettings(seed=0, attempts=3, work_size=384, drift_threshold=0.12)
    res = matched_portrait(turned_lisa, inpaint, ref, engine=engine, settings=settings)
    rep = res.report
    assert calls == [0, 1]
    assert rep["attempts"][0]["mirrored"] is True and not rep["attempts"][0]["passed"]
    assert res.passed and rep["chosen_seed"] == 1 and rep["mirrored"] is False
    assert rep["drift"] is not None and rep["drift"] <= 0.12
    assert rep["scene_pose"]["yaw"] > 8 and rep["portrait_pose"]["yaw"] > 8
    # Pixels outside the full-image mask are the scene's, exactly.
    outside = res.mask == 0
    assert np.array_equal(res.image[outside], turned_lisa[outside])
    lab = rep["lab_mean_difference"]
    assert lab["after"] <= lab["before"]


def test_pipeline_returns_best_with_failure_stated(load, engine, turned_lisa):
    import cv2
    from identitylock.core.portrait.pipeline import PortraitSettings, matched_portrait

    ref = _reference(load, engine, ["lisa_1.jpg", "lisa_4.jpg"])

    def always_mirrored(crop, mask, seed):
        return flip(cv2.resize(turned_lisa[100:700], (256, 256), interpolation=cv2.INTER_AREA))

    res = matched_portrait(
        turned_lisa, always_mirrored, ref, engine=engine, settings=PortraitSettings(attempts=2, work_size=256)
    )
    assert not res.passed and res.report["attempts_used"] == 2
    assert "mirrored" in res.report["failure"]
    assert res.image.shape == turned_lisa.shape
