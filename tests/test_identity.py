"""Identity references: drift, leave-one-out, outliers, persistence, backend mismatch."""

from __future__ import annotations

import numpy as np
import pytest
from identitylock.core.errors import BackendMismatchError, IdentityLockError
from identitylock.core.faces import analyze, get_engine
from identitylock.core.identity import (
    IdentityReference,
    cosine,
    default_threshold,
    drift,
    reference_from_analyses,
)
from identitylock.core.images import load_image


def test_drift_is_one_minus_cosine():
    a, b = np.array([1.0, 0.0]), np.array([1.0, 1.0])
    assert drift(a, b) == pytest.approx(1 - 1 / np.sqrt(2))
    assert drift(a, a) == pytest.approx(0.0)
    assert drift(a, -a) == pytest.approx(2.0)


def test_different_dimensions_raise_instead_of_a_number():
    with pytest.raises(BackendMismatchError, match="different face backends"):
        cosine(np.ones(128), np.ones(512))


def test_reference_rejects_other_backend_or_model():
    ref = IdentityReference(np.eye(3, 128), "dlib", "dlib_resnet_v1/sp5")
    with pytest.raises(BackendMismatchError, match="insightface"):
        ref.drift_of(np.ones(128), "insightface", "buffalo_l")
    with pytest.raises(BackendMismatchError):
        ref.drift_of(np.ones(512))


def test_thresholds_per_backend():
    assert default_threshold("insightface") == 0.18
    assert 0 < default_threshold("dlib") < 0.1


@pytest.fixture(scope="module")
def lisa_with_intruder(faces_dir):
    eng = get_engine("dlib")
    names = ["lisa_1.jpg", "lisa_2.jpg", "lisa_3.jpg", "lisa_4.jpg", "london005_1.jpg"]
    return reference_from_analyses([analyze(load_image(faces_dir / n), eng) for n in names], names)


def test_leave_one_out_flags_the_other_person(lisa_with_intruder):
    ref = lisa_with_intruder
    loo = ref.leave_one_out()
    assert int(np.argmin(loo)) == 4
    assert ref.outliers().tolist() == [False, False, False, False, True]
    assert "OUTLIER" in ref.summary().splitlines()[-1]


def test_save_load_round_trip(lisa_with_intruder, tmp_path):
    path = lisa_with_intruder.save(tmp_path / "lisa")
    assert path.suffix == ".safetensors"
    back = IdentityReference.load(path)
    assert back.backend == "dlib" and back.sources == lisa_with_intruder.sources
    assert np.allclose(back.centroid, lisa_with_intruder.centroid)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        assert fh.metadata()["format"] == "identitylock.identity"


def test_load_rejects_foreign_files(tmp_path):
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(
        IdentityLockError, match="not a usable IdentityLock identity file .no identitylock format"
    ):
        IdentityReference.load(tmp_path / "lora.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(IdentityLockError):
        IdentityReference.load(tmp_path / "junk.safetensors")


def test_reference_from_analyses_names_misses(faces_dir):
    eng = get_engine("dlib")
    res = [analyze(load_image(faces_dir / n), eng) for n in ("lisa_1.jpg", "noface_3.jpg")]
    with pytest.raises(IdentityLockError, match="noface_3"):
        reference_from_analyses(res, ["lisa_1.jpg", "noface_3.jpg"])
