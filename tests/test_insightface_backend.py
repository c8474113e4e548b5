"""insightface backend loading path on generated ONNX stand-ins (no download; real insightface + onnxruntime)."""

from __future__ import annotations

import insightface  # noqa: F401  (the [insightface] extra; part of the test install)
import numpy as np
import onnx  # noqa: F401  (builds the stand-in models)
import pytest
from identitylock.core.errors import BackendMismatchError, ModelNotFoundError  # noqa: E402
from identitylock.core.faces import analyze, clear_engine_cache, get_engine  # noqa: E402
from identitylock.core.faces.insightface_backend import find_packs, resolve_pack  # noqa: E402
from identitylock.core.identity import IdentityReference  # noqa: E402
from identitylock.core.images import load_image  # noqa: E402

from .insightface_standins import make_pack  # noqa: E402


@pytest.fixture(scope="module")
def comfy_models(tmp_path_factory):
    """ComfyUI-style layouts: models/insightface/models/buffalo_l and the nested antelopev2/antelopev2 zip layout."""
    root = tmp_path_factory.mktemp("insightface")
    make_pack(root / "models" / "buffalo_l")
    make_pack(root / "models" / "antelopev2" / "antelopev2")
    return root


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.insightface from the machine
    monkeypatch.delenv("IDENTITYLOCK_INSIGHTFACE_DIR", raising=False)
    clear_engine_cache()
    yield
    clear_engine_cache()


def test_pack_discovery_handles_comfy_and_nested_layouts(comfy_models):
    packs = find_packs([comfy_models])
    assert packs["buffalo_l"] == comfy_models / "models" / "buffalo_l"
    assert packs["antelopev2"] == comfy_models / "models" / "antelopev2" / "antelopev2"
    assert resolve_pack(comfy_models / "models" / "antelopev2") == packs["antelopev2"]
    assert resolve_pack("antelopev2", [comfy_models]) == packs["antelopev2"]


def test_env_var_and_missing_pack_message(comfy_models, monkeypatch, tmp_path):
    with pytest.raises(ModelNotFoundError, match="backend='dlib'"):
        resolve_pack(None, [tmp_path / "empty"])
    monkeypatch.setenv("IDENTITYLOCK_INSIGHTFACE_DIR", str(comfy_models))
    assert resolve_pack().name == "buffalo_l"


def test_engine_detects_aligns_and_embeds_with_the_real_insightface_code(comfy_models, faces_dir):
    eng = get_engine(
        "insightface-package", model_dirs=[comfy_models]
    )  # "insightface" runs without the package
    info = eng.info()
    assert info["backend"] == "insightface" and info["model"] == "buffalo_l" and eng.dim == 512
    assert info["provider"] == "CPUExecutionProvider"  # what actually ran (no CUDA here)
    assert set(info["tasks"]) == {"detection", "recognition"}
    img = np.ascontiguousarray(load_image(faces_dir / "london004_1.jpg")[:640, :640])
    res = analyze(img, eng, rescue=False)
    assert res.found and res.backend == "insightface"
    f = res.primary
    assert f.landmark_scheme == "kps5" and set(f.keypoints) >= {
        "eye_fl",
        "eye_fr",
        "nose",
        "mouth_fl",
        "mouth_fr",
    }
    assert np.isclose(f.det_score, 0.95, atol=1e-3)
    assert f.embedding.shape == (512,) and np.isclose(np.linalg.norm(f.embedding), 1.0)
    assert abs(f.pose.yaw) < 5  # the stand-in's keypoints are symmetric
    other = analyze(np.ascontiguousarray(img[::-1]), eng, rescue=False).primary.embedding
    assert not np.allclose(other, f.embedding)  # the vector really depends on the pixels


def test_auto_prefers_insightface_when_a_pack_exists(comfy_models):
    assert get_engine("auto", model_dirs=[comfy_models]).backend == "insightface"
    assert get_engine("auto", model_dirs=[comfy_models / "nothing"]).backend == "dlib"


def test_insightface_vectors_never_compare_with_dlib_references(comfy_models, faces_dir):
    img = np.ascontiguousarray(load_image(faces_dir / "london004_1.jpg")[:640, :640])
    if_vec = analyze(
        img, get_engine("insightface", model_dirs=[comfy_models]), rescue=False
    ).primary.embedding
    dlib_res = analyze(img, get_engine("dlib"))
    ref = IdentityReference(dlib_res.primary.embedding, "dlib", dlib_res.model)
    with pytest.raises(BackendMismatchError):
        ref.drift_of(if_vec, "insightface", "buffalo_l")
