"""ArcFace on onnxruntime alone: equivalence with insightface's FaceAnalysis on the same ONNX files, routing,
normalisation read from the model, pack layouts, providers, and a working path without the insightface package.

The stand-ins (tests/insightface_standins.py) carry the real models' input/output names, shapes and
post-processing contract with random weights; the detector is a real function of the pixels, so on the
committed photos it reports 5-34 "faces" each, exercising anchor decoding, NMS and alignment.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
from identitylock.core.errors import ModelNotFoundError
from identitylock.core.faces import RUNG_SLOW, analyze, clear_engine_cache, get_engine
from identitylock.core.faces.arcface_onnx import ArcFaceOnnxEngine
from identitylock.core.faces.onnx_models import align_face, first_node_names, graph_normalises_input
from identitylock.core.faces.packs import PROVIDER_ORDER, onnx_providers
from identitylock.core.images import load_image

from .insightface_standins import make_pack, make_random_pack

TOL = 1e-4
PHOTOS = [
    "obama_1",
    "obama_3",
    "biden_1",
    "gates_1",
    "london004_1",
    "london025_2",
    "lisa_1",
    "multi_1",
    "noface_3",
]


@pytest.fixture(scope="module")
def full_pack(tmp_path_factory):
    return make_random_pack(tmp_path_factory.mktemp("packs") / "models" / "buffalo_l")


@pytest.fixture(scope="module")
def mxnet_pack(tmp_path_factory):
    return make_random_pack(
        tmp_path_factory.mktemp("mx") / "models" / "auraface", full=False, graph_normalised=True
    )


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("IDENTITYLOCK_INSIGHTFACE_DIR", raising=False)
    clear_engine_cache()
    yield
    clear_engine_cache()


def _insightface_app(pack_dir, det_thresh=0.5):
    from insightface.app import FaceAnalysis

    # name + root (root/models/name): the form every insightface version resolves without a download
    assert pack_dir.parent.name == "models"
    app = FaceAnalysis(
        name=pack_dir.name, root=str(pack_dir.parent.parent), providers=["CPUExecutionProvider"]
    )
    app.prepare(ctx_id=-1, det_thresh=det_thresh, det_size=(640, 640))
    return app


def _compare(ours, theirs, rgb):
    assert len(ours) == len(theirs) and len(ours) > 0
    for f, g in zip(ours, theirs):
        np.testing.assert_allclose(f.bbox, g.bbox, atol=TOL, rtol=0)
        np.testing.assert_allclose(f._kps, g.kps, atol=TOL, rtol=0)
        assert abs(f.det_score - float(g.det_score)) < TOL
        ref = np.asarray(g.embedding, dtype=np.float64)
        np.testing.assert_allclose(f.embedding, ref / np.linalg.norm(ref), atol=TOL, rtol=0)
        if "landmark_3d_68" in g:
            np.testing.assert_allclose(f.landmarks, g.landmark_3d_68[:, :2], atol=TOL, rtol=0)
        if "age" in g:
            assert f.age == g.age and f.sex == ("M" if g.gender == 1 else "F")


@pytest.mark.parametrize("photo", PHOTOS)
def test_detect_align_embed_match_insightface_face_analysis(full_pack, faces_dir, photo):
    rgb = load_image(faces_dir / f"{photo}.jpg")
    theirs = _insightface_app(full_pack).get(np.ascontiguousarray(rgb[:, :, ::-1]))
    eng = ArcFaceOnnxEngine(pack=full_pack, providers=["CPUExecutionProvider"])
    ours = eng.detect(rgb)
    eng.embed(rgb, ours)
    _compare(ours, theirs, rgb)


def test_graph_normalised_recognition_takes_raw_pixels_like_insightface(mxnet_pack, faces_dir):
    """An mxnet-style export normalises inside its graph: feeding it (x - 127.5) / 127.5 again would be a
    different vector. insightface reads this from the first node names; so do we (without the onnx package)."""
    rec = mxnet_pack / "w600k_r50.onnx"
    assert first_node_names(rec)[:2] == ["_minusscalar0", "_mulscalar0"]
    assert graph_normalises_input(rec) and not graph_normalises_input(mxnet_pack / "det_10g.onnx")
    eng = ArcFaceOnnxEngine(pack=mxnet_pack, providers=["CPUExecutionProvider"])
    assert (eng.rec.input_mean, eng.rec.input_std) == (0.0, 1.0) and eng.rec.batch
    rgb = load_image(faces_dir / "obama_1.jpg")
    ours = eng.detect(rgb)
    eng.embed(rgb, ours)
    _compare(ours, _insightface_app(mxnet_pack).get(np.ascontiguousarray(rgb[:, :, ::-1])), rgb)


def test_slow_rung_threshold_matches_insightface(full_pack, faces_dir):
    rgb = load_image(faces_dir / "london004_1.jpg")
    eng = ArcFaceOnnxEngine(pack=full_pack, providers=["CPUExecutionProvider"])
    ours = eng.detect(rgb, RUNG_SLOW)
    eng.embed(rgb, ours)
    theirs = _insightface_app(full_pack, det_thresh=0.3).get(np.ascontiguousarray(rgb[:, :, ::-1]))
    assert len(ours) > len(eng.detect(rgb))  # the lower threshold really finds more
    _compare(ours, theirs, rgb)


def test_alignment_matches_insightface_norm_crop(faces_dir):
    from insightface.utils import face_align

    rgb = load_image(faces_dir / "obama_1.jpg")
    rng = np.random.default_rng(0)
    for _ in range(5):
        kps = (
            np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]]) * 3
            + rng.uniform(0, 400, 2)
            + rng.normal(0, 4, (5, 2))
        ).astype(np.float32)
        for size in (112, 128):
            ours = align_face(rgb, kps, size).astype(np.int16)
            theirs = face_align.norm_crop(rgb, kps, size).astype(np.int16)
            assert np.abs(ours - theirs).max() <= 1  # same matrix to ~1e-12; a pixel may round the other way


def test_fixed_size_detector_keeps_its_size_and_old_standin_still_works(tmp_path, faces_dir):
    """The fixed-output stand-in has a static 640x640 input: the 1024 px upsample rung must not feed it
    1024 px (onnxruntime would refuse the shape)."""
    pack = make_pack(tmp_path / "models" / "buffalo_l")
    eng = ArcFaceOnnxEngine(pack=pack, providers=["CPUExecutionProvider"])
    assert eng.det.fixed_size == (640, 640)
    img = np.ascontiguousarray(load_image(faces_dir / "london004_1.jpg")[:640, :640])
    for rung in ("direct", "upsample"):
        faces = eng.detect(img, rung)
        assert len(faces) == 1 and np.isclose(faces[0].det_score, 0.95, atol=1e-3)
    theirs = _insightface_app(pack).get(np.ascontiguousarray(img[:, :, ::-1]))
    eng.embed(img, faces)
    _compare(faces, theirs, img)


def test_get_engine_names_and_auto(full_pack):
    dirs = [full_pack.parent.parent]
    for name in ("insightface", "arcface-onnx", "auto"):
        eng = get_engine(name, model_dirs=dirs)
        assert (
            isinstance(eng, ArcFaceOnnxEngine) and eng.backend == "insightface" and eng.model == "buffalo_l"
        )
    assert get_engine("auto", model_dirs=[full_pack.parent.parent / "nothing"]).backend == "dlib"
    assert get_engine("insightface-package", model_dirs=dirs).info()["engine"] == "insightface-package"


def test_analyze_uses_68_landmarks_age_and_the_rescue_ladder(full_pack, faces_dir):
    eng = get_engine("arcface-onnx", model_dirs=[full_pack.parent.parent])
    res = analyze(load_image(faces_dir / "obama_1.jpg"), eng, max_faces=None)
    assert res.found and res.backend == "insightface" and res.model == "buffalo_l"
    f = res.primary
    assert f.landmark_scheme == "dlib68" and f.landmarks.shape == (68, 2)
    assert f.age is not None and f.sex in ("M", "F") and f.embedding.shape == (512,)


def test_antelopev2_nested_folder_and_auraface_style_pack(tmp_path):
    root = tmp_path / "insightface"
    make_pack(root / "models" / "antelopev2" / "antelopev2")
    make_random_pack(root / "models" / "auraface", full=False, graph_normalised=True)
    assert (
        ArcFaceOnnxEngine(pack="antelopev2", extra_dirs=[root]).pack_dir
        == root / "models" / "antelopev2" / "antelopev2"
    )
    assert ArcFaceOnnxEngine(pack=root / "models" / "antelopev2").model == "antelopev2"
    aura = ArcFaceOnnxEngine(pack="auraface", extra_dirs=[root])
    assert aura.info()["recognition_input"] == {"size": 112, "mean": 0.0, "std": 1.0}


def test_damaged_or_incomplete_pack_is_one_clear_error(tmp_path):
    pack = make_pack(tmp_path / "buffalo_l")
    (pack / "w600k_r50.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelNotFoundError, match="not a usable ONNX model"):
        ArcFaceOnnxEngine(pack=pack)
    (pack / "w600k_r50.onnx").unlink()
    (pack / "notes.onnx").write_bytes((pack / "det_10g.onnx").read_bytes())
    with pytest.raises(ModelNotFoundError, match="recognition"):
        ArcFaceOnnxEngine(pack=pack)


def test_provider_order_and_the_provider_that_really_ran(full_pack):
    every = [
        "CPUExecutionProvider",
        "DmlExecutionProvider",
        "CoreMLExecutionProvider",
        "CUDAExecutionProvider",
        "ROCMExecutionProvider",
        "TensorrtExecutionProvider",
    ]
    assert onnx_providers(available=every) == list(PROVIDER_ORDER)
    assert onnx_providers(available=["CPUExecutionProvider", "DmlExecutionProvider"]) == [
        "DmlExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert onnx_providers(prefer_gpu=False, available=every) == ["CPUExecutionProvider"]
    import onnxruntime as ort

    eng = ArcFaceOnnxEngine(pack=full_pack, providers=onnx_providers())
    info = eng.info()
    ran = eng.det.session.get_providers()
    assert info["provider"] == ran[0] and info["providers_active"] == ran
    assert set(info["providers_by_task"]) == {"detection", "recognition", "landmark_3d_68", "genderage"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert info["provider"] == "CPUExecutionProvider"


def test_works_and_doctor_reports_it_without_the_insightface_package(full_pack, tmp_path):
    """A fresh install has no insightface package: the backend must load, embed, and doctor must say so."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["insightface"] = None  # importing it now raises ImportError, as on a clean install
        import numpy as np
        from identitylock.core.doctor import check, format_report
        from identitylock.core.faces import analyze, get_engine
        eng = get_engine("insightface", model_dirs=[{str(full_pack.parent.parent)!r}])
        img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        assert analyze(img, eng, max_faces=None).primary.embedding.shape == (512,)
        report = check([{str(full_pack.parent.parent)!r}])
        text = format_report(report)
        assert report["backends"]["insightface"]["ok"], text
        assert report["auto_backend"] == "insightface", text
        assert "insightface" not in sys.modules or sys.modules["insightface"] is None
        print(text)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "arcface-onnx" in out.stdout and "without the insightface package" in out.stdout
    assert "provider CPUExecutionProvider" in out.stdout


def test_unknown_models_in_a_pack_are_ignored(tmp_path):
    """A 2d106det-like model (192 px, 212 outputs) or an extra file must not replace the 68-point model."""
    pack = make_random_pack(tmp_path / "buffalo_l")
    from .insightface_standins import _crop_model

    _crop_model(pack / "2d106det.onnx", 192, 212, seed=9)
    eng = ArcFaceOnnxEngine(pack=pack)
    assert set(eng.info()["tasks"]) == {
        "detection",
        "recognition",
        "landmark_3d_68",
        "landmark_2d_106",
        "genderage",
    }
    assert eng._lmk.taskname == "landmark_3d_68"
    img = cv2.resize(np.full((10, 10, 3), 128, np.uint8), (300, 300))
    assert eng.detect(img) == [] or all(f.landmark_scheme == "dlib68" for f in eng.detect(img))
