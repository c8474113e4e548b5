"""`prep` and FaceCropPrep under hostile use (issue 15): nothing lost, nothing hidden, one line per bad input.

Every input here is generated in tmp_path from the committed photos. Regression tests name the defect they pin;
the corpus tests at the end run every class of hostile file through the command and the node together.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from identitylock.core.cli import main as cli_main
from PIL import Image
from PIL.PngImagePlugin import PngInfo

FAST = ["--size", "128", "--no-augment", "--background", "none", "--backend", "dlib"]


def _photo(faces_dir: Path, name: str = "lisa_1.jpg", side: int = 320) -> Image.Image:
    im = Image.open(faces_dir / name).convert("RGB")
    im.thumbnail((side, side))
    return im


def _metadata(out: Path) -> list[dict]:
    return json.loads((out / "prep_metadata.json").read_text())


def _prep(capsys, *args: str) -> tuple[int, str, str]:
    code = cli_main(["prep", *map(str, args)])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# -- 1. nothing lost: same file names, re-runs ------------------------------------------------------------------


def test_two_inputs_with_the_same_file_name_both_survive(faces_dir, tmp_path, capsys):
    for folder, src in (("a", "lisa_1.jpg"), ("b", "london004_1.jpg")):
        (tmp_path / folder).mkdir()
        _photo(faces_dir, src).save(tmp_path / folder / "me.jpg")
    out = tmp_path / "out"
    code, _, err = _prep(capsys, tmp_path / "a", tmp_path / "b", "--out", out, *FAST)
    assert code == 0, err
    records = _metadata(out)
    outputs = [r["output"] for r in records]
    assert len(records) == 2 and len(set(outputs)) == 2
    assert all((out / o).is_file() for o in outputs)
    pixels = [np.asarray(Image.open(out / o)) for o in outputs]
    assert not np.array_equal(*pixels)  # two different people, two different files


def test_a_second_run_adds_to_the_metadata_and_a_rerun_replaces_its_own_records(
    faces_dir, tmp_path, capsys, monkeypatch
):
    _photo(faces_dir, "lisa_1.jpg").save(tmp_path / "me.jpg")
    _photo(faces_dir, "london004_1.jpg").save(tmp_path / "other.jpg")
    out = tmp_path / "out"
    assert _prep(capsys, tmp_path / "me.jpg", "--out", out, *FAST)[0] == 0
    assert _prep(capsys, tmp_path / "other.jpg", "--out", out, *FAST)[0] == 0
    assert sorted(Path(r["file"]).name for r in _metadata(out)) == ["me.jpg", "other.jpg"]
    # The same input again, named by another relative path: same key, same output name, no duplicate.
    monkeypatch.chdir(tmp_path)
    assert _prep(capsys, "me.jpg", "--out", out, *FAST)[0] == 0
    records = _metadata(out)
    assert sorted(Path(r["file"]).name for r in records) == ["me.jpg", "other.jpg"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r["output"] for r in records)


def test_a_corrupt_metadata_file_is_refused_before_the_work_not_overwritten(faces_dir, tmp_path, capsys):
    _photo(faces_dir).save(tmp_path / "me.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "prep_metadata.json").write_text("[" * 100000)  # RecursionError territory
    code, stdout, err = _prep(capsys, tmp_path / "me.jpg", "--out", out, *FAST)
    assert code == 2 and "prep_metadata.json" in err and "Traceback" not in err
    assert (out / "prep_metadata.json").read_text() == "[" * 100000
    assert not list(out.glob("*.png")) and "image(s)" not in stdout


def test_a_stem_in_the_metadata_cannot_send_outputs_out_of_the_folder(faces_dir, tmp_path, capsys):
    _photo(faces_dir).save(tmp_path / "me.jpg")
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    forged = [
        {"file": str(tmp_path / "me.jpg"), "source": str(tmp_path / "me.jpg"), "ok": True, "stem": "../../x"}
    ]
    (out / "prep_metadata.json").write_text(json.dumps(forged))
    assert _prep(capsys, tmp_path / "me.jpg", "--out", out, *FAST)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["me_main.png", "prep_metadata.json"]
    assert not list(tmp_path.glob("x_*"))


# -- 2. background removal that fails says so -------------------------------------------------------------------


def test_grabcut_that_keeps_the_whole_photo_is_not_reported_as_grabcut(faces_dir):
    """A real photo framed wide (face_fraction 0.08): the crop is mostly padding, GrabCut's background samples
    are the padding colour, and it keeps every photo pixel. The metadata used to say "grabcut" anyway."""
    from identitylock.core.faces import get_engine
    from identitylock.core.images import load_image
    from identitylock.core.prep import PrepOptions, prepare_image

    img, engine = load_image(faces_dir / "lisa_1.jpg"), get_engine("dlib")
    wide = prepare_image(
        img, PrepOptions(size=256, face_fraction=0.08, background="grabcut", augment=False), engine
    )
    assert wide[0].meta["background"].startswith("none (grabcut failed: nothing was separated")
    normal = prepare_image(img, PrepOptions(size=256, background="grabcut", augment=False), engine)
    assert normal[0].meta["background"] == "grabcut"  # the check does not reject a working GrabCut


def test_grabcut_that_raises_is_reported_not_replaced_by_an_all_ones_mask(faces_dir):
    from identitylock.core.background import foreground_mask
    from identitylock.core.images import load_image

    img = load_image(faces_dir / "lisa_1.jpg")
    h, w = img.shape[:2]
    # A face box outside the frame leaves GrabCut no foreground samples: OpenCV raises (it used to be swallowed).
    mask, method = foreground_mask(img, np.array([w + 50, 10, w + 60, 20]), "grabcut")
    assert method.startswith("none (grabcut failed: error") and mask.min() == 1.0


def _constant_matting_model(path: Path) -> Path:
    """A real ONNX file in the u2net slot whose "mask" is the same value everywhere (a broken export)."""
    import onnx
    from onnx import TensorProto, helper

    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
            helper.make_node("Mul", ["m", "zero"], ["y"]),
        ],
        "constant_mask",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 320, 320])],
        [zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("model", ["garbage bytes", "constant mask"])
def test_a_broken_matting_model_falls_back_to_grabcut_and_says_so(faces_dir, tmp_path, model):
    from identitylock.core.faces import get_engine
    from identitylock.core.images import load_image
    from identitylock.core.prep import PrepOptions, prepare_image

    models = tmp_path / "rembg"
    models.mkdir()
    if model == "garbage bytes":
        (models / "u2net.onnx").write_bytes(b"\x00not an onnx model" * 100)
    else:
        _constant_matting_model(models / "u2net.onnx")
    img, engine = load_image(faces_dir / "lisa_1.jpg"), get_engine("dlib")
    auto = prepare_image(img, PrepOptions(size=128, augment=False, model_dirs=[str(models)]), engine)
    assert auto[0].meta["background"] == "grabcut"  # auto went on to the next method
    only = PrepOptions(size=128, augment=False, background="matting", model_dirs=[str(models)])
    assert prepare_image(img, only, engine)[0].meta["background"].startswith("none (u2net failed: ")


def test_cli_and_node_warn_when_background_removal_failed(faces_dir, tmp_path, capsys, caplog):
    import identitylock
    import torch

    _photo(faces_dir, "lisa_1.jpg", 600).save(tmp_path / "me.jpg")
    out = tmp_path / "out"
    code, stdout, err = _prep(
        capsys, tmp_path / "me.jpg", "--out", out, "--size", "256", "--face-fraction", "0.08",
        "--background", "grabcut", "--no-augment", "--backend", "dlib",
    )  # fmt: skip
    assert code == 0 and "background removal failed" in err
    assert _metadata(out)[0]["background"].startswith("none (grabcut failed")
    node = identitylock.NODE_CLASS_MAPPINGS["FaceCropPrep"]()
    image = torch.from_numpy(np.asarray(_photo(faces_dir, "lisa_1.jpg", 600), np.float32)[None] / 255.0)
    with caplog.at_level("WARNING", logger="IdentityLock"):
        _, _, meta = node.prepare(
            image, 256, 0.08, "grabcut", "#FFFFFF", "largest", "main only", "", "", "dlib"
        )
    assert json.loads(meta)[0]["background"].startswith("none (grabcut failed")
    assert "background removal failed" in caplog.text


# -- 3. unreadable folders and long names ------------------------------------------------------------------------


def test_an_unreadable_subfolder_is_reported_and_the_rest_is_prepared(
    faces_dir, tmp_path, capsys, monkeypatch
):
    """Tests run as root, where mode 000 does not stop a read: the folder is made unreadable for real (chmod,
    effective for other users) *and* its listing is made to raise PermissionError (effective as root)."""
    src = tmp_path / "in"
    (src / "locked").mkdir(parents=True)
    _photo(faces_dir).save(src / "ok.jpg")
    _photo(faces_dir, "london004_1.jpg").save(src / "locked" / "hidden.jpg")
    locked = src / "locked"
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.abspath(os.fspath(path)) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    locked.chmod(0)
    try:
        code, _, err = _prep(capsys, src, "--out", tmp_path / "out", *FAST)
    finally:
        locked.chmod(0o755)
    assert code == 2
    assert "locked" in err and "cannot read this folder" in err
    assert [Path(r["file"]).name for r in _metadata(tmp_path / "out") if r["ok"]] == ["ok.jpg"]


def test_a_249_byte_file_name_is_prepared_and_the_metadata_written(faces_dir, tmp_path, capsys):
    long_name = "l" * 245 + ".jpg"
    assert len(long_name.encode()) == 249
    _photo(faces_dir).save(tmp_path / long_name)
    _photo(faces_dir, "london004_1.jpg").save(tmp_path / "z_after.jpg")
    out = tmp_path / "out"
    code, _, err = _prep(
        capsys, tmp_path, "--out", out, "--size", "128", "--background", "none", "--backend", "dlib"
    )  # with augmentations: "<stem>_rotate_-10.png" is where 255 bytes used to overflow
    assert code == 0, err
    records = _metadata(out)
    assert {Path(r["file"]).name for r in records} == {long_name, "z_after.jpg"}
    assert all(r["ok"] and (out / r["output"]).is_file() for r in records)
    assert max(len(p.name.encode()) for p in out.iterdir()) <= 255


# -- 4. bad output folders fail before the work -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["existing file", "folder under a file"])
def test_a_bad_output_folder_fails_before_the_work(faces_dir, tmp_path, capsys, kind):
    """As root a read-only folder is still writable, so the unwritable case is a path under an existing FILE
    (mkdir fails with ENOTDIR, as a read-only parent fails with EACCES/EROFS)."""
    _photo(faces_dir).save(tmp_path / "me.jpg")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if kind == "existing file" else blocker / "sub"
    code, stdout, err = _prep(capsys, tmp_path / "me.jpg", "--out", out, *FAST)
    assert code == 2 and "Traceback" not in err and str(blocker) in err
    assert "image(s), background" not in stdout  # no photo was prepared before the refusal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "me.jpg"]  # no stray temporary


@pytest.mark.parametrize("option", [["--size", "10"], ["--face-fraction", "nan"], ["--size", "999999"]])
def test_out_of_range_options_are_one_line_before_the_work(faces_dir, tmp_path, capsys, option):
    _photo(faces_dir).save(tmp_path / "me.jpg")
    code, stdout, err = _prep(
        capsys, tmp_path / "me.jpg", "--out", tmp_path / "out", "--backend", "dlib", *option
    )
    assert code == 2 and len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_disk_full_at_the_metadata_is_one_line_and_keeps_the_images(
    faces_dir, tmp_path, capsys, monkeypatch
):
    """Injected failure (ENOSPC cannot be produced on demand here): the write of prep_metadata.json fails."""
    from identitylock.core import fileio

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio, "write_json_atomic", full)
    _photo(faces_dir).save(tmp_path / "me.jpg")
    code, _, err = _prep(capsys, tmp_path / "me.jpg", "--out", tmp_path / "out", *FAST)
    assert code == 1 and err.count("\n") == 1 and "No space left on device" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["me_main.png"]


# -- 5. normal permissions ----------------------------------------------------------------------------------------


def test_prep_outputs_have_the_users_normal_permissions(faces_dir, tmp_path, capsys):
    """Guards the atomic writes (mkstemp makes 0600 files); the old direct writes were not affected here."""
    _photo(faces_dir).save(tmp_path / "me.jpg")
    old = os.umask(0o027)
    try:
        assert _prep(capsys, tmp_path / "me.jpg", "--out", tmp_path / "out", *FAST)[0] == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert len(modes) == 2 and set(modes.values()) == {0o666 & ~0o027}, modes


# -- 6. hostile PNG metadata ---------------------------------------------------------------------------------------


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _png_with_text(image: Image.Image, chunks: list[tuple[str, str, bool]]) -> bytes:
    info = PngInfo()
    for key, value, compressed in chunks:
        info.add_text(key, value, zip=compressed)
    buf = io.BytesIO()
    image.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _corrupt_first_text_crc(data: bytes) -> bytes:
    pos = 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"tEXt":
            crc = pos + 8 + length
            return data[:crc] + bytes(b ^ 0xFF for b in data[crc : crc + 4]) + data[crc + 4 :]
        pos += 12 + length
    raise AssertionError("no tEXt chunk")


def hostile_pngs(image: Image.Image) -> dict[str, bytes]:
    """PNGs with good pixels and metadata nobody can use."""
    seeds = [("parameters", '{"seed": NaN, "steps": 1e400}', False), ("seed", "1e400", False)]
    return {
        "seed_nan_1e400.png": _png_with_text(image, seeds),
        "nested_prompt.png": _png_with_text(image, [("prompt", _nested(200000), False)]),
        "zip_bomb_text.png": _png_with_text(image, [("prompt", "x" * 3_000_000, True)]),
        "bad_text_crc.png": _corrupt_first_text_crc(_png_with_text(image, seeds)),
    }


def test_a_pipe_named_as_an_image_is_refused_not_read_forever(tmp_path):
    from identitylock.core.errors import ImageInputError
    from identitylock.core.images import load_image

    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ImageInputError, match="not a regular file"):
        load_image(tmp_path / "pipe.jpg")


def test_load_image_ignores_hostile_png_text(faces_dir, tmp_path):
    from identitylock.core.images import load_image

    photo = _photo(faces_dir)
    for name, data in hostile_pngs(photo).items():
        (tmp_path / name).write_bytes(data)
        img = load_image(tmp_path / name)
        assert np.array_equal(img, np.asarray(photo)), name


# -- 7. clean error names in ComfyUI, 8. a broken node module fails loudly -----------------------------------------


def comfy_full_type_name(klass: type) -> str:
    """ComfyUI 0.8 execution.py ``full_type_name``: what the node's error box shows as the exception type."""
    module = klass.__module__
    if module == "builtins":
        return klass.__qualname__
    return module + "." + klass.__qualname__


def _load_pack_as(module_name: str, folder: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        module_name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _forget(prefix: str) -> None:
    for key in [k for k in sys.modules if k == prefix or k.startswith(prefix + ".")]:
        del sys.modules[key]


def test_error_names_shown_by_comfyui_carry_no_install_path(tmp_path):
    import identitylock
    import torch

    repo = Path(identitylock.__file__).resolve().parent
    name = str(tmp_path / "custom_nodes" / "ComfyUI-IdentityLock")  # how the reporter's ComfyUI named it
    try:
        pack = _load_pack_as(name, repo)
        node = pack.NODE_CLASS_MAPPINGS["FaceCropPrep"]()
        with pytest.raises(Exception) as exc:
            node.prepare(torch.full((1, 96, 96, 3), float("nan")), 128, 0.4, "none", "#FFFFFF", "largest",
                         "main only", "", "", "dlib")  # fmt: skip
        assert comfy_full_type_name(exc.type) == "IdentityLock.ImageInputError"
        errors = importlib.import_module(name + ".core.errors")
        fileio = importlib.import_module(name + ".core.fileio")
        pending, seen = [errors.IdentityLockError], []
        while pending:
            cls = pending.pop()
            seen.append(cls)
            pending.extend(cls.__subclasses__())
        assert fileio.OutputPathError in seen and errors.NoFaceError in seen
        for cls in seen:
            shown = comfy_full_type_name(cls)
            assert shown == f"IdentityLock.{cls.__name__}" and "/" not in shown and "core" not in shown
    finally:
        _forget(name)


def test_identitylock_errors_still_pickle_to_their_own_class():
    """Worker processes send exceptions back by pickling: the display name must not break that."""
    import pickle

    from identitylock.core.errors import ModelNotFoundError, NoFaceError

    e = pickle.loads(pickle.dumps(NoFaceError("no face", index=3, tried=("direct",))))
    assert type(e) is NoFaceError and e.index == 3 and e.tried == ("direct",) and str(e) == "no face"
    m = pickle.loads(pickle.dumps(ModelNotFoundError("missing")))
    assert type(m) is ModelNotFoundError and isinstance(m, FileNotFoundError)


def test_a_broken_node_module_makes_the_pack_import_fail_with_its_name_and_cause(tmp_path):
    import shutil

    import identitylock

    repo = Path(identitylock.__file__).resolve().parent
    pack = tmp_path / "ComfyUI-IdentityLock-broken"
    pack.mkdir()
    shutil.copy(repo / "__init__.py", pack / "__init__.py")
    (pack / "core").symlink_to(repo / "core", target_is_directory=True)
    shutil.copytree(repo / "nodes", pack / "nodes", ignore=shutil.ignore_patterns("__pycache__"))
    with open(pack / "nodes" / "prep.py", "a") as fh:
        fh.write("\nimport identitylock_missing_dependency_xyz  # noqa\n")
    name = "ComfyUI-IdentityLock-broken"
    try:
        with pytest.raises(ImportError) as exc:
            _load_pack_as(name, pack)
        message = str(exc.value)
        assert "nodes/prep.py" in message and "identitylock_missing_dependency_xyz" in message
        assert "\n" not in message
    finally:
        _forget(name)


# -- 9 + corpus: every class of hostile file through `prep` and FaceCropPrep -----------------------------------------


def build_corpus(faces_dir: Path, root: Path) -> tuple[set[str], set[str]]:
    """Write the hostile corpus under ``root``; returns (names that must be prepared, names that must fail)."""
    photo = _photo(faces_dir)
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    root.mkdir(parents=True, exist_ok=True)
    (root / "good.jpg").write_bytes(jpeg)
    (root / "zero_bytes.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (root / "jpeg_named.png").write_bytes(jpeg)  # mislabelled but decodable
    (root / "text_named.jpg").write_text("hello, not an image\n")
    grey16 = (np.asarray(photo.convert("L"), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(root / "sixteen_bit.png")
    photo.convert("CMYK").save(root / "cmyk.jpg")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.png")
    photo.save(root / "frames.gif", save_all=True, append_images=[photo.rotate(3)])
    photo.save(root / "photo.webp", quality=90)
    sideways = photo.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF says "rotate 270 to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(root / "exif_rotated.jpg", exif=exif.tobytes())
    for sub in ("dup_a", "dup_b"):
        (root / sub).mkdir()
    photo.save(root / "dup_a" / "me.jpg")
    _photo(faces_dir, "london004_1.jpg").save(root / "dup_b" / "me.jpg")
    long_name = "n" * 245 + ".jpg"
    photo.save(root / long_name)
    for name, data in hostile_pngs(photo).items():
        (root / name).write_bytes(data)
    Image.new("RGB", (40, 40), "white").save(root / "tiny.png")
    (root / "newline\nforged.jpg").write_bytes(b"\x00" * 64)
    ok = {"good.jpg", "jpeg_named.png", "sixteen_bit.png", "cmyk.jpg", "palette.png", "frames.gif",
          "photo.webp", "exif_rotated.jpg", "me.jpg", long_name, *hostile_pngs(photo)}  # fmt: skip
    bad = {"zero_bytes.jpg", "truncated.jpg", "text_named.jpg", "tiny.png", "newline\nforged.jpg"}
    return ok, bad


def test_prep_hostile_corpus_one_line_per_bad_file_and_the_rest_prepared(
    faces_dir, tmp_path, capsys, monkeypatch
):
    from identitylock.core.prep import json_text

    src = tmp_path / "corpus"
    ok, bad = build_corpus(faces_dir, src)
    not_utf8 = os.fsdecode(b"not_utf8_\xff\xfe.jpg")  # a legal Linux name that UTF-8 JSON cannot hold as is
    _photo(faces_dir).save(src / not_utf8, "JPEG")
    (src / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(src / "pipe.jpg")  # would block a reader forever
    (src / "folder.jpg").mkdir()
    (src / "folder.jpg" / "loop").symlink_to(src, target_is_directory=True)
    (src / "locked").mkdir()
    _photo(faces_dir).save(src / "locked" / "unseen.jpg")
    real_scandir = os.scandir
    monkeypatch.setattr(
        os, "scandir",
        lambda p=".": (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
        if os.path.abspath(os.fspath(p)) == str(src / "locked") else real_scandir(p),
    )  # fmt: skip
    out = tmp_path / "out"
    code, stdout, err = _prep(capsys, src, "--out", out, *FAST)
    assert code == 2 and "Traceback" not in err, err
    assert _prep(capsys, src, "--out", out, *FAST)[0] == 2  # a re-run: same records, no duplicates
    warnings = err.splitlines()
    assert all(line.startswith("warning: ") for line in warnings), warnings
    assert (
        len(warnings) == len(bad) + 3
    )  # one line per bad file, the unreadable folder, the link and the pipe
    assert "dangling.jpg: not a regular file" in err and "pipe.jpg: not a regular file" in err
    assert "newline\\nforged.jpg" in err  # the newline in the name is escaped, not a forged line
    records = _metadata(out)
    prepared = [Path(r["file"]).name for r in records if r["ok"]]
    failed = {Path(r["file"]).name for r in records if not r["ok"]}
    assert sorted(prepared) == sorted([*ok, "me.jpg", json_text(not_utf8)]), (prepared, failed)  # both me.jpg
    assert failed == bad
    exif = next(r for r in records if r["ok"] and r["file"].endswith("exif_rotated.jpg"))
    w, h = exif["source_size"]
    assert h > w  # upright, as the camera meant it
    assert len({r["output"] for r in records if r["ok"]}) == len(prepared)


def hostile_tensors():
    import torch

    rng = np.random.default_rng(0)
    return {
        "nan": torch.full((1, 96, 96, 3), float("nan")),
        "inf": torch.full((1, 96, 96, 3), float("inf")),
        "empty batch": torch.zeros((0, 96, 96, 3)),
        "one pixel": torch.zeros((1, 1, 1, 3)),
        "two channels": torch.zeros((1, 96, 96, 2)),
        "five dims": torch.zeros((1, 1, 96, 96, 3)),
        "noise": torch.from_numpy(rng.random((1, 96, 96, 3), dtype=np.float32)),
        "out of range": torch.full((1, 96, 96, 3), 7.5),
        "float64 black": torch.zeros((1, 96, 96, 3), dtype=torch.float64),
        "wide 64x1024": torch.zeros((1, 64, 1024, 3)),
    }


@pytest.mark.parametrize("case", sorted(hostile_tensors()))
def test_face_crop_prep_hostile_tensors_give_one_sentence(case):
    import identitylock
    from identitylock.core.errors import IdentityLockError

    node = identitylock.NODE_CLASS_MAPPINGS["FaceCropPrep"]()
    with pytest.raises(IdentityLockError) as exc:
        node.prepare(
            hostile_tensors()[case], 128, 0.4, "none", "#FFFFFF", "largest", "main only", "", "", "dlib"
        )
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 400


@pytest.mark.parametrize(
    "widget, value",
    [("rotations", "nan"), ("rotations", "1e400"), ("rotations", "abc"), ("crop_scales", "0"),
     ("background_color", "#GGGGGG"), ("background_color", ""), ("face_fraction", float("nan"))],
)  # fmt: skip
def test_face_crop_prep_hostile_widgets_give_one_sentence(faces_dir, widget, value):
    import identitylock
    import torch
    from identitylock.core.errors import IdentityLockError

    node = identitylock.NODE_CLASS_MAPPINGS["FaceCropPrep"]()
    args = {
        "images": torch.from_numpy(np.asarray(_photo(faces_dir), np.float32)[None] / 255.0),
        "size": 128, "face_fraction": 0.4, "background": "none", "background_color": "#FFFFFF",
        "multiple_faces": "largest", "output": "main + augmentations", "rotations": "-5, 5", "crop_scales": "0.6",
        "backend": "dlib",
    }  # fmt: skip
    args[widget] = value
    with pytest.raises(IdentityLockError) as exc:
        node.prepare(**args)
    assert "\n" not in str(exc.value) and widget.split("_")[0] in str(exc.value)


def test_face_crop_prep_corpus_decodes_like_the_cli(faces_dir, tmp_path):
    """The node gets pixels, not files: every decodable corpus file, as a ComfyUI IMAGE, is prepared."""
    import identitylock
    import torch
    from identitylock.core.images import load_image

    ok, _ = build_corpus(faces_dir, tmp_path / "corpus")
    node = identitylock.NODE_CLASS_MAPPINGS["FaceCropPrep"]()
    for path in sorted(tmp_path.joinpath("corpus").rglob("*")):
        if path.name not in ok:
            continue
        arr = load_image(path).astype(np.float32)[None] / 255.0
        images, masks, meta = node.prepare(
            torch.from_numpy(arr), 128, 0.4, "none", "#FFFFFF", "largest", "main only", "", "", "dlib"
        )
        assert images.shape == (1, 128, 128, 3) and json.loads(meta)[0]["variant"] == "main", path.name


# -- extreme aspect (core/faces letterboxes before dlib): no crash, in a subprocess -------------------


def _run_isolated(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for more than {timeout} s (a crash in the face detector?)")


@pytest.mark.slow
def test_prep_on_an_extreme_aspect_photo_does_not_crash(tmp_path):
    rng = np.random.default_rng(0)
    for shape in ((4096, 64, 3), (64, 4096, 3)):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(
            tmp_path / f"{shape[0]}x{shape[1]}.png"
        )
    run = _run_isolated(
        ["-m", "identitylock.core.cli", "prep", str(tmp_path), "--out", str(tmp_path / "out"), *FAST], 120
    )
    assert run.returncode in (0, 2), (run.returncode, run.stderr[-2000:])
    assert "Traceback" not in run.stderr and (tmp_path / "out" / "prep_metadata.json").exists()


@pytest.mark.slow
def test_face_crop_prep_on_an_extreme_aspect_image_does_not_crash():
    code = (
        "import numpy as np, torch, identitylock\n"
        "from identitylock.core.errors import IdentityLockError\n"
        "node = identitylock.NODE_CLASS_MAPPINGS['FaceCropPrep']()\n"
        "for shape in ((1, 4096, 64, 3), (1, 64, 4096, 3)):\n"
        "    t = torch.from_numpy(np.random.default_rng(0).random(shape, dtype=np.float32))\n"
        "    try:\n"
        "        node.prepare(t, 128, 0.4, 'none', '#FFFFFF', 'largest', 'main only', '', '', 'dlib')\n"
        "    except IdentityLockError as exc:\n"
        "        print('refused:', exc)\n"
        "print('survived')\n"
    )
    run = _run_isolated(["-c", code], 60)
    assert run.returncode == 0 and run.stdout.strip().endswith("survived"), (
        run.returncode,
        run.stderr[-2000:],
    )


def test_the_hostile_pngs_are_refused_by_pil_itself(faces_dir):
    """Two of the hostile PNGs must stay hostile for the PIL in use, else the tests above pass vacuously."""
    pngs = hostile_pngs(_photo(faces_dir))
    for name in ("zip_bomb_text.png", "bad_text_crc.png"):
        with pytest.raises((ValueError, SyntaxError, OSError)):
            with Image.open(io.BytesIO(pngs[name])) as im:
                im.load()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"])
def test_load_image_on_mutated_files_returns_pixels_or_one_clear_error(faces_dir, tmp_path, fmt):
    """A small deterministic fuzz: flipped bytes and cut files never raise anything but ImageInputError."""
    import random

    from identitylock.core.errors import ImageInputError
    from identitylock.core.images import load_image

    buf = io.BytesIO()
    _photo(faces_dir, side=96).save(buf, fmt)
    data, rng = buf.getvalue(), random.Random(fmt)
    path = tmp_path / f"mutated.{fmt.lower()}"
    for _ in range(60):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        if rng.random() < 0.3:
            mutated = mutated[: rng.randrange(len(mutated))]
        path.write_bytes(bytes(mutated))
        try:
            img = load_image(path, check=False)
        except ImageInputError as exc:
            assert str(path) in str(exc)
        else:
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
