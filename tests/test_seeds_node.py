"""DriftSeedSearch end to end, with a stand-in for ComfyUI's sampler and VAE that returns real photos per seed.

ComfyUI is not installable in CI; the stand-in replaces only ``DriftSeedSearch.sampling`` (sample + decode). The
latents it returns carry the seed, the "VAE" decodes them to the photo for that seed, and everything after that
(tensor conversion, scoring with dlib, ranking, early stop, outputs, status messages) is the real code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfy_standins import FAMILY_SHAPES, StandInModel, StandInVAE, standin_family  # noqa: E402

# seed -> photo (same mapping as tests/test_seeds.py); reference lisa_1, the other lisa photos are the same person.
SEED_PHOTOS = {
    0: "london001_1.jpg",
    1: "lisa_3.jpg",
    2: "noface_1.jpg",
    3: "london004_1.jpg",
    4: "lisa_2.jpg",
    5: "london025_1.jpg",
    6: "lisa_4.jpg",
    7: "london042_2.jpg",
}
LISA_SEEDS = {1, 4, 6}


class PhotoSampling:
    """sample(): one latent per seed, filled with the seed; decode(): latent -> that seed's photo [B,H,W,3]."""

    def __init__(self, photos):
        self.photos = photos
        self.batches = []

    def sample(self, model, seeds, latent, positive, negative, steps, cfg, sampler_name, scheduler, denoise):
        import torch

        self.batches.append(list(seeds))
        h, w = latent["samples"].shape[-2:]
        return torch.stack([torch.full((4, h, w), float(s)) for s in seeds])

    def decode(self, vae, samples):
        import torch

        seeds = [int(round(float(x[0, 0, 0]))) for x in samples]
        return torch.from_numpy(np.stack([self.photos[s] for s in seeds]).astype(np.float32) / 255.0)


@pytest.fixture(scope="module")
def photos(faces_dir):
    from identitylock.core.images import load_image, resize_long_side

    out = {}
    for s, f in SEED_PHOTOS.items():
        img = load_image(faces_dir / f)
        side = min(img.shape[:2])
        y0, x0 = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
        out[s] = resize_long_side(np.ascontiguousarray(img[y0 : y0 + side, x0 : x0 + side]), 384)[0]
    return out


@pytest.fixture(scope="module")
def reference(faces_dir):
    from identitylock.core.faces import analyze_file, get_engine
    from identitylock.core.identity import reference_from_analyses

    return reference_from_analyses(
        [analyze_file(faces_dir / "lisa_1.jpg", get_engine("dlib"))], ["lisa_1.jpg"]
    )


@pytest.fixture()
def node(photos, monkeypatch, tmp_path):
    import identitylock.nodes.seeds as mod

    monkeypatch.setattr(mod, "output_directory", lambda: str(tmp_path / "output"))
    sent = []
    monkeypatch.setattr(
        mod, "send_status", lambda event, data, node_id=None: sent.append((event, data, node_id))
    )
    n = mod.DriftSeedSearch()
    n.sampling = PhotoSampling(photos)
    return n, sent, mod


def _run(node, reference, **kw):
    args = dict(
        model=StandInModel(), positive=[], negative=[], vae=StandInVAE(), identity=reference, seed_start=0, seed_count=8,
        steps=20, cfg=5.8, sampler_name="euler", scheduler="normal", denoise=1.0, width=384, height=384,
        threshold=0.0, stop_after=0, top_k=4, seeds_per_batch=3, save="none", unique_id="7",
    )  # fmt: skip
    args.update(kw)
    return node.search(**args)


def test_registered_with_tooltips():
    from identitylock.nodes import NODE_CLASS_MAPPINGS
    from identitylock.nodes.seeds import DriftSeedSearch

    assert NODE_CLASS_MAPPINGS["DriftSeedSearch"] is DriftSeedSearch
    spec = DriftSeedSearch.INPUT_TYPES()
    for group in ("required", "optional"):
        for name, (_, opts) in spec[group].items():
            assert opts.get("tooltip"), name
    assert DriftSeedSearch.RETURN_TYPES == ("IMAGE", "INT", "LATENT", "IMAGE", "STRING", "IMAGE")


def test_node_end_to_end_with_photos(node, reference, photos):
    n, sent, _ = node
    out = _run(n, reference)
    best_image, best_seed, best_latent, candidates, report, locked_images = out["result"]
    rep = json.loads(report)
    assert tuple(locked_images.shape) == (3, 384, 384, 3)  # the three lisa renders, best first
    assert np.allclose(locked_images[0].numpy(), best_image[0].numpy())
    assert best_seed in LISA_SEEDS
    assert tuple(best_image.shape) == (1, 384, 384, 3)
    assert np.allclose(best_image[0].numpy(), photos[best_seed] / 255.0, atol=1 / 255)
    assert float(best_latent["samples"][0, 0, 0, 0]) == best_seed and best_latent["samples"].shape == (
        1,
        4,
        48,
        48,
    )
    assert tuple(candidates.shape) == (4, 384, 384, 3)
    assert {r["seed"] for r in rep["records"][:3]} == LISA_SEEDS and rep["locked"] == 3
    assert rep["records"][-1]["seed"] == 2 and rep["records"][-1]["miss"] is True
    assert n.sampling.batches == [[0, 1, 2], [3, 4, 5], [6, 7]]
    # status: a start message, one per scored seed, then the final ranks
    assert sent[0][1]["event"] == "start" and all(s[0] == "seed" and s[2] == "7" for s in sent)
    live = [d for _, d, _ in sent[1:9]]
    assert [d["seed"] for d in live] == list(range(8))
    assert next(d for d in live if d["seed"] == 2)["drift"] is None
    ranks = {d["seed"]: d["rank"] for _, d, _ in sent[9:]}
    assert ranks[2] == 8 and {s for s, r in ranks.items() if r <= 3} == LISA_SEEDS


def test_node_stop_after_seed_list_and_save(node, reference, tmp_path, monkeypatch):
    n, sent, mod = node
    monkeypatch.setattr(mod, "output_directory", lambda: str(tmp_path))
    out = _run(n, reference, seed_list="3,4,5,6", stop_after=1, seeds_per_batch=1, save="locked")
    rep = json.loads(out["result"][4])
    assert n.sampling.batches == [[3], [4]] and rep["stopped_early"] is True
    assert out["result"][1] == 4
    saved = list((tmp_path / "identitylock" / "seeds").glob("verify_seed_4_drift_*.png"))
    assert len(saved) == 1


def test_node_honours_cancel(node, reference, monkeypatch):
    n, _, mod = node

    class Interrupted(Exception):
        pass

    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        if calls["n"] > 2:
            raise Interrupted()

    monkeypatch.setattr(mod, "check_interrupted", cancel)
    with pytest.raises(Interrupted):
        _run(n, reference, seeds_per_batch=1)
    assert len(n.sampling.batches) == 2


def test_node_rejects_bad_inputs(node, reference):
    from identitylock.core.errors import IdentityLockError

    n, _, _ = node
    with pytest.raises(IdentityLockError, match="IDENTITY"):
        _run(n, "not an identity")
    with pytest.raises(IdentityLockError, match="LATENT"):
        _run(n, reference, denoise=0.5)
    with pytest.raises(IdentityLockError):
        _run(n, reference, seed_list="1:x")


def test_no_locked_seed_blocks_the_save_output_with_the_reason(node, reference):
    """Issue 15: template 08 saved the best render of a failed search (and an empty result would have been a
    black 64x64 placeholder). locked_images is a blocker that says why; nothing downstream runs."""
    n, _, _ = node
    out = _run(n, reference, seed_list="0,2,3,5")  # strangers and a no-face photo: nothing can lock
    rep = json.loads(out["result"][4])
    assert rep["locked"] == 0
    blocked = out["result"][5]
    assert not hasattr(blocked, "shape") and type(blocked).__name__ in ("Blocked", "ExecutionBlocker")
    assert "no seed locked" in blocked.message and "threshold" in blocked.message
    assert "no seed locked" in out["ui"]["text"][0]


def test_two_person_render_never_locks_in_the_node(node, reference, photos):
    """Issue 15: a render with the person AND someone else counted as locked."""
    n, _, _ = node
    lisa, other = photos[6], photos[0]
    n.sampling.photos = {**photos, 100: np.concatenate([lisa, other], axis=1)}
    out = _run(n, reference, seed_list="100", width=768)
    rec = json.loads(out["result"][4])["records"][0]
    assert rec["faces"] == 2 and rec["drift"] is not None and rec["locked"] is False
    assert type(out["result"][5]).__name__ in ("Blocked", "ExecutionBlocker")


# -- scale (issue 16) --------------------------------------------------------------------------------------------
def test_node_holds_only_the_top_k_latents(node, reference):
    """Issue 16: every seed's latent was kept until the end (GBs at 4,096 seeds); now only the held top-k."""
    import gc
    import weakref

    n, _, _ = node
    sampling = n.sampling
    alive = []

    class Tracking(type(sampling)):
        def sample(self, *a):
            gc.collect()
            alive.append(sum(r() is not None for r in refs))
            out = sampling.sample(*a)
            refs.append(weakref.ref(out))
            return out

    refs = []
    tracking = Tracking(sampling.photos)
    tracking.batches = sampling.batches
    n.sampling = tracking
    out = _run(n, reference, top_k=1, seeds_per_batch=1)
    assert max(alive) <= 2, f"latent batches still held while sampling: {alive}"
    assert (
        out["result"][1] in LISA_SEEDS and float(out["result"][2]["samples"][0, 0, 0, 0]) == out["result"][1]
    )


def test_node_records_a_failed_batch_and_goes_on(node, reference):
    n, _, _ = node
    decode = n.sampling.decode

    def broken(vae, samples):
        if float(samples[0, 0, 0, 0]) == 3:
            raise RuntimeError("VAE decode failed")
        return decode(vae, samples)

    n.sampling.decode = broken
    rep = json.loads(_run(n, reference)["result"][4])
    errors = {r["seed"]: r["error"] for r in rep["records"] if r["error"]}
    assert errors == dict.fromkeys((3, 4, 5), "RuntimeError: VAE decode failed")
    assert rep["locked"] == 2 and len(rep["records"]) == 8


def test_node_halves_the_batch_on_out_of_memory(node, reference):
    import torch

    n, _, _ = node
    sample = n.sampling.sample

    def tight(model, seeds, *a):
        if len(seeds) > 1:
            n.sampling.batches.append(list(seeds))
            raise torch.OutOfMemoryError("CUDA out of memory")
        return sample(model, seeds, *a)

    n.sampling.sample = tight
    rep = json.loads(_run(n, reference, seeds_per_batch=4)["result"][4])
    assert n.sampling.batches[:3] == [[0, 1, 2, 3], [0, 1], [0]]
    assert rep["batch_size"] == 1 and rep["locked"] == 3 and not any(r["error"] for r in rep["records"])


def test_node_cancel_inside_sampling_is_not_a_seed_failure(node, reference, monkeypatch):
    n, _, mod = node

    class Interrupted(Exception):
        pass

    monkeypatch.setattr(mod, "_interrupt_types", lambda: (Interrupted,))

    def cancelled(*a):
        raise Interrupted()

    n.sampling.sample = cancelled
    with pytest.raises(Interrupted):
        _run(n, reference)


def test_node_resume_skips_the_seeds_in_its_results_file(node, reference, monkeypatch, tmp_path):
    n, _, mod = node

    def cancel_in_second_batch():  # after its first seed (seed 2) is scored
        if len(n.sampling.batches) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(mod, "check_interrupted", cancel_in_second_batch)
    with pytest.raises(KeyboardInterrupt):
        _run(n, reference, seeds_per_batch=2)
    results = tmp_path / "output" / "identitylock" / "seeds" / "seed_search.jsonl"
    assert [json.loads(x)["seed"] for x in results.read_text().splitlines()[1:]] == [0, 1, 2]
    n.sampling.batches.clear()
    monkeypatch.setattr(mod, "check_interrupted", lambda: None)
    out = _run(n, reference, seeds_per_batch=2, resume=True)
    rep = json.loads(out["result"][4])
    assert (
        n.sampling.batches[:3] == [[3, 4], [5, 6], [7]] and rep["resumed"] == 3 and len(rep["records"]) == 8
    )
    assert rep["locked"] == 3 and out["result"][1] in LISA_SEEDS
    from identitylock.core.errors import IdentityLockError

    with pytest.raises(IdentityLockError, match="other settings"):
        _run(n, reference, seeds_per_batch=2, resume=True, steps=30)


# -- every model family (issue 14), with labelled stand-ins of ComfyUI's MODEL / VAE (tests/comfy_standins.py) ----
class RecordingSampling(PhotoSampling):
    """PhotoSampling that also records what reached the sampler (model, latent, conditioning)."""

    def sample(self, model, seeds, latent, positive, negative, *rest):
        self.seen = {"model": model, "latent": latent, "positive": positive, "negative": negative}
        return super().sample(model, seeds, latent, positive, negative, *rest)


@pytest.mark.parametrize("family", sorted(FAMILY_SHAPES))
def test_empty_latent_is_the_model_familys(node, reference, photos, family):
    """Issue 14: the empty latent was 4 channels at 1/8 whatever the model (wrong for FLUX.1, SD3, Flux.2...)."""
    n, _, _ = node
    n.sampling = RecordingSampling(photos)
    model, vae = standin_family(family)
    _run(n, reference, model=model, vae=vae, seed_list="1", width=512, height=768)
    _, channels, down = FAMILY_SHAPES[family]
    assert tuple(n.sampling.seen["latent"]["samples"].shape) == (1, channels, 768 // down, 512 // down)
    assert not n.sampling.seen["latent"]["samples"].any()  # zeros, as the family's empty-latent node


def test_a_connected_latent_is_used_and_a_wrong_one_refused(node, reference, photos):
    import torch
    from identitylock.core.errors import IdentityLockError

    n, _, _ = node
    n.sampling = RecordingSampling(photos)
    model, vae = standin_family("flux1")
    latent = {"samples": torch.randn(1, 16, 40, 24)}
    _run(n, reference, model=model, vae=vae, seed_list="1", latent=latent, denoise=0.6)
    assert n.sampling.seen["latent"] is latent
    with pytest.raises(IdentityLockError, match=r"LATENT has 4 channels but this FLUX.1 MODEL works on 16"):
        _run(n, reference, model=model, vae=vae, latent={"samples": torch.randn(1, 4, 40, 24)})
    empty4 = {
        "samples": torch.zeros(1, 4, 40, 24)
    }  # EmptyLatentImage: ComfyUI widens it to 16 channels itself
    _run(n, reference, model=model, vae=vae, seed_list="1", latent=empty4)
    assert n.sampling.seen["latent"] is empty4


def test_a_model_or_vae_it_cannot_handle_is_refused_in_one_sentence(node, reference):
    from identitylock.core.errors import IdentityLockError

    n, _, _ = node
    for model, match in (
        (
            StandInModel("WAN21", 16),
            r"DriftSeedSearch cannot sample with this MODEL \(WAN21.*supported model",
        ),
        (object(), "not a ComfyUI MODEL"),
    ):
        with pytest.raises(IdentityLockError, match=match) as exc:
            _run(n, reference, model=model)
        assert "\n" not in str(exc.value) and "Traceback" not in str(exc.value)
    assert n.sampling.batches == []  # refused before any sampling
    flux2, _ = standin_family("flux2")
    with pytest.raises(IdentityLockError, match="connect the VAE made for this model"):
        _run(n, reference, model=flux2, vae=StandInVAE(16, 8))  # a FLUX.1 VAE on Flux.2


def test_reference_conditioning_guidance_and_model_patches_reach_the_sampler_unchanged(
    node, reference, photos
):
    """ReferenceLatent (FLUX.1 Kontext, Flux.2), TextEncodeQwenImageEdit and FluxGuidance put their values in the
    conditioning; ModelSamplingFlux / AuraFlow patch the MODEL. The search passes both through untouched."""
    import copy

    import torch

    n, _, _ = node
    n.sampling = RecordingSampling(photos)
    ref_latents = [torch.randn(1, 16, 8, 8), torch.randn(1, 16, 6, 10)]
    positive = [
        [
            torch.randn(1, 7, 32),
            {
                "reference_latents": ref_latents,
                "guidance": 2.5,
                "reference_latents_method": "index",
                "pooled_output": torch.randn(1, 8),
            },
        ]
    ]
    negative = [[torch.zeros(1, 7, 32), {"reference_latents": ref_latents[:1], "guidance": 2.5}]]
    before = copy.deepcopy((positive, negative))
    model, vae = standin_family("qwen_image", model_options={"model_sampling_shift": 3.1})
    _run(n, reference, model=model, vae=vae, positive=positive, negative=negative, seed_list="1,4")
    seen = n.sampling.seen
    assert seen["positive"] is positive and seen["negative"] is negative and seen["model"] is model
    for got, want in zip((positive, negative), before):
        assert len(got) == len(want)
        for (t, d), (t0, d0) in zip(got, want):
            assert torch.equal(t, t0) and d.keys() == d0.keys()
            for k in d:
                v, v0 = d[k], d0[k]
                same = all(map(torch.equal, v, v0)) if isinstance(v, list) else (
                    torch.equal(v, v0) if isinstance(v, torch.Tensor) else v == v0)  # fmt: skip
                assert same, k
    assert model.model_options == {"model_sampling_shift": 3.1}


def test_connected_sigmas_reach_the_sampler_and_belong_to_the_resume_settings(node, reference, photos):
    """A scheduler's SIGMAS (Flux2Scheduler in the Flux.2 templates) go to the sampler as SamplerCustom uses them;
    without them the sampler gets no sigmas (steps/scheduler as before). They are part of the settings a resumed
    search must share."""
    import torch
    from identitylock.core.errors import IdentityLockError

    n, _, _ = node

    class SigmaSampling(PhotoSampling):
        def sample(self, *args, sigmas=None):
            self.sigmas = sigmas
            return super().sample(*args)

    n.sampling = SigmaSampling(photos)
    _run(n, reference, seed_list="1", results_name="")
    assert n.sampling.sigmas is None
    sigmas = torch.tensor([1.0, 0.75, 0.4, 0.0])
    out = _run(n, reference, seed_list="1,4", results_name="with_sigmas")
    assert n.sampling.sigmas is None and json.loads(out["result"][4])["locked"] == 2
    with pytest.raises(IdentityLockError, match="other settings"):
        _run(n, reference, seed_list="1,4,6", results_name="with_sigmas", resume=True, sigmas=sigmas)
    out = _run(n, reference, seed_list="1,4,6", results_name="sigma_run", sigmas=sigmas)
    assert n.sampling.sigmas is sigmas and json.loads(out["result"][4])["locked"] == 3
