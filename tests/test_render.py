"""Stylized render pipelines: the real diffusers path on a tiny random pipeline, and drift per pass on photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from identitylock.core.errors import IdentityLockError
from identitylock.core.render import (
    read_render_metadata,
    render_three_pass,
    render_two_pass,
    rescue_blend,
    run_passes,
    three_pass_plan,
    two_pass_plan,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from identitylock.core.diffusion import DiffusersRenderer, build_tiny_pipeline, make_test_lora

    pipe = build_tiny_pipeline(seed=0)
    lora = make_test_lora(pipe, tmp_path_factory.mktemp("lora") / "testchar.safetensors")
    return DiffusersRenderer(pipe, lora=lora), lora


@pytest.fixture(scope="module")
def engine():
    from identitylock.core.faces import get_engine

    return get_engine("dlib")


@pytest.fixture(scope="module")
def reference(faces_dir, engine):
    from identitylock.core.faces import analyze_file
    from identitylock.core.identity import reference_from_analyses

    return reference_from_analyses([analyze_file(faces_dir / "lisa_1.jpg", engine)], ["lisa_1.jpg"])


def test_plans_carry_the_design_parameters():
    p3 = three_pass_plan("photo of testchar", "spa garden at dusk", seed=7)
    assert [(p.lora_scale, p.cfg) for p in p3] == [(1.0, 5.8), (0.85, 6.3), (0.90, 6.8)]
    assert p3[0].strength is None and p3[1].strength and p3[2].strength
    assert [p.seed for p in p3] == [7, 8, 9] and "spa garden" in p3[1].prompt
    p2 = two_pass_plan("photo of testchar")
    assert p2[0].lora_scale == 1.0 and p2[1].model == "realism" and p2[1].strength == 0.4
    with pytest.raises(IdentityLockError):
        three_pass_plan("", "x")


def test_rescue_blend_math():
    a = np.full((8, 8, 3), 200, np.uint8)
    b = np.zeros((8, 8, 3), np.uint8)
    assert int(rescue_blend(a, b, 0.3)[0, 0, 0]) == 140
    assert rescue_blend(a, np.zeros((4, 4, 3), np.uint8), 0.0).shape == a.shape
    with pytest.raises(IdentityLockError):
        rescue_blend(a, b, 1.5)


def test_three_pass_tiny_diffusers(tiny, reference, engine, tmp_path):
    renderer, lora = tiny
    scales = []
    orig = renderer.set_lora_scale

    def spy(s):
        scales.append(s)
        orig(s)

    renderer.set_lora_scale = spy
    try:
        res = render_three_pass(
            renderer, "photo of testchar", "urban rooftop, natural light", reference=reference, engine=engine,
            steps=4, seed=3, extra={"lora": lora.name},
        )  # fmt: skip
    finally:
        del renderer.set_lora_scale
    assert scales == [1.0, 0.85, 0.90]  # LoRA scale set per pass
    assert len(res.passes) == 3 and res.final.shape == (64, 64, 3) and res.final.dtype == np.uint8
    # random weights render noise: every pass is scored, and each is a flagged miss, never a crash
    for p in res.passes:
        assert p.face is not None and p.face["miss"] and p.face["drift"] is None and not p.face["locked"]
    assert res.lost_face_at() == "identity_lock"
    assert res.rescue["blend"] == 0.3 and res.rescue["applied"] is True
    expected = rescue_blend(res.passes[2].image, res.passes[0].image, 0.3)
    assert np.array_equal(res.final, expected)
    # passes actually differ (img2img did something) and the run is deterministic
    assert not np.array_equal(res.passes[0].image, res.passes[1].image)
    again = render_three_pass(renderer, "photo of testchar", "urban rooftop, natural light", steps=4, seed=3)
    assert np.array_equal(again.final, res.final)
    paths = res.save(tmp_path, "rooftop")
    meta = read_render_metadata(tmp_path / "rooftop.png")
    assert [p["name"] for p in meta["passes"]] == ["identity_lock", "scene", "realism"]
    assert meta["passes"][1]["prompt"] == "photo of testchar, urban rooftop, natural light"
    assert meta["passes"][2]["cfg"] == 6.8 and meta["lora"] == "testchar.safetensors"
    assert meta["passes"][0]["identity"]["miss"] is True
    assert len(paths) == 5 and json.loads((tmp_path / "rooftop.json").read_text())["mode"] == "3-pass"
    assert "miss" in res.table()


def test_two_pass_uses_the_realism_model(tiny):
    from identitylock.core.diffusion import DiffusersRenderer, build_tiny_pipeline

    renderer, _ = tiny
    realism = DiffusersRenderer(build_tiny_pipeline(seed=1))
    realism.name = "tiny-seed1"
    calls = []
    orig = realism.img2img
    realism.img2img = lambda *a, **k: calls.append(k) or orig(*a, **k)
    res = render_two_pass(renderer, "photo of testchar", realism_renderer=realism, steps=4, seed=5)
    assert len(calls) == 1 and calls[0]["cfg"] == 6.8 and calls[0]["strength"] == 0.4
    assert res.mode == "2-pass" and res.passes[0].face is None  # no reference -> not scored
    assert res.metadata()["realism_model"] == "tiny-seed1"


class PhotoRenderer:
    """Stand-in renderer returning real photos per pass: the face holds in pass 1 and is lost in pass 2."""

    def __init__(self, photos):
        self.photos = photos
        self.i = 0

    def _next(self):
        img = self.photos[self.i]
        self.i += 1
        return img

    def txt2img(self, prompt, seeds, **kw):
        return [self._next()]

    def img2img(self, image, prompt, seed, **kw):
        return self._next()


def test_drift_per_pass_shows_where_the_face_is_lost(faces_dir, reference, engine):
    from identitylock.core.images import load_image, resize_long_side

    def load(n):
        img = resize_long_side(load_image(faces_dir / n), 512)[0]
        return np.ascontiguousarray(img[:512, :384])

    photos = [load("lisa_2.jpg"), load("lisa_3.jpg"), load("london004_1.jpg")]
    plan = three_pass_plan("photo of lisa", "beach")
    res = run_passes(PhotoRenderer(photos), plan, reference=reference, engine=engine, rescue=0.3,
                     rescue_mode="if-better")  # fmt: skip
    locked = [p.face["locked"] for p in res.passes]
    assert locked == [True, True, False], res.table()
    assert res.lost_face_at() == "realism"
    assert res.passes[2].drift > res.passes[0].drift
    assert res.rescue["drift_before"] == res.passes[2].drift


@pytest.mark.parametrize("passes", [2, 3])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_small_step_counts_render_every_pass(tiny, passes, steps):
    """Issue 15: `render --tiny --passes 2 --steps 2` crashed (diffusers ran int(2 x 0.35) = 0 img2img steps, an
    empty schedule, a reshape of 0 elements). Each img2img pass now runs at least one denoising step and says so."""
    renderer, _ = tiny
    if passes == 3:
        res = render_three_pass(renderer, "photo of testchar", "rooftop", steps=steps, seed=1)
    else:
        res = render_two_pass(renderer, "photo of testchar", steps=steps, seed=1)
    assert len(res.passes) == passes and res.final.shape == (64, 64, 3)
    for p in res.passes[1:]:
        assert int(p.spec.steps * p.spec.strength) >= 1
        assert (p.spec.steps > steps) == ("steps raised" in p.spec.note)
    assert not np.array_equal(res.passes[0].image, res.passes[1].image)


def test_plans_refuse_zero_steps_and_nan_numbers():
    with pytest.raises(IdentityLockError, match="steps"):
        two_pass_plan("x", steps=0)
    with pytest.raises(IdentityLockError, match="realism_cfg"):
        two_pass_plan("x", realism_cfg=float("nan"))
    with pytest.raises(IdentityLockError, match="scene_strength"):
        three_pass_plan("x", "y", scene_strength=0.0)


def test_save_keeps_a_hostile_name_inside_the_folder(tiny, tmp_path):
    """Issue 15: `render --name ../../X` wrote outside --out."""
    renderer, _ = tiny
    res = render_two_pass(renderer, "photo of testchar", steps=2, seed=1)
    out = tmp_path / "a" / "b"
    paths = res.save(out, "../../escaped")
    assert all(p.parent == out.resolve() or p.parent == out for p in paths)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and p.parent != out) == []
