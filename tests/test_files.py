"""keras_attn.files: an interrupted write keeps the previous file and leaves nothing behind."""

import json

import pytest

from keras_attn import files
from keras_attn.training import files as training_files


class Interrupted(BaseException):
    """Stands in for a kill: not an Exception, so no `except Exception` swallows it."""


def _half_then_interrupt(f):
    f.write(b"half a fi")
    raise Interrupted


def test_interrupted_write_keeps_the_previous_file_and_no_temp_file(tmp_path):
    path = tmp_path / "summary.json"
    files.atomic_write_json(path, {"epoch": 1})
    with pytest.raises(Interrupted):
        files.atomic_write(path, _half_then_interrupt)
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_failed_first_write_leaves_no_file(tmp_path):
    def disk_full(f):
        f.write(b"a,b\n")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        files.atomic_write(tmp_path / "a.csv", disk_full, durable=False)
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_suffixes_and_replaces_on_success(tmp_path):
    path = tmp_path / "epoch_3.weights.h5"
    path.write_bytes(b"old")
    with files.atomic_path(path) as tmp:
        # Keras picks the format from the name: the temporary one must end the same way.
        assert tmp.parent == tmp_path and tmp.name.startswith(".")
        assert tmp.name.endswith(".weights.h5") and tmp != path
        tmp.write_bytes(b"new")
        assert path.read_bytes() == b"old"
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_atomic_path_interrupted_after_writing(tmp_path):
    path = tmp_path / "best.keras"
    path.write_bytes(b"old")
    with pytest.raises(Interrupted), files.atomic_path(path) as tmp:
        tmp.write_bytes(b"partial")
        raise Interrupted
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["best.keras"]


def test_text_bytes_and_json_round_trip(tmp_path):
    files.atomic_write_text(tmp_path / "r.md", "− ü\n")
    files.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    files.atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "r.md").read_text() == "− ü\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert files.read_json(tmp_path / "j.json") == {"a": [1, 2], "b": 1}
    assert files.read_json(tmp_path / "missing.json", default={}) == {}


def test_atomic_directory_publishes_only_a_finished_folder(tmp_path):
    final = tmp_path / "data" / "set"
    with pytest.raises(Interrupted), files.atomic_directory(final, lambda p: True) as tmp:
        (tmp / "part.png").write_bytes(b"x")
        raise Interrupted
    assert list((tmp_path / "data").iterdir()) == []

    final.mkdir()  # a leftover without its marker: replaced
    (final / "stale").write_text("")
    complete = lambda p: (p / "COMPLETE").exists()  # noqa: E731
    with files.atomic_directory(final, complete) as tmp:
        (tmp / "COMPLETE").write_text("ok\n")
    assert sorted(p.name for p in final.iterdir()) == ["COMPLETE"]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["set"]


def test_atomic_directory_keeps_a_folder_another_process_finished(tmp_path):
    final = tmp_path / "set"
    complete = lambda p: (p / "COMPLETE").exists()  # noqa: E731
    with files.atomic_directory(final, complete) as tmp:
        (tmp / "COMPLETE").write_text("mine\n")
        final.mkdir()  # the other process renames its folder in first
        (final / "COMPLETE").write_text("theirs\n")
    assert (final / "COMPLETE").read_text() == "theirs\n"
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_training_files_re_exports_the_same_writers():
    for name in training_files.__all__:
        assert getattr(training_files, name) is getattr(files, name)
