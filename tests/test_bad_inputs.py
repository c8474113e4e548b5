"""The bad-input corpus (tests/fixtures/bad_inputs): every case gets a clear message or a documented result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from identitylock.core.cli import main as cli_main
from identitylock.core.errors import ImageInputError, MultipleFacesError, NoFaceError
from identitylock.core.faces import analyze, get_engine
from identitylock.core.images import array_to_uint8_rgb, load_image

BAD = Path(__file__).parent / "fixtures" / "bad_inputs"


@pytest.mark.parametrize("name", ["greyscale.png", "rgba.png", "sixteen_bit.png", "palette.png"])
def test_unusual_modes_load_as_rgb_and_keep_the_face(name):
    img = load_image(BAD / name)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert analyze(img, get_engine("dlib")).found, f"{name}: face lost in mode conversion"


def test_rgba_transparency_becomes_white():
    img = load_image(BAD / "rgba.png")
    assert (img[:, :5] == 255).all()


def test_sixteen_bit_is_scaled_not_clipped():
    img = load_image(BAD / "sixteen_bit.png")
    assert 60 < img.mean() < 200  # 16-bit values mapped to 0..255, not saturated to white


@pytest.mark.parametrize(
    "name, message",
    [
        ("tiny_40px.png", "at least 64 px"),
        ("huge_8300px.png", "limit is 8192"),
        ("corrupt.jpg", "not a readable image"),
        ("not_an_image.jpg", "not a readable image"),
        ("empty.png", "not a readable image"),
    ],
)
def test_unusable_files_raise_a_clear_message_naming_the_file(name, message):
    with pytest.raises(ImageInputError) as exc:
        load_image(BAD / name)
    assert message in str(exc.value) and name in str(exc.value)


def test_missing_file_and_folder_given_as_image(tmp_path):
    with pytest.raises(ImageInputError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageInputError, match="folder"):
        load_image(tmp_path)


def test_nan_tensor_is_rejected_with_a_hint():
    arr = np.full((128, 128, 3), np.nan, np.float32)
    with pytest.raises(ImageInputError, match="NaN"):
        array_to_uint8_rgb(arr)


def test_wrong_shapes_are_rejected():
    with pytest.raises(ImageInputError, match="HxWxC"):
        array_to_uint8_rgb(np.zeros((4, 128, 128, 3), np.float32))
    with pytest.raises(ImageInputError, match="empty"):
        array_to_uint8_rgb(np.zeros((0, 128, 3), np.float32))


def test_prep_with_several_faces_can_refuse(faces_dir):
    from identitylock.core.prep import PrepOptions, prepare_image

    img = load_image(faces_dir / "multi_2.jpg")
    with pytest.raises(MultipleFacesError, match="2 faces"):
        prepare_image(img, PrepOptions(multiple_faces="error", augment=False), get_engine("dlib"))
    out = prepare_image(
        img, PrepOptions(multiple_faces="largest", augment=False, background="none"), get_engine("dlib")
    )
    assert out[0].meta["face_count"] == 2


def test_prep_no_face_names_the_batch_index(faces_dir):
    from identitylock.core.prep import PrepOptions, prepare_batch

    imgs = [load_image(faces_dir / "lisa_1.jpg"), load_image(faces_dir / "noface_1.jpg")]
    with pytest.raises(NoFaceError) as exc:
        prepare_batch(imgs, PrepOptions(augment=False, background="none"), get_engine("dlib"))
    assert exc.value.index == 1 and "batch index 1" in str(exc.value)


def test_empty_batch():
    from identitylock.core.prep import prepare_batch

    with pytest.raises(ImageInputError, match="empty"):
        prepare_batch([], engine=get_engine("dlib"))


def test_cli_empty_folder_exits_2(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assert (
        cli_main(
            ["embed", str(tmp_path / "in"), "--out", str(tmp_path / "r.safetensors"), "--backend", "dlib"]
        )
        == 2
    )
    assert "no image files" in capsys.readouterr().err
    assert not (tmp_path / "r.safetensors").exists()


def test_cli_drift_reports_misses_and_unreadable_files_and_still_measures_the_rest(
    faces_dir, tmp_path, capsys
):
    import json

    ref = tmp_path / "ref.safetensors"
    assert cli_main(["embed", str(faces_dir / "lisa_1.jpg"), "--out", str(ref), "--backend", "dlib"]) == 0
    capsys.readouterr()
    code = cli_main(
        [
            "drift",
            str(ref),
            str(faces_dir / "lisa_2.jpg"),
            str(faces_dir / "noface_2.jpg"),
            str(BAD / "corrupt.jpg"),
            "--json",
        ]
    )
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert code == 2
    assert [r["face_found"] for r in rows] == [True, False, False]
    assert rows[0]["locked"] is True and rows[0]["drift"] < 0.06
    assert rows[1]["drift"] is None  # a miss is never a drift of 0 (or 1)
    assert "no face found" in out.err and "not a readable image" in out.err
