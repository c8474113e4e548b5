"""MatchedPortrait node end to end with a stand-in for ComfyUI's sampler that returns a real face photo.

The stand-in replaces only ``MatchedPortrait.inpaint`` (VAE encode -> sampler -> decode); everything else (tensor
conversion, scene analysis, the checks and retries, compositing, the report) runs for real. Identities: lisa_*.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfy_standins import StandInModel, StandInVAE  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_identitylock_log():
    """Silence the retry log of these tests only (a module-level setLevel leaked into every later test)."""
    logger = logging.getLogger("IdentityLock")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(old)


def _turn(img, bbox, deg):
    import cv2

    h, w = img.shape[:2]
    x0, _, x1, _ = bbox
    cx, radius = (x0 + x1) / 2, (x1 - x0) * 0.75
    xs = np.arange(w, dtype=np.float32)
    phi = np.arcsin(np.clip((xs - cx) / radius, -1, 1)) - np.radians(deg)
    src = np.where(np.abs(xs - cx) < radius, cx + radius * np.sin(phi), xs).astype(np.float32)
    return cv2.remap(
        img,
        np.repeat(src[None], h, 0),
        np.repeat(np.arange(h, dtype=np.float32)[:, None], w, 1),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )


class StandInSampler:
    """Returns a real face photo at the crop size: mirrored for the first ``mirrored_calls`` calls."""

    def __init__(self, photo: np.ndarray, mirrored_calls: int = 1):
        self.photo = photo
        self.mirrored_calls = mirrored_calls
        self.calls: list[dict] = []

    def __call__(
        self,
        model,
        positive,
        negative,
        vae,
        pixels,
        mask,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        denoise,
        callback=None,
    ):
        import cv2

        if callback is not None:  # like comfy.sample.sample: callback(step, x0, x, total_steps)
            for k in range(steps):
                callback(k, None, None, steps)

        assert pixels.ndim == 4 and pixels.shape[-1] == 3 and pixels.dtype == torch.float32
        assert mask.shape == pixels.shape[:3] and float(mask.max()) == 1.0
        self.calls.append(
            {"seed": seed, "size": tuple(pixels.shape[1:3]), "positive": positive, "denoise": denoise}
        )
        h, w = pixels.shape[1:3]
        img = cv2.resize(self.photo, (w, h), interpolation=cv2.INTER_AREA)
        if len(self.calls) <= self.mirrored_calls:
            img = np.ascontiguousarray(img[:, ::-1])
        return torch.from_numpy(img.astype(np.float32) / 255.0)[None]


@pytest.fixture(scope="module")
def setup(faces_dir):
    from identitylock.core.faces import analyze, get_engine
    from identitylock.core.identity import reference_from_analyses
    from identitylock.core.images import load_image

    eng = get_engine("dlib")
    lisa1 = load_image(faces_dir / "lisa_1.jpg")
    scene = _turn(lisa1, analyze(lisa1, eng, embed=False).primary.bbox, 30)  # nose toward the RIGHT edge
    ref = reference_from_analyses(
        [analyze(load_image(faces_dir / n), eng) for n in ("lisa_1.jpg", "lisa_4.jpg")]
    )
    return scene, ref


def _run(node, scene, ref, **kw):
    args = dict(
        scene=torch.from_numpy(scene.astype(np.float32) / 255.0)[None],
        model=StandInModel(),  # labelled stand-in of an SD1.5 ModelPatcher
        positive=[["pos", {}]],
        negative=[["neg", {}]],
        vae=StandInVAE(),
        identity=ref,
        seed=10,
        attempts=3,
        denoise=0.7,
        steps=4,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        mask_feather=0.06,
        work_size=384,
        drift_threshold=0.12,
    )
    args.update(kw)
    return node.run(**args)


def test_registered_and_contract():
    from identitylock.nodes import NODE_CLASS_MAPPINGS
    from identitylock.nodes.portrait import MatchedPortrait

    assert NODE_CLASS_MAPPINGS["MatchedPortrait"] is MatchedPortrait
    spec = MatchedPortrait.INPUT_TYPES()
    for group in ("required", "optional"):
        for name, (_, opts) in spec[group].items():
            assert opts.get("tooltip"), name
    assert MatchedPortrait.RETURN_TYPES == ("IMAGE", "IMAGE", "MASK", "STRING", "IMAGE")
    assert MatchedPortrait.OUTPUT_NODE and MatchedPortrait.CATEGORY.startswith("IdentityLock/")


def test_node_end_to_end_rejects_mirrored_candidate(setup, monkeypatch):
    from identitylock.nodes import portrait as mod

    scene, ref = setup
    sent = []
    monkeypatch.setattr(
        mod, "send_status", lambda event, data, node_id=None: sent.append((event, data, node_id))
    )
    node = mod.MatchedPortrait()
    photo = scene[100:700]
    node.inpaint = StandInSampler(photo, mirrored_calls=1)
    out = _run(node, scene, ref, unique_id="7")
    image, portrait, mask, report, passed_image = out["result"]
    rep = json.loads(report)
    assert passed_image is image  # passed: the composited scene reaches the Save node
    assert [c["seed"] for c in node.inpaint.calls] == [10, 11]
    assert node.inpaint.calls[0]["size"] == (384, 384)
    assert rep["attempts"][0]["mirrored"] is True and rep["passed"] and rep["chosen_seed"] == 11
    assert rep["drift"] <= 0.12 and rep["mirrored"] is False
    assert tuple(image.shape) == (1, *scene.shape) and tuple(portrait.shape) == (1, 384, 384, 3)
    assert tuple(mask.shape) == (1, *scene.shape[:2])
    # outside the mask the output is the scene, to the 8-bit value
    got = (image[0].numpy() * 255 + 0.5).astype(np.uint8)
    outside = mask[0].numpy() == 0
    assert np.array_equal(got[outside], scene[outside])
    assert sent and sent[0][0] == "portrait" and sent[0][2] == "7"
    msg = sent[0][1]
    assert msg["mirrored"] is False and msg["reference"]["yaw"] > 8 and msg["result"]["yaw"] > 8
    assert "passed" in out["ui"]["text"][0]


def test_node_all_mirrored_returns_best_with_failure(setup, monkeypatch):
    from identitylock.nodes import portrait as mod

    scene, ref = setup
    monkeypatch.setattr(mod, "send_status", lambda *a, **k: None)
    node = mod.MatchedPortrait()
    node.inpaint = StandInSampler(scene[100:700], mirrored_calls=99)
    rep = json.loads(_run(node, scene, ref, attempts=2)["result"][3])
    assert not rep["passed"] and "mirrored" in rep["failure"] and rep["attempts_used"] == 2


def test_failed_portrait_blocks_the_save_output_with_the_reason(setup, monkeypatch):
    """Issue 15: template 11 saved the failed best attempt. passed_image is a blocker (SaveImage never runs and
    ComfyUI shows the reason), never an image or a black placeholder."""
    from identitylock.nodes import portrait as mod

    scene, ref = setup
    monkeypatch.setattr(mod, "send_status", lambda *a, **k: None)
    node = mod.MatchedPortrait()
    node.inpaint = StandInSampler(scene[100:700], mirrored_calls=99)
    out = _run(node, scene, ref, attempts=1)
    image, passed_image = out["result"][0], out["result"][4]
    assert tuple(image.shape) == (1, *scene.shape)  # the best attempt stays inspectable
    assert not hasattr(passed_image, "shape")
    assert type(passed_image).__name__ in ("Blocked", "ExecutionBlocker")
    assert "no attempt passed" in passed_image.message and "mirrored" in passed_image.message


def test_nan_drift_threshold_is_refused(setup):
    from identitylock.core.errors import IdentityLockError
    from identitylock.nodes.portrait import MatchedPortrait

    scene, ref = setup
    node = MatchedPortrait()
    node.inpaint = StandInSampler(scene[100:700])
    with pytest.raises(IdentityLockError, match="drift threshold"):
        _run(node, scene, ref, drift_threshold=float("nan"))


def test_extra_prompt_is_encoded_with_scene_fragments(setup, monkeypatch):
    from identitylock.core.errors import IdentityLockError
    from identitylock.nodes import portrait as mod

    scene, ref = setup
    monkeypatch.setattr(mod, "send_status", lambda *a, **k: None)

    class FakeClip:
        def __init__(self):
            self.texts = []

        def tokenize(self, text):
            self.texts.append(text)
            return text

        def encode_from_tokens_scheduled(self, tokens):
            return [[torch.full((1, 3, 8), 7.0), {"pooled_output": torch.zeros(1, 4)}]]

    clip = FakeClip()
    node = mod.MatchedPortrait()
    node.inpaint = StandInSampler(scene[100:700], mirrored_calls=0)
    ref_latent = torch.randn(1, 16, 6, 6)
    positive = [[torch.ones(1, 5, 8), {"guidance": 2.5, "reference_latents": [ref_latent]}]]
    _run(node, scene, ref, attempts=1, clip=clip, extra_prompt="cinematic", positive=positive)
    assert clip.texts[0].startswith("cinematic, ") and "RIGHT edge of the frame" in clip.texts[0]
    # Issue 14: the scene's words were a separate conditioning entry without the user's FluxGuidance value or
    # reference latents (that half of the prediction rendered without them). Now they join each entry.
    (cond, opts), *rest = node.inpaint.calls[0]["positive"]
    assert not rest and tuple(cond.shape) == (1, 8, 8) and float(cond[0, 5, 0]) == 7.0
    assert opts["guidance"] == 2.5 and opts["reference_latents"][0] is ref_latent
    assert positive[0][0].shape == (1, 5, 8)  # the user's conditioning itself is not modified
    with pytest.raises(IdentityLockError, match="not the text encoder of the positive"):
        _run(node, scene, ref, attempts=1, clip=clip, positive=[[torch.ones(1, 5, 16), {}]])


def test_no_face_scene_is_a_clear_error(faces_dir, setup):
    from identitylock.core.errors import NoFaceError
    from identitylock.core.images import load_image
    from identitylock.nodes.portrait import MatchedPortrait

    _, ref = setup
    node = MatchedPortrait()
    node.inpaint = StandInSampler(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(NoFaceError, match="no face found in the scene"):
        _run(node, load_image(faces_dir / "noface_2.jpg"), ref)


def test_summary_says_no_face_in_render_instead_of_yaw_zero(setup, monkeypatch):
    """Real ComfyUI run (random weights) showed "render yaw +0" when the render had no face."""
    from identitylock.nodes import portrait as mod

    scene, ref = setup
    monkeypatch.setattr(mod, "send_status", lambda *a, **k: None)
    node = mod.MatchedPortrait()
    node.inpaint = StandInSampler(np.full((64, 64, 3), 128, np.uint8), mirrored_calls=0)
    out = _run(node, scene, ref, attempts=1)
    rep = json.loads(out["result"][3])
    assert not rep["passed"] and rep["portrait_pose"]["yaw"] is None
    text = out["ui"]["text"][0]
    assert "no face in the render" in text.splitlines()[1] and "render yaw" not in text


def test_progress_counts_sampler_steps_of_every_attempt(setup, monkeypatch):
    """Real ComfyUI run: one attempt took 30-56 s on CPU with no progress; the bar now moves every step."""
    from identitylock.nodes import portrait as mod

    scene, ref = setup
    monkeypatch.setattr(mod, "send_status", lambda *a, **k: None)
    calls = []

    class RecordingProgress:
        def __init__(self, total):
            calls.append(("init", total, None))

        def __call__(self, done, total, preview=None):
            calls.append((done, total, None if preview is None else preview.shape))

    monkeypatch.setattr(mod, "Progress", RecordingProgress)
    node = mod.MatchedPortrait()
    node.inpaint = StandInSampler(scene[100:700], mirrored_calls=99)
    _run(node, scene, ref, attempts=2, steps=4)
    assert calls[0] == ("init", 8, None)
    done = [c[0] for c in calls[1:]]
    assert done == sorted(done) and done[-1] == 8 and set(range(1, 9)) <= set(done)
    assert all(c[1] == 8 for c in calls[1:])
    previews = [c for c in calls[1:] if c[2] is not None]
    assert [c[0] for c in previews] == [4, 8] and previews[0][2] == (384, 384, 3)


def test_a_model_it_cannot_inpaint_with_is_refused_before_any_work(setup, monkeypatch):
    from identitylock.core.errors import IdentityLockError
    from identitylock.nodes import portrait as mod

    scene, ref = setup
    node = mod.MatchedPortrait()
    node.inpaint = StandInSampler(scene[100:700], mirrored_calls=0)
    with pytest.raises(
        IdentityLockError, match=r"MatchedPortrait cannot sample with this MODEL \(HunyuanVideo"
    ):
        _run(node, scene, ref, model=StandInModel("HunyuanVideo", 16))
    assert node.inpaint.calls == []


def test_work_size_follows_the_family_downscale(setup, monkeypatch):
    """Flux.2 latents are 1/16: a 392 px crop would be cut by its VAE (and no longer match the mask)."""
    from identitylock.nodes import portrait as mod

    scene, ref = setup
    monkeypatch.setattr(mod, "send_status", lambda *a, **k: None)
    node = mod.MatchedPortrait()
    node.inpaint = StandInSampler(scene[100:700], mirrored_calls=0)
    _run(node, scene, ref, attempts=1, work_size=392, model=StandInModel("Flux2", 128))
    assert node.inpaint.calls[0]["size"] == (384, 384)
