"""Drift scoring and gating inside the bundled templates, executed node by node with real photos as the renders.

Every API template in workflows/api/ that holds DriftSeedSearch is run in topological order, as ComfyUI runs a
prompt: IdentityLock's own nodes (FaceCropPrep, IdentityEmbed, IdentityLoad, DriftSeedSearch, IdentityMetrics)
are the real classes; every ComfyUI / IPAdapter node is a CLEARLY LABELLED STAND-IN (``STANDIN_NODES`` below)
that returns a value of the right type and family (tests/comfy_standins.py: MODEL with the family's
``supported_models`` class name and latent format, VAE, LATENT). ComfyUI is not installable in CI, and random
weights render noise, so the "render" is where real photos stand in: DriftSeedSearch's sampler / decoder
(``DriftSeedSearch.sampling``) returns, per seed, a photo of the template's person (lisa_*) or of a stranger
(london*). LoadImage gives lisa_1 (and lisa_2 as the second reference); template 01 makes ``person.safetensors``
for the templates that IdentityLoad it. The real ComfyUI run is scripts/check_generation_families.py.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfy_standins import StandInVAE, standin_encode, standin_family  # noqa: E402

API = Path(__file__).resolve().parents[1] / "workflows" / "api"
# Every template holding DriftSeedSearch, with its family (none is excluded: each runs this way).
TEMPLATES = {
    "08_seed_discovery": "sd15",
    "21_sdxl_lora_seed_search": "sdxl",
    "22_sdxl_lora_ipadapter_plus_face": "sdxl",
    "23_sdxl_lora_ipadapter_faceid_v2": "sdxl",
    "31_flux1_lora_seed_search": "flux1",
    "32_flux1_kontext_reference": "flux1",
    "41_flux2_lora_seed_search": "flux2",
    "42_flux2_multi_reference": "flux2",
    "51_zimage_lora_seed_search": "zimage",
    "61_qwen_image_lora_seed_search": "qwen_image",
    "62_qwen_image_edit_reference": "qwen_image",
}
# LoadImage file name in the templates -> the photo it gives here (the template's person).
LOADED = {"reference_face.png": "lisa_1.jpg", "reference_face_2.png": "lisa_2.jpg"}
# Seed offset from the template's seed_start -> the photo "rendered" for it. The templates stop after 4 locked
# renders: the 4th lisa render is at offset 6, so offsets 7+ (strangers) must never be sampled.
RENDERS = ["london001_1.jpg", "lisa_3.jpg", "london004_1.jpg", "lisa_2.jpg", "lisa_4.jpg", "london025_1.jpg",
           "lisa_3.jpg"]  # fmt: skip
LAST_RENDER = "london042_2.jpg"
PHOTO_SIDE = 384


def test_every_seed_search_template_is_covered():
    found = {p.stem for p in API.glob("*.json") if "DriftSeedSearch" in p.read_text()}
    assert found == set(TEMPLATES)


# ---------------------------------------------------------------- the executor (ComfyUI's prompt order)


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def topological_order(api: dict) -> list[str]:
    """Node ids so that every node comes after the nodes its links read from (a cycle is a template error)."""
    order, state = [], {}

    def visit(nid: str) -> None:
        if state.get(nid) == "done":
            return
        assert state.get(nid) != "open", f"cycle through node {nid}"
        state[nid] = "open"
        for v in api[nid]["inputs"].values():
            if _is_link(v):
                assert v[0] in api, f"node {nid} links to missing node {v[0]}"
                visit(v[0])
        state[nid] = "done"
        order.append(nid)

    for nid in sorted(api, key=int):
        visit(nid)
    return order


def _is_blocker(v) -> bool:
    return type(v).__name__ in ("Blocked", "ExecutionBlocker")


def execute(api: dict, standins: dict, setup=None) -> dict:
    """Run every node; returns node id -> output tuple. IdentityLock's classes run for real; other class types
    come from ``standins``. As in ComfyUI, a node fed a blocker does not run and passes the blocker on."""
    from identitylock.nodes import NODE_CLASS_MAPPINGS

    outputs: dict[str, tuple] = {}
    for nid in topological_order(api):
        node = api[nid]
        kwargs = {k: (outputs[v[0]][v[1]] if _is_link(v) else v) for k, v in node["inputs"].items()}
        blocker = next((v for v in kwargs.values() if _is_blocker(v)), None)
        if blocker is not None:
            outputs[nid] = (blocker,) * 8
            continue
        cls_name = node["class_type"]
        if cls_name in NODE_CLASS_MAPPINGS:
            cls = NODE_CLASS_MAPPINGS[cls_name]
            inst = cls()
            if setup is not None:
                setup(cls_name, inst)
            if "unique_id" in cls.INPUT_TYPES().get("hidden", {}):
                kwargs["unique_id"] = nid
            out = getattr(inst, cls.FUNCTION)(**kwargs)
            out = out["result"] if isinstance(out, dict) else out
        else:
            assert cls_name in standins, f"node {nid}: no stand-in for ComfyUI node {cls_name}"
            out = standins[cls_name](**kwargs)
        outputs[nid] = tuple(out)
    return outputs


# ---------------------------------------------------------------- CLEARLY LABELLED STAND-INS for ComfyUI nodes


def _photo(faces_dir: Path, name: str) -> np.ndarray:
    """A real photo, centre square crop at PHOTO_SIDE (keeps the test fast; ImageBatch needs one size)."""
    from identitylock.core.images import load_image, resize_long_side

    img = load_image(faces_dir / name)
    side = min(img.shape[:2])
    y0, x0 = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    return resize_long_side(np.ascontiguousarray(img[y0 : y0 + side, x0 : x0 + side]), PHOTO_SIDE)[0]


def _image(arr: np.ndarray):
    import torch

    return torch.from_numpy(arr.astype(np.float32) / 255.0)[None]


def _patched(model, step):
    """A MODEL stand-in patched by a node: a copy whose model_options list the patches in order (ComfyUI clones
    the ModelPatcher the same way, so the upstream MODEL is left as it was)."""
    clone = type(model)(model.config_name, model.channels, model.concat_keys, dict(model.model_options))
    clone.model_options["standin_patches"] = [*model.model_options.get("standin_patches", []), step]
    return clone


def _cond(tag, tensor=None, **extra):
    """CONDITIONING stand-in in ComfyUI's shape: a list of [tensor, dict]."""
    import torch

    return [[torch.ones(1, 4, 8) if tensor is None else tensor, {"standin_text": tag, **extra}]]


def _with(conditioning, key, value, append=False):
    """node_helpers.conditioning_set_values, stand-in: new list, new dicts, value set or appended."""
    out = []
    for t, d in conditioning:
        d = dict(d)
        d[key] = [*d.get(key, []), *value] if append else value
        out.append([t, d])
    return out


def comfy_standins(family: str, faces_dir: Path, loaded: dict) -> dict:
    """ComfyUI / IPAdapter node stand-ins for one family; ``loaded`` records what LoadImage returned."""
    import torch

    model, vae = standin_family(family)
    channels, down = vae.latent_channels, vae.downscale

    def load_image(image, **_):
        pixels = _image(_photo(faces_dir, LOADED[image]))
        loaded.setdefault(image, pixels)
        return pixels, torch.zeros(1, PHOTO_SIDE, PHOTO_SIDE)

    def empty(width, height, batch_size, d=down):
        return ({"samples": torch.zeros(batch_size, channels, height // d, width // d)},)

    def batch(image1, image2):
        assert image1.shape[1:] == image2.shape[1:], "stand-in ImageBatch: photos of one size"
        return (torch.cat([image1, image2]),)

    def zero_out(conditioning):  # ComfyUI's ConditioningZeroOut keeps the dict (reference latents included)
        return ([[torch.zeros_like(t), dict(d)] for t, d in conditioning],)

    def qwen_edit(clip, prompt, vae, image1=None, **_):
        refs = [standin_encode(vae, image1)] if image1 is not None else []
        return (_cond(prompt, reference_latents=refs),)

    def recorder(kind):
        def run(**kw):
            saved.append((kind, kw))
            return ()

        return run

    saved: list = []
    table = {
        "CheckpointLoaderSimple": lambda ckpt_name: (model, "CLIP stand-in", vae),
        "UNETLoader": lambda unet_name, weight_dtype: (model,),
        "DualCLIPLoader": lambda **kw: ("CLIP stand-in",),
        "CLIPLoader": lambda **kw: ("CLIP stand-in",),
        "VAELoader": lambda vae_name: (vae,),
        "LoraLoader": lambda model, clip, lora_name, **kw: (_patched(model, ("LoraLoader", lora_name)), clip),
        "LoraLoaderModelOnly": lambda model, lora_name, **kw: (
            _patched(model, ("LoraLoaderModelOnly", lora_name)),
        ),
        "ModelSamplingAuraFlow": lambda model, shift: (_patched(model, ("ModelSamplingAuraFlow", shift)),),
        "CFGNorm": lambda model, strength: (_patched(model, ("CFGNorm", strength)),),
        "IPAdapterUnifiedLoader": lambda model, preset, **kw: (
            _patched(model, ("IPAdapterUnifiedLoader", preset)),
            {"standin_ipadapter": preset},
        ),  # fmt: skip
        "IPAdapterUnifiedLoaderFaceID": lambda model, preset, **kw: (
            _patched(model, ("IPAdapterUnifiedLoaderFaceID", preset)),
            {"standin_ipadapter": preset},
        ),  # fmt: skip
        "IPAdapterAdvanced": lambda model, ipadapter, image, weight, **kw: (
            _patched(model, ("IPAdapterAdvanced", weight)),
        ),  # fmt: skip
        "IPAdapterFaceID": lambda model, ipadapter, image, weight, **kw: (
            _patched(model, ("IPAdapterFaceID", weight)),
            image,
        ),  # fmt: skip
        "CLIPTextEncode": lambda text, clip: (_cond(text),),
        "FluxGuidance": lambda conditioning, guidance: (_with(conditioning, "guidance", guidance),),
        "ConditioningZeroOut": zero_out,
        "ReferenceLatent": lambda conditioning, latent: (
            _with(conditioning, "reference_latents", [latent["samples"]], append=True),
        ),  # fmt: skip
        "TextEncodeQwenImageEditPlus": qwen_edit,
        "LoadImage": load_image,
        # stand-ins that keep the size (ComfyUI picks a Kontext resolution / about one megapixel)
        "FluxKontextImageScale": lambda image: (image,),
        "ImageScaleToTotalPixels": lambda image, **kw: (image,),  # stand-in: keeps the size
        "ImageBatch": batch,
        "VAEEncode": lambda pixels, vae: ({"samples": standin_encode(vae, pixels)},),
        "EmptyLatentImage": lambda **kw: empty(**kw, d=8),
        "EmptySD3LatentImage": lambda **kw: empty(**kw, d=8),
        "EmptyFlux2LatentImage": lambda **kw: empty(**kw, d=16),
        # stand-in schedule (ComfyUI's Flux2Scheduler computes a resolution-dependent shift): steps + 1 sigmas
        "Flux2Scheduler": lambda steps, width, height: (torch.linspace(1.0, 0.0, steps + 1),),
        "SaveImage": recorder("SaveImage"),
        "PreviewImage": recorder("PreviewImage"),
        "PreviewAny": recorder("PreviewAny"),
    }
    table["_saved"] = saved
    return table


class PhotoRenders:
    """STAND-IN for ComfyUI's sampler + VAE decode (``DriftSeedSearch.sampling``): sample() returns one latent per
    seed holding the seed (float64: exact for 2**53) and records what reached it; decode() gives that seed's
    photo (RENDERS by offset from seed_start)."""

    def __init__(self, seed_start: int, photos: dict):
        self.seed_start, self.photos, self.calls = seed_start, photos, []

    def photo_for(self, seed: int) -> str:
        k = seed - self.seed_start
        return RENDERS[k] if 0 <= k < len(RENDERS) else LAST_RENDER

    def sample(self, model, seeds, latent, positive, negative, steps, cfg, sampler_name, scheduler, denoise,
               sigmas=None):  # fmt: skip
        import torch

        self.calls.append(dict(model=model, seeds=list(seeds), latent=latent, positive=positive,
                               negative=negative, steps=steps, cfg=cfg, denoise=denoise, sigmas=sigmas))  # fmt: skip
        shape = latent["samples"].shape[1:]
        return torch.stack([torch.full(shape, float(s), dtype=torch.float64) for s in seeds])

    def decode(self, vae, samples):
        import torch

        assert isinstance(vae, StandInVAE)
        seeds = [int(x.flatten()[0].item()) for x in samples]
        return torch.stack([_image(self.photos[self.photo_for(s)])[0] for s in seeds])


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def photos(faces_dir):
    return {n: _photo(faces_dir, n) for n in {*RENDERS, LAST_RENDER}}


@pytest.fixture(scope="module")
def comfy_dirs(tmp_path_factory):
    """A STAND-IN ``folder_paths`` module (ComfyUI's folder registry): models/identitylock and output in tmp."""
    import identitylock.nodes  # noqa: F401  (imported outside ComfyUI first: no folder registration)

    root = tmp_path_factory.mktemp("comfy")
    fp = types.ModuleType("folder_paths")
    fp.__doc__ = "STAND-IN for ComfyUI's folder_paths (tests/test_template_gating.py)"
    folders = {"identitylock": [str(root / "models" / "identitylock")]}
    fp.get_folder_paths = lambda name: folders.get(name, [])
    fp.output_dir = root / "output"  # each test points it at its own folder
    fp.get_output_directory = lambda: str(fp.output_dir)
    (root / "models" / "identitylock").mkdir(parents=True)
    mp = pytest.MonkeyPatch()
    mp.setitem(sys.modules, "folder_paths", fp)
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def person(comfy_dirs, faces_dir):
    """Template 01 run the same way: LoadImage (lisa_1) -> FaceCropPrep -> IdentityEmbed saves person.safetensors,
    the identity the seed-search templates IdentityLoad."""
    api = json.loads((API / "01_prep_and_embed.json").read_text())
    out = execute(api, comfy_standins("sd15", faces_dir, {}))
    embed = next(n for n, v in api.items() if v["class_type"] == "IdentityEmbed")
    path = comfy_dirs / "models" / "identitylock" / "person.safetensors"
    assert path.is_file() and "Saved:" in out[embed][1]
    return out[embed][0]


# ---------------------------------------------------------------- the test


_ANALYSES: dict = {}


def _expected_drift(photo: str, image: np.ndarray, reference) -> float:
    """What the face engine says for this render, measured here directly (never a hard-coded number)."""
    from identitylock.core.faces import analyze, get_engine
    from identitylock.nodes._comfy import image_to_numpy

    key = (photo, reference.backend, reference.model)
    if key not in _ANALYSES:  # one analysis per photo and engine (the renders repeat across templates)
        _ANALYSES[key] = analyze(image_to_numpy(_image(image))[0], get_engine(reference.backend), embed=True)
    res = _ANALYSES[key]
    return float(reference.drift_of(res.primary.embedding, res.backend, res.model))


def _upstream_models(api: dict, link) -> list:
    """Class types of the MODEL chain feeding a node, loader first (read from the template itself)."""
    chain, nid = [], link[0]
    while True:
        node = api[nid]
        chain.append(node["class_type"])
        if not _is_link(node["inputs"].get("model")):
            return chain[::-1]
        nid = node["inputs"]["model"][0]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_gates_real_faces(name, person, photos, comfy_dirs, faces_dir):
    import torch

    api = json.loads((API / f"{name}.json").read_text())
    family = TEMPLATES[name]
    sid = next(n for n, v in api.items() if v["class_type"] == "DriftSeedSearch")
    search = api[sid]["inputs"]
    renders = PhotoRenders(int(search["seed_start"]), photos)
    loaded: dict = {}
    standins = comfy_standins(family, faces_dir, loaded)

    def setup(cls_name, inst):
        if cls_name == "DriftSeedSearch":
            inst.sampling = renders

    sys.modules["folder_paths"].output_dir = output = comfy_dirs / "output" / name
    out = execute(api, standins, setup)
    assert set(out) == set(api) and not any(_is_blocker(v) for o in out.values() for v in o)  # every node ran

    # the identity: IdentityLoad of template 01's person, or the template's own LoadImage -> IdentityEmbed
    ident_node = search["identity"][0]
    reference = out[ident_node][0]
    if api[ident_node]["class_type"] == "IdentityLoad":
        assert np.allclose(reference.centroid, person.centroid)
    else:
        assert api[ident_node]["class_type"] == "IdentityEmbed" and len(reference.vectors) >= len(loaded)

    # gating: the seeds kept are exactly the lisa renders; the search stopped after the template's stop_after
    best_image, best_seed, best_latent, candidates, report, locked_images = out[sid][:6]
    rep = json.loads(report)
    sampled = [s for c in renders.calls for s in c["seeds"]]
    start, stop_after = int(search["seed_start"]), int(search["stop_after"])
    lisa_seeds = {s for s in sampled if renders.photo_for(s).startswith("lisa_")}
    assert len(lisa_seeds) == stop_after == 4 and rep["stopped_early"] is True
    assert sampled == list(range(start, start + len(RENDERS)))  # nothing after the 4th lock was rendered
    locked = {r["seed"] for r in rep["records"] if r["locked"]}
    assert locked == lisa_seeds
    assert best_seed in lisa_seeds and tuple(locked_images.shape) == (4, PHOTO_SIDE, PHOTO_SIDE, 3)
    assert float(best_latent["samples"].flatten()[0]) == best_seed
    assert search["save"] == "locked"  # DriftSeedSearch's own verify PNGs: one per locked seed
    saved_seeds = {
        int(p.name.split("_")[2]) for p in (output / "identitylock" / "seeds").glob("verify_seed_*.png")
    }
    assert saved_seeds == lisa_seeds

    # the drift of every seed is what the face engine gives for its photo (lisa under, strangers over)
    threshold = rep["threshold"]
    for r in rep["records"]:
        photo = renders.photo_for(r["seed"])
        assert r["drift"] == pytest.approx(_expected_drift(photo, photos[photo], reference), abs=1e-5), (
            name,
            photo,
        )
        assert (r["drift"] <= threshold) == photo.startswith("lisa_"), (name, photo, r["drift"], threshold)

    # what the template wires into DriftSeedSearch reaches the sampler untouched
    call = renders.calls[0]
    assert type(call["model"].model.model_config).__name__ == standin_family(family)[0].config_name
    patches = [p[0] for p in call["model"].model_options.get("standin_patches", [])]
    assert patches == _upstream_models(api, search["model"])[1:]
    assert (
        call["positive"] is out[search["positive"][0]][0]
        and call["negative"] is out[search["negative"][0]][0]
    )
    if "sigmas" in search:  # a connected scheduler's sigmas reach the sampler as they are (Flux.2 templates)
        assert call["sigmas"] is out[search["sigmas"][0]][0]
    else:
        assert call["sigmas"] is None
    if "latent" in search:  # the template's own latent (empty, or the encoded reference) is sampled from
        assert call["latent"] is out[search["latent"][0]][0]
    else:  # the family's empty latent, made by DriftSeedSearch
        _, vae = standin_family(family)
        shape = (1, vae.latent_channels, search["height"] // vae.downscale, search["width"] // vae.downscale)
        assert tuple(call["latent"]["samples"].shape) == shape
    assert (call["steps"], call["cfg"]) == (search["steps"], search["cfg"])
    _check_reference_conditioning(api, name, call, loaded)

    # the locked renders reach SaveImage; the candidates reach IdentityMetrics, which writes its report
    saves = [kw["images"] for kind, kw in standins["_saved"] if kind == "SaveImage"]
    assert len(saves) == 1 and torch.equal(saves[0], locked_images)
    metrics = [n for n, v in api.items() if v["class_type"] == "IdentityMetrics"]
    if metrics:
        _check_metrics_report(api, metrics[0], out, output, rep, candidates)


def _check_reference_conditioning(api, name, call, loaded):
    """Reference templates: the reference latents in the conditioning are the VAE encodings of the loaded
    reference photos, in the template's order, on both positive and (zeroed-out) negative."""
    wants = {
        "32_flux1_kontext_reference": (["reference_face.png"], 2.5),
        "42_flux2_multi_reference": (["reference_face.png", "reference_face_2.png"], 4.0),
        "62_qwen_image_edit_reference": (["reference_face.png"], None),
    }
    if name not in wants:
        assert all("reference_latents" not in d for _, d in call["positive"])
        return
    files, guidance = wants[name]
    import torch

    vae = standin_family("flux2" if name.startswith("42") else "flux1")[1]
    expected = [standin_encode(vae, loaded[f]) for f in files]
    conds = [call["positive"]] + ([call["negative"]] if not name.startswith("62") else [])
    for cond in conds:
        refs = cond[0][1]["reference_latents"]
        assert len(refs) == len(expected) and all(torch.equal(a, b) for a, b in zip(refs, expected)), name
        if guidance is not None:
            assert cond[0][1]["guidance"] == guidance
    assert not torch.count_nonzero(call["negative"][0][0]) or name.startswith("62")
    assert "keeping the same person" in call["positive"][0][1]["standin_text"]


def _check_metrics_report(api, nid, out, output, rep, candidates):
    """IdentityMetrics measured the searched candidates against the loaded reference photos: its report (html,
    csv, json) is written and counts the lisa renders as locked, the strangers as not."""
    import csv

    name = api[nid]["inputs"]["report_name"]
    folders = sorted((output / "identitylock_metrics").glob(f"{name}_*"))
    assert folders, out[nid][0]
    folder = folders[-1]
    assert (folder / f"{name}.html").is_file()
    data = json.loads((folder / f"{name}.json").read_text())
    group = data["groups"]["candidates"]
    assert group["n"] == group["n_face"] == len(candidates) == len(RENDERS)
    with open(folder / f"{name}.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["group"] == "candidates"]
    # candidates come best first: the 4 lisa renders, then the 3 strangers
    assert [r["locked"] for r in rows] == ["True"] * 4 + ["False"] * 3, rows
    assert group["lock_rate"] == pytest.approx(4 / 7, abs=1e-4)
