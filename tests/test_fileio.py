"""core/fileio: atomic, normal permissions, nothing left behind on error, confinement, collisions, escaping."""

from __future__ import annotations

import os

import pytest
from identitylock.core import fileio


def _mode(p) -> int:
    return os.stat(p).st_mode & 0o777


def test_atomic_write_gives_normal_permissions_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    fileio.write_json_atomic(target, {"x": 1})
    assert target.read_text() == '{\n "x": 1\n}\n'
    assert _mode(target) == fileio.default_file_mode()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("how", ["stream", "by-name"])
def test_an_error_keeps_the_old_file_and_removes_the_temporary(tmp_path, how):
    target = tmp_path / "keep.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        if how == "stream":
            with fileio.atomic_write(target) as fh:
                fh.write(b"half")
                raise RuntimeError("crash mid-write")
        else:

            def writer(tmp):
                open(tmp, "wb").write(b"half")
                raise RuntimeError("crash mid-write")

            fileio.atomic_write_with(target, writer)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.bin"]


def test_output_checks_fail_before_the_work(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(fileio.OutputPathError, match="existing file, not a folder"):
        fileio.check_output_dir(a_file)
    with pytest.raises(fileio.OutputPathError, match="cannot create"):
        fileio.check_output_dir(a_file / "sub")
    with pytest.raises(fileio.OutputPathError, match="already exists: pass --overwrite"):
        fileio.check_output_file(a_file)
    assert fileio.check_output_file(a_file, overwrite=True) == a_file
    with pytest.raises(fileio.OutputPathError, match="is a folder"):
        fileio.check_output_file(tmp_path)


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "a/../../b", "x\nforged row", "\x1b[31mred"])
def test_confined_names_never_leave_the_folder(tmp_path, name):
    p = fileio.confined_path(tmp_path, name)
    assert p.parent == tmp_path.resolve()
    assert "\n" not in p.name and "\x1b" not in p.name and not p.name.startswith(".")


def test_names_without_usable_characters_are_refused(tmp_path):
    with pytest.raises(fileio.OutputPathError, match="no usable characters"):
        fileio.confined_name("../..")
    with pytest.raises(fileio.OutputPathError):
        fileio.confined_name("..")


def test_unique_path_never_clobbers_and_reserves_within_a_batch(tmp_path):
    (tmp_path / "me.png").write_text("x")
    taken: set[str] = set()
    first = fileio.unique_path(tmp_path / "me.png", taken)
    second = fileio.unique_path(tmp_path / "me.png", taken)
    assert (first.name, second.name) == ("me_2.png", "me_3.png")


def test_short_stem_fits_long_names_with_suffixes():
    stem = fileio.short_stem("é" * 200)
    assert len(stem.encode()) <= fileio.MAX_NAME_BYTES and stem == "é" * (fileio.MAX_NAME_BYTES // 2)


def test_printable_escapes_control_characters():
    assert fileio.printable("a\nb\tc") == "a\\nb\\tc"
    assert fileio.printable("plain name.png") == "plain name.png"
