"""Issue 12: what a training run decides on and what it writes can be trusted.

- validation holds out whole source photos (FaceCropPrep's variants of one photo never sit on both sides),
  in the node (FaceCropPrep's metadata_json) and the CLI (a folder written by ``identitylock prep``);
- the file written with an identity probe holds the lowest-drift state, and says which probes it saw;
- the default preset fits a consumer GPU and every preset's size is computed from the real UNet shape;
- a malformed custom phase is one sentence, never a TypeError.

Tiny random-weight models on lisa_* crops only (CC0, per SOURCES.md).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from identitylock.core.cli import main
from identitylock.core.errors import IdentityLockError, ImageInputError
from identitylock.core.training import dataset as ds
from identitylock.core.training import diffusers_backend as db
from identitylock.core.training import job
from identitylock.core.training.lora_format import read_metadata, save_lora
from identitylock.core.training.network import LoRANetwork, target_linears
from identitylock.core.training.phases import Phase, Schedule
from identitylock.core.training.presets import (
    DEFAULT_PRESET,
    PRESETS,
    TARGETS,
    TrainConfig,
    footprint_text,
    lora_param_count,
    preset_footprint,
)
from identitylock.core.training.report import lora_metadata, report_text
from identitylock.core.training.trainer import Trainer

PHASES = json.dumps([{"name": "ONLY", "lr": 1e-3, "alpha": 4, "min_steps": 3, "max_steps": 3}])


def photo_variants(n_photos: int, per_photo: int = 6, size: int = 16) -> tuple[list[np.ndarray], list[int]]:
    """FaceCropPrep-shaped batch: per photo its main image then variants; row 0 of channel 0 holds the photo id."""
    rng = np.random.default_rng(0)
    images, photo = [], []
    for p in range(n_photos):
        base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        for v in range(per_photo):
            im = np.rot90(base, v % 4).copy() if v < 4 else base[::-1].copy()
            im[0, :, 0] = p  # the whole first row: survives the flip augmentation
            images.append(im)
            photo.append(p)
    return images, photo


def ids(ims: list[np.ndarray]) -> torch.Tensor:
    """'Encoder' whose latent is the photo id, so the test sees which photo landed where."""
    return torch.tensor([[float(im[0, 0, 0])] for im in ims])


# -- the split by source photo ---------------------------------------------------------------------------------


def test_prepare_data_never_puts_variants_of_one_photo_on_both_sides():
    """Old behaviour: a random 80/20 split of the 30 images put rotated copies of training photos in validation."""
    images, photo = photo_variants(5)
    meta = json.dumps([{"source_index": p, "variant": "main"} for p in photo])
    sources = ds.sources_from_prep_metadata(meta, len(images))
    for seed in range(20):
        data = ds.prepare_data(images, ["c"] * len(images), ids, lambda caps: torch.zeros(len(caps), 1),
                               seed=seed, sources=sources, flip=True)  # fmt: skip
        train = set(data.latents[:, 0].int().tolist())
        val = set(data.val_latents[:, 0].int().tolist())
        assert train and val and not train & val, (seed, train, val)
        assert data.val_latents.shape[0] == 6  # the held-out photo with all its variants
        assert data.split == {
            "by": "source photo",
            "train": [f"photo {p}" for p in sorted(train)],
            "validation": [f"photo {p}" for p in sorted(val)],
        }


def test_one_source_photo_is_refused_and_bad_metadata_is_one_sentence():
    images, photo = photo_variants(1)
    with pytest.raises(ImageInputError, match="variants of one photo"):
        ds.split_by_source([str(p) for p in photo])
    for bad, why in [("{", "not FaceCropPrep"), ("[1, 2]", "not FaceCropPrep"), ("[{}]", "describes 1 images"),
                     (json.dumps([{"variant": "main"}] * 6), "no source_index")]:  # fmt: skip
        with pytest.raises(ImageInputError, match=why):
            ds.sources_from_prep_metadata(bad, 6)
    assert ds.sources_from_prep_metadata("", 6) is None


def test_cli_folder_sources_from_prep_names_and_metadata(tmp_path):
    from PIL import Image

    img = np.zeros((8, 8, 3), np.uint8)
    names = ["ann_main", "ann_rotate_-10", "ann_rotate_+5", "ann_crop_60", "bob_main", "bob_rotate_-5",
             "plain_photo", "x1", "x2"]  # fmt: skip
    for n in names:
        Image.fromarray(img).save(tmp_path / f"{n}.png")
    # identitylock prep's record of where each output came from wins over the names (x1, x2: one photo)
    (tmp_path / "prep_metadata.json").write_text(
        json.dumps([{"file": "/in/cat.jpg", "ok": True, "output": o} for o in ("x1.png", "x2.png")])
    )
    got = dict(zip(sorted(f"{n}.png" for n in names), ds.folder_sources(tmp_path)))
    assert got == {"ann_main.png": "ann", "ann_rotate_-10.png": "ann", "ann_rotate_+5.png": "ann",
                   "ann_crop_60.png": "ann", "bob_main.png": "bob", "bob_rotate_-5.png": "bob",
                   "plain_photo.png": "plain_photo", "x1.png": "cat.jpg", "x2.png": "cat.jpg"}  # fmt: skip
    (tmp_path / "prep_metadata.json").write_text("{broken")  # unreadable: the names still group
    assert ds.folder_sources(tmp_path)[:2] == ["ann", "ann"]


def test_cli_refuses_a_folder_made_from_one_photo(tmp_path, capsys):
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for v in ("main", "rotate_-5", "rotate_+5", "crop_60"):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(imgs / f"lisa_{v}.png")
    rc = main(["train", "--images", str(imgs), "--model", str(tmp_path / "never_loaded"), "--trigger", "lsa",
               "--out", str(tmp_path / "o.safetensors")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "variants of one photo" in err and "Traceback" not in err
    assert not list(tmp_path.glob("o.safetensors*"))


# -- the identity probe picks the file ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, faces_dir):
    from identitylock.core.images import load_image
    from identitylock.core.training.tiny import tiny_components

    comps = tiny_components(0, tmp_path_factory.mktemp("tok"))
    crops = [
        ds.resize_square(ds.centre_square(load_image(f)), 64) for f in sorted(faces_dir.glob("lisa_*.jpg"))
    ]
    data = ds.prepare_data(
        crops,
        ds.make_captions(len(crops), "lsaperson"),
        lambda ims: db.encode_images(comps["vae"], ims),
        lambda cs: db.encode_text(comps["tokenizer"], comps["text_encoder"], cs),
    )
    return comps, data


def test_saved_lora_holds_the_lowest_drift_state_not_the_last(tiny, tmp_path):
    """Before: the kept state shared memory with the live CPU parameters, so the "best" file was the last state."""
    comps, data = tiny
    cfg = TrainConfig(rank=4, alpha=4, schedule=Schedule([Phase("A", lr=5e-3, alpha=4, min_steps=8, max_steps=8)],
                      adaptive=False), val_every=0, probe_every=2)  # fmt: skip
    net = LoRANetwork(cfg.rank, cfg.alpha, seed=1)
    net.attach_hooks(comps["unet"], TARGETS[cfg.target_modules])
    seen: dict[int, dict] = {}
    drifts = iter([[0.5, 0.6], [0.2, 0.3], [0.4, 0.4], [0.45, 0.5]])  # best: the 2nd probe (step 4)

    def probe():
        seen[len(seen) * 2 + 2] = {k: v.clone() for k, v in net.kohya_state_dict().items()}
        return next(drifts)

    tr = Trainer(net, db.DiffusersBackend(comps["unet"], comps["scheduler"]), data, cfg, probe=probe)
    try:
        res = tr.run()
        final = {k: v.clone() for k, v in net.kohya_state_dict().items()}
    finally:
        net.detach_hooks()
    state, extra = job.lora_to_save(net, res)
    path = save_lora(
        tmp_path / "l.safetensors", state, lora_metadata(res, cfg, "lsa", "h", split=data.split, **extra)
    )
    from safetensors.torch import load_file

    saved = load_file(path)
    assert all(torch.equal(saved[k], seen[4][k]) for k in saved)
    assert any(not torch.equal(saved[k], final[k]) for k in saved if k.endswith("lora_up.weight"))
    meta = read_metadata(path)
    assert meta["saved_step"] == 4 and [p["step"] for p in meta["probes"]] == [2, 4, 6, 8]
    assert meta["probes"][1]["drifts"] == [0.2, 0.3] and meta["split"] == data.split
    report = report_text(res, cfg, str(path), data.split, extra.get("selected"))
    assert "4 A: 0.200, 0.300 -> 0.250" in report and "saved weights: best identity probe at step 4" in report
    assert "validated on " + ", ".join(data.split["validation"]) in report


# -- presets --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_preset_parameter_counts_match_the_real_sd15_unet(target):
    """The tooltip/docs numbers come from a formula; it must equal the LoRA on SD1.5's actual modules."""
    from diffusers import UNet2DConditionModel
    from identitylock.core.training.tiny import SD15_UNET_CONFIG, TINY_UNET_CONFIG

    for config in (SD15_UNET_CONFIG, TINY_UNET_CONFIG):
        with torch.device("meta"):
            unet = UNet2DConditionModel(**config)
        real = sum(m.in_features + m.out_features for _, m in target_linears(unet, TARGETS[target]))
        assert lora_param_count(7, target, config) == 7 * real > 0
    # the numbers issue 12 quotes for the seed's rank-512 default: 191.5 M params, about 2.1 GiB of state
    seed = preset_footprint("EXP_FACIAL_UNET_FOCUS_HIGH")
    assert round(seed["params"] / 1e6, 1) == 191.5 and round(seed["state_bytes"] / 2**30, 1) == 2.1


def test_default_preset_fits_a_consumer_gpu_and_the_seed_presets_stay():
    from identitylock.core.families import FAMILIES
    from identitylock.nodes import train as node_mod

    spec = node_mod.LoRATrainAdaptive.INPUT_TYPES()["required"]["preset"]
    # the default is AUTO: each family's preset for a 24 GB card (SD1.x: the old default, FACE_RANK32)
    assert spec[1]["default"] == "AUTO" == node_mod.PRESET_NAMES[0]
    assert FAMILIES["sd15"].default_preset == DEFAULT_PRESET
    assert set(node_mod.PRESET_NAMES) == set(PRESETS) | {"AUTO"}
    for fam in FAMILIES.values():
        assert PRESETS[fam.default_preset].rank <= 32
        assert preset_footprint(fam.default_preset)["state_bytes"] < 2**30
    for name in PRESETS:
        assert f"{name}: {footprint_text(name)}" in spec[1]["tooltip"]
    from identitylock.core.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    assert train.get_default("preset") == "auto"


# -- custom phases: one sentence -------------------------------------------------------------------------------

BAD_PHASES = {
    "missing lr": '[{"name": "A", "alpha": 4}]',  # was: TypeError: missing 1 required positional argument
    "missing everything": "[{}]",
    "negative weight decay": '[{"name": "A", "lr": 1e-4, "alpha": 4, "weight_decay": -1}]',  # torch, mid-run
    "zero huber delta": '[{"name": "A", "lr": 1e-4, "alpha": 4, "loss": "huber", "huber_delta": 0}]',
    "negative charbonnier eps": '[{"name": "A", "lr": 1e-4, "alpha": 4, "charbonnier_eps": -1}]',  # NaN loss
    "negative warmup": '[{"name": "A", "lr": 1e-4, "alpha": 4, "warmup_steps": -3}]',
}


def test_malformed_phases_are_one_sentence_in_the_node(tmp_path, monkeypatch):
    from identitylock.nodes import train as node_mod

    monkeypatch.setattr(node_mod, "output_directory", lambda: str(tmp_path / "output"))
    monkeypatch.setattr(node_mod, "_loras_dir", lambda: str(tmp_path / "loras"))
    monkeypatch.setattr(node_mod, "_phases_dir", lambda: str(tmp_path / "phases"))

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"touched .{name} before the inputs were checked")

    good = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    one_photo = json.dumps([{"source_index": 0}] * 3)
    cases = {**{k: {"phases_json": v} for k, v in BAD_PHASES.items()},
             "one source photo": {"prep_metadata": one_photo},
             "metadata of another batch": {"prep_metadata": json.dumps([{"source_index": 0}] * 7)}}  # fmt: skip
    for name, change in cases.items():
        kw = dict(images=good, trigger_word="lsa", lora_name="x", preset="TINY_TEST", schedule="adaptive", seed=0,
                  phases_json=PHASES, **{k: v for k, v in change.items() if k != "phases_json"})  # fmt: skip
        kw["phases_json"] = change.get("phases_json", PHASES)
        with pytest.raises(IdentityLockError) as err:
            node_mod.LoRATrainAdaptive().train(Untouchable(), Untouchable(), Untouchable(), **kw)
        assert "\n" not in str(err.value), name
    assert not (tmp_path / "output").exists() and not (tmp_path / "loras").exists()


def test_malformed_phases_are_one_sentence_in_the_cli(tmp_path, capsys):
    for name, text in BAD_PHASES.items():
        rc = main(["train", "--images", str(tmp_path), "--model", str(tmp_path / "m"), "--trigger", "lsa",
                   "--out", str(tmp_path / "o.safetensors"), "--phases", text])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("error: phase"), (name, err)


def test_node_probes_whenever_an_identity_is_wired(tmp_path, monkeypatch):
    """Before: probe_every defaulted to 0, so the bundled workflow (identity wired) never probed and saved the last
    state. Now 0 means every job.AUTO_PROBE_EVERY steps with an identity, off without one."""
    from identitylock.nodes import train as node_mod

    monkeypatch.setattr(node_mod, "output_directory", lambda: str(tmp_path / "output"))
    monkeypatch.setattr(node_mod, "_loras_dir", lambda: str(tmp_path / "loras"))
    seen = []

    def fake_train(self, model, clip, vae, arrays, captions, cfg, *rest, **kw):
        seen.append(cfg.probe_every)
        raise RuntimeError("stop after the config")

    monkeypatch.setattr(node_mod.LoRATrainAdaptive, "_train", fake_train)
    images = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    sd15_model = SimpleNamespace(model=SimpleNamespace(model_config=type("SD15", (), {})()))  # stand-in MODEL
    for identity in (object(), None):
        with pytest.raises(RuntimeError, match="stop after"):
            node_mod.LoRATrainAdaptive().train(sd15_model, None, None, images, "lsa", "x", "TINY_TEST", "adaptive",
                                               0, identity=identity)  # fmt: skip
    assert seen == [job.AUTO_PROBE_EVERY, 0] and job.probe_interval(7, True) == 7
    with pytest.raises(IdentityLockError, match="--identity"):
        job.probe_interval(5, False, "--identity")


def test_facecropprep_metadata_groups_its_own_variants(faces_dir):
    """The real FaceCropPrep output (two photos, default augmentations) gives the trainer one source per photo."""
    from identitylock.core.images import load_image
    from identitylock.nodes._comfy import numpy_to_image
    from identitylock.nodes.prep import FaceCropPrep

    photos = [
        ds.resize_square(ds.centre_square(load_image(faces_dir / f"lisa_{i}.jpg")), 256) for i in (1, 2)
    ]
    images, _, meta = FaceCropPrep().prepare(numpy_to_image(photos), 64, 0.4, "none", "#FFFFFF", "largest",
                                             "main + augmentations", "-10, -5, 5, 10", "0.6", "dlib")  # fmt: skip
    sources = ds.sources_from_prep_metadata(meta, images.shape[0])
    assert sources == ["photo 0"] * 6 + ["photo 1"] * 6


def test_bundled_training_workflow_wires_the_grouping_and_two_photos():
    """workflows/api/02: the trainer gets FaceCropPrep's metadata_json, and FaceCropPrep gets two photos."""
    from pathlib import Path

    from identitylock.nodes.prep import FaceCropPrep

    g = json.loads(
        (Path(__file__).resolve().parents[1] / "workflows/api/02_train_identity_lora.json").read_text()
    )
    train = next(v["inputs"] for v in g.values() if v["class_type"] == "LoRATrainAdaptive")
    prep_id = train["images"][0]
    assert g[prep_id]["class_type"] == "FaceCropPrep"
    assert train["prep_metadata"] == [prep_id, FaceCropPrep.RETURN_NAMES.index("metadata_json")]
    batch = g[g[prep_id]["inputs"]["images"][0]]
    assert batch["class_type"] == "ImageBatch"
    assert all(g[batch["inputs"][k][0]]["class_type"] == "LoadImage" for k in ("image1", "image2"))


def test_probes_without_any_face_do_not_choose_the_file():
    """Every probe without a face scores the no-face drift 1.0; the "best" was then simply the first probe (an early,
    under-trained state) and replaced the final weights. Now the final weights stay and the report says why."""
    from types import SimpleNamespace

    from identitylock.core.training.probe import ProbeTracker

    net = LoRANetwork(2, 8)
    net.add("lora_unet_x", 4, 4)
    final = net.kohya_state_dict()
    tracker = ProbeTracker()
    early = {k: torch.full_like(v, 0.5) for k, v in final.items()}
    tracker.record(200, "COARSE", [None, None], state_fn=lambda: early)
    tracker.record(400, "MID", [None, float("nan")], state_fn=lambda: {})
    result = SimpleNamespace(probes=tracker, steps=450)
    state, extra = job.lora_to_save(net, result)
    assert all(torch.equal(state[k], final[k]) for k in final) and "selected" not in extra
    lines = "\n".join(report_probe_lines(result, extra))
    assert "saved weights: final step 450 (no probe sample showed a face" in lines


def report_probe_lines(result, extra):
    from identitylock.core.training.report import probe_lines

    return probe_lines(result, extra.get("selected"), extra.get("probe_note"))


def test_cli_trains_on_a_prep_folder_and_records_the_split(tmp_path, faces_dir, capsys):
    """`identitylock train` on a folder named like `identitylock prep` output: the split is by source photo."""
    from identitylock.core.diffusion import build_tiny_pipeline
    from identitylock.core.images import load_image
    from PIL import Image

    model = tmp_path / "tiny_sd"
    build_tiny_pipeline(0, tmp_path / "tok").save_pretrained(model)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in (1, 2, 3):
        crop = ds.resize_square(ds.centre_square(load_image(faces_dir / f"lisa_{i}.jpg")), 64)
        for variant, im in (
            ("main", crop),
            ("rotate_+5", np.rot90(crop).copy()),
            ("crop_60", crop[::-1].copy()),
        ):
            Image.fromarray(im).save(imgs / f"lisa{i}_{variant}.png")
    out = tmp_path / "l.safetensors"
    rc = main(["train", "--images", str(imgs), "--model", str(model), "--trigger", "lsa", "--out", str(out),
               "--preset", "TINY_TEST", "--phases", PHASES, "--resolution", "64", "--device", "cpu"])  # fmt: skip
    report = capsys.readouterr().out
    assert rc == 0
    split = read_metadata(out)["split"]
    assert split["by"] == "source photo" and len(split["validation"]) == 1
    assert sorted(split["train"] + split["validation"]) == ["lisa1", "lisa2", "lisa3"]
    assert f"validated on {split['validation'][0]}" in report
