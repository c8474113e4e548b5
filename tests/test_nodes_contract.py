"""Every node follows ComfyUI's classic (V1) contract; the foundation nodes run on ComfyUI-shaped tensors."""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

import identitylock
import numpy as np
import pytest
import torch
from identitylock.core.images import load_image

NODES = identitylock.NODE_CLASS_MAPPINGS
REQUIRED_NODES = {"FaceCropPrep", "IdentityEmbed"}
COMFY_TYPES_OK = {
    "IMAGE",
    "MASK",
    "LATENT",
    "MODEL",
    "CLIP",
    "VAE",
    "CONDITIONING",
    "CLIP_VISION",
    "STRING",
    "INT",
    "FLOAT",
    "BOOLEAN",
}


def test_foundation_nodes_are_registered_with_display_names():
    assert REQUIRED_NODES <= set(NODES)
    for name in NODES:
        assert name in identitylock.NODE_DISPLAY_NAME_MAPPINGS


@pytest.mark.parametrize("name", sorted(NODES))
def test_node_contract(name):
    cls = NODES[name]
    spec = cls.INPUT_TYPES()
    assert isinstance(spec, dict) and "required" in spec
    for section in ("required", "optional"):
        for input_name, entry in spec.get(section, {}).items():
            assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, (name, input_name)
            kind = entry[0]
            assert isinstance(kind, (str, list)), (name, input_name)
            opts = entry[1] if len(entry) == 2 else {}
            assert opts.get("tooltip"), f"{name}.{input_name} has no tooltip"
            if kind in ("INT", "FLOAT") and "default" in opts:
                assert opts.get("min", -np.inf) <= opts["default"] <= opts.get("max", np.inf), (
                    name,
                    input_name,
                )
            if isinstance(kind, list) and "default" in opts:
                assert opts["default"] in kind, (name, input_name)
    assert isinstance(cls.RETURN_TYPES, tuple)
    names = getattr(cls, "RETURN_NAMES", None)
    assert names is None or len(names) == len(cls.RETURN_TYPES)
    assert callable(getattr(cls, cls.FUNCTION))
    assert cls.CATEGORY.startswith("IdentityLock")
    assert getattr(cls, "DESCRIPTION", ""), f"{name} has no DESCRIPTION"


def test_pack_imports_fast_without_heavy_modules():
    code = (
        "import sys, time; t=time.time(); import identitylock; dt=time.time()-t; "
        "heavy=[m for m in ('dlib','cv2','diffusers','transformers','sklearn','insightface','onnxruntime','plotly') if m in sys.modules]; "
        "print(dt, heavy)"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=1)
    assert out[1].strip() == "[]", f"heavy modules imported at pack import: {out[1]}"


def test_pack_loads_from_a_custom_nodes_folder_of_any_name(tmp_path):
    """ComfyUI imports the cloned folder by path under an arbitrary module name."""
    import importlib.util

    repo = Path(identitylock.__file__).resolve().parent
    link = tmp_path / "ComfyUI-IdentityLock-main"
    link.symlink_to(repo, target_is_directory=True)
    spec = importlib.util.spec_from_file_location(
        "ComfyUI-IdentityLock-main", link / "__init__.py", submodule_search_locations=[str(link)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        assert REQUIRED_NODES <= set(module.NODE_CLASS_MAPPINGS)
        assert module.WEB_DIRECTORY == "./web"
    finally:
        for key in [k for k in sys.modules if k.startswith("ComfyUI-IdentityLock-main")]:
            del sys.modules[key]


def _tensor(*paths):
    """A ComfyUI batch (one size for all): pad to the largest photo; cropping to the smallest cut faces off."""
    arrs = [load_image(p) for p in paths]
    h = max(a.shape[0] for a in arrs)
    w = max(a.shape[1] for a in arrs)
    batch = np.full((len(arrs), h, w, 3), 128, np.uint8)
    for i, a in enumerate(arrs):
        batch[i, : a.shape[0], : a.shape[1]] = a
    return torch.from_numpy(batch.astype(np.float32) / 255.0)


def test_face_crop_prep_node_on_comfy_tensors(faces_dir):
    node = NODES["FaceCropPrep"]()
    images = _tensor(faces_dir / "london004_1.jpg", faces_dir / "london005_1.jpg")
    t = time.time()
    out_images, masks, meta_json = node.prepare(
        images, 256, 0.4, "grabcut", "#808080", "largest", "main + augmentations", "-5, 5", "0.6", "dlib"
    )
    assert out_images.shape == (2 * 4, 256, 256, 3) and out_images.dtype == torch.float32
    assert masks.shape == (8, 256, 256)
    assert 0.0 <= float(out_images.min()) and float(out_images.max()) <= 1.0
    meta = json.loads(meta_json)
    assert [m["variant"] for m in meta[:4]] == ["main", "rotate_-5", "rotate_+5", "crop_60"]
    assert time.time() - t < 60
    single, _, _ = node.prepare(images, 128, 0.4, "none", "#FFFFFF", "largest", "main only", "", "", "dlib")
    assert single.shape == (2, 128, 128, 3)


def test_face_crop_prep_node_names_the_faceless_batch_index(faces_dir):
    from identitylock.core.errors import NoFaceError

    node = NODES["FaceCropPrep"]()
    images = _tensor(faces_dir / "lisa_1.jpg", faces_dir / "noface_1.jpg")
    with pytest.raises(NoFaceError, match="batch index 1"):
        node.prepare(images, 128, 0.4, "none", "#FFFFFF", "largest", "main only", "", "", "dlib")


def test_identity_embed_node_and_nan_input(faces_dir):
    from identitylock.core.errors import ImageInputError
    from identitylock.core.identity import IdentityReference

    node = NODES["IdentityEmbed"]()
    out = node.embed(
        _tensor(faces_dir / "lisa_1.jpg", faces_dir / "lisa_4.jpg", faces_dir / "noface_2.jpg"),
        "dlib",
        "skip",
    )
    ref, summary = out["result"]
    assert isinstance(ref, IdentityReference) and len(ref.vectors) == 2
    assert "Skipped (no face): batch indices [2]" in summary
    bad = torch.full((1, 128, 128, 3), float("nan"))
    with pytest.raises(ImageInputError, match="NaN"):
        node.embed(bad, "dlib", "error")
    with pytest.raises(ImageInputError, match="empty"):
        node.embed(torch.zeros((0, 128, 128, 3)), "dlib", "error")


def test_identity_save_name_cannot_escape_the_folder():
    mod = importlib.import_module("identitylock.nodes.identity")
    for bad in ("../evil", "a/b", "..", ""):
        with pytest.raises(ValueError):
            mod.identity_save_path(bad)


def test_an_empty_result_is_an_empty_batch_not_a_black_image():
    """SaveImage writes nothing for a [0, H, W, C] batch; a black 64x64 placeholder was saved and counted."""
    from identitylock.nodes._comfy import numpy_to_image, numpy_to_mask

    assert tuple(numpy_to_image([]).shape) == (0, 64, 64, 3)
    assert tuple(numpy_to_mask([]).shape) == (0, 64, 64)
    one = numpy_to_image([np.full((8, 8, 3), 255, np.uint8)])
    assert tuple(one.shape) == (1, 8, 8, 3) and float(one.max()) == 1.0
