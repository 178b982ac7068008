"""Atomic writes: a process killed mid-write leaves the previous file (or none), never half a file.

Every result, checkpoint, cache entry, generated data set and report is written through
`atomic_path` (or `atomic_directory` for a whole folder): the content goes to a temporary
name beside the target, in the same folder so the rename cannot cross file systems, and is
renamed onto the target only once complete. It sits at the package root, importing nothing
of ours, because `data` writes files too and must not import `training`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def _temporary_name(path: Path) -> Path:
    # Hidden, unique per call, and ending in the target's suffixes: Keras picks the file
    # format from them (".keras", ".weights.h5"), matplotlib and OpenCV too (".png").
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)]
    return path.with_name(f".{stem}.{uuid.uuid4().hex[:12]}.tmp{suffix}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` when the block succeeds.

    For writers that want a file name (`model.save`, `fig.savefig`, `cv2.imwrite`). On an
    exception the temporary file is removed and `path` keeps its previous content.
    `durable` flushes the file to disk before the rename, so a power cut cannot leave an
    empty file under the final name; leave it off only where losing the file is harmless.
    """
    path = Path(path)
    tmp = _temporary_name(path)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(
    path: str | os.PathLike, write: Callable[[BinaryIO], object], durable: bool = True
) -> None:
    """Calls `write(f)` on a new binary file that replaces `path` once `write` returns."""
    with atomic_path(path, durable) as tmp, open(tmp, "xb") as f:
        write(f)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike, default=None):
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def atomic_save_model(model, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike, is_complete: Callable[[Path], bool]
) -> Iterator[Path]:
    """A new folder beside `path` to fill; it becomes `path` when the block succeeds.

    For generated data sets, so a half-built one never appears under the final name.
    `is_complete(folder)` tells a finished folder already at `path` (another process got
    there first: it is kept and this one dropped) from a leftover to replace.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            if is_complete(path):
                return
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError:  # a process that finished meanwhile renamed its folder first
            if not is_complete(path):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
